"""The machinery of the SD notebooks' figures and measures: the steering trajectory's PCA, the steerability
ratios per measure and per α, a testbed's training record, the titles' model names, and the figure helpers
(α grids with the official grid beside the extension, AUROC tables, curves, labelled paths) on hand-made data."""
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from common import families, plotting  # noqa: E402
from common.steering import steerability as st  # noqa: E402
from common.testbeds.training import INFO_NAME  # noqa: E402


def test_trajectory_pca_finds_the_axis_of_largest_spread_and_projects_new_points():
    rng = np.random.default_rng(0)
    pos = np.c_[rng.normal(5, 0.1, 20), rng.normal(0, 0.1, 20), np.zeros(20)]      # [20, 3]
    neg = np.c_[rng.normal(-5, 0.1, 20), rng.normal(0, 0.1, 20), np.zeros(20)]
    path = np.c_[np.linspace(-5, 5, 5), np.zeros(5), np.zeros(5)]
    pca = st.TrajectoryPCA.fit(pos, neg, path)
    assert abs(pca.components[0] @ [1, 0, 0]) == pytest.approx(1, abs=1e-3)      # PC1 = the x axis
    assert pca.explained[0] > 0.99 and pca.explained.sum() <= 1 + 1e-12
    moved = pca.project([[1.0, 0, 0], [0.0, 0, 0]])                                 # [2, 2]
    assert abs(moved[0, 0] - moved[1, 0]) == pytest.approx(1, abs=1e-3)           # 1 along x: 1 on PC1


def test_steerability_ratios_per_measure_and_per_alpha():
    alphas = [0.0, 0.5, 2.0]
    def group(scale):
        change = np.array([[0.0, 0.0], [0.1, 0.3], [0.4, 0.4]]) * scale          # [A, M]
        return st.GroupMeasures(alphas, ["a", "b"], change, change * 2, change * 3, np.zeros((3, 2, 4)))
    gen, mem = group(1.0), group(0.25)
    ratios = st.steerability_ratios(mem, gen, 0.5)
    assert ratios == pytest.approx({"pixel": 0.25, "latent": 0.25, "projection": 0.25})
    assert st.pixel_ratio_by_alpha(mem, gen) == pytest.approx({0.5: 0.25, 2.0: 0.25})


def test_training_record_is_the_folders_testbed_json_and_none_elsewhere(tmp_path):
    (tmp_path / INFO_NAME).write_text(json.dumps({"train_seconds": 12.5, "torch_threads": 2}))
    assert families.training_record(tmp_path)["train_seconds"] == 12.5
    assert families.training_record("tiny") is None
    assert families.training_record(tmp_path / "missing") is None


def test_model_names_in_titles():
    assert plotting.model_name("cpu-testbed") == "CPU testbed"
    assert plotting.model_name("CompVis/stable-diffusion-v1-4") == "SD v1.4"
    assert plotting.model_name("my-folder") == "my-folder"


@pytest.fixture
def pngs(tmp_path):
    paths = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_alpha_grid_puts_the_official_block_beside_the_extension_without_overlap(pngs):
    fig, axes = plotting.plot_alpha_grid({"Gen": pngs, "Mem": pngs}, [0, 0.5, 2, 4], (0, 0.5),
                                         footers=["", "0.3", "1.0", "1.1"], title="t")
    assert axes.shape == (2, 4)
    boxes = [ax.get_position() for ax in axes.ravel()]
    for i, a in enumerate(boxes):                       # no two image axes overlap
        for b in boxes[i + 1:]:
            assert a.x1 <= b.x0 + 1e-9 or b.x1 <= a.x0 + 1e-9 or a.y1 <= b.y0 + 1e-9 or b.y1 <= a.y0 + 1e-9
    gap = lambda left, right: axes[0, right].get_position().x0 - axes[0, left].get_position().x1
    assert gap(1, 2) > 2 * gap(0, 1)                    # the official grid ends, the extension starts
    heads = [t.get_text() for t in fig.texts]
    assert "official grid" in heads and "extended grid" in heads
    assert [ax.get_title() for ax in axes[0]] == ["α=0", "α=0.5", "α=2", "α=4"]
    assert axes[1, 0].get_title() == "" and axes[1, 2].get_xlabel() == "1.0"
    plt.close(fig)
    fig, axes = plotting.plot_alpha_grid({"Gen": pngs[:2]}, [0, 0.5], (0, 0.5))   # the official grid only
    assert [t.get_text() for t in fig.texts] == []
    plt.close(fig)


def test_auroc_grid_writes_every_cell_readably():
    fig, ax = plt.subplots()
    plotting.plot_auroc_grid(ax, [[0.99, 0.5], [0.02, 0.7]], ["a", "b"], ["t=1", "t=2"], "AUROC")
    texts = {t.get_text(): t.get_color() for t in ax.texts}
    assert texts == {"0.990": "white", "0.500": "black", "0.020": "white", "0.700": "black"}
    plt.close(fig)


def test_steerability_curves_tick_the_swept_alphas_and_mark_the_official_end():
    fig, axes = plt.subplots(1, 2)
    alphas = [0, 0.2, 0.5, 1, 4]
    curves = {"Gen": [np.ones((5, 3)), np.ones((5, 3))], "Mem": [np.zeros((5, 3)), np.zeros((5, 3))]}
    plotting.plot_steerability_curves(axes, curves, alphas, ["pixel", "latent"], official_max=0.5)
    assert list(axes[0].get_xticks()) == alphas
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["0", "0.2", "0.5", "1", "4"]
    assert any(list(line.get_xdata()) == [0.5, 0.5] for line in axes[0].lines)
    plt.close(fig)


def test_crowded_path_points_are_not_all_labelled():
    fig, ax = plt.subplots()
    ax.set_xlim(0, 10), ax.set_ylim(0, 10)
    points = np.array([[1, 1], [1.05, 1.0], [1.1, 1.0], [5, 5], [9, 9]])
    done = plotting.label_separated_points(ax, points, ["0", "a", "b", "c", "4"], "black")
    assert done == [0, 3, 4]                            # the two crowding the first point stay unlabelled
    plt.close(fig)
