"""Table 1's machinery (`common/detectors/table1.py`) and its figure (`plotting.plot_detector_rocs`): each column is
headed by the model it ran on, the paper's numbers sit only beside the rows the paper has, a row is the metrics of
its scores, and the ROC figure keeps every curve visible (identical curves say so) with the legend off the axes."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from common import detectors, plotting  # noqa: E402
from common.detectors import metrics, table1  # noqa: E402

BY_NAME = dict(detectors.DETECTORS)


def fake_row(auroc: float, prompt_free: bool = False, label: str = "x") -> dict:
    return {"label": label, "prompt_free": prompt_free, "auroc": auroc, "auroc_ci": [auroc - 0.1, auroc],
            "tpr_at_1pct_fpr": 0.5, "tpr_at_1pct_fpr_official": 0.5, "seconds_per_sample": 0.01}


def test_column_headings_name_the_model_each_column_ran_on():
    assert table1.column_heading("laion", "cpu-testbed") == "LAION column — run on: CPU testbed"
    assert table1.column_heading("imagenet", "dit-testbed") == "ImageNet column — run on: DiT testbed"
    assert table1.column_heading("cifar10", "edm-testbed") == "CIFAR10 column — run on: EDM testbed"
    assert table1.run_on_name("my-folder") == "my-folder"                 # an unknown model: its own label


def test_paper_numbers_only_beside_the_rows_the_paper_has():
    assert table1.paper_numbers(BY_NAME["std"]) == detectors.PAPER_TABLE1["std"]["laion"]
    assert table1.paper_numbers(BY_NAME["wen"]) == detectors.PAPER_TABLE1["wen"]["laion"]
    for variant in ("wen-4x50", "nemo-ssim", "lid-cond"):
        assert table1.paper_numbers(BY_NAME[variant]) is None

    table = {name: fake_row(0.9, label=BY_NAME[name].label) for name in ("wen", "wen-4x50", "std")}
    table1.add_time_ratios(table)
    lines = table1.laion_lines(table, BY_NAME)
    paper_part = {name: line.split("|")[1] for name, line in zip(table, lines[1:])}
    assert f"{detectors.PAPER_TABLE1['wen']['laion'][0]:.3f}" in paper_part["wen"]
    assert paper_part["wen-4x50"].strip() == ""                            # blank, not the wen row's numbers

    table |= {name: fake_row(0.8, label=BY_NAME[name].label) for name in ("sharpness", "anisotropy-4")}
    lines = table1.laion_lines(table, BY_NAME)
    assert lines[4].startswith("since the paper") and len(lines) == 7      # one heading line, above the block
    assert table1.paper_numbers(BY_NAME["sharpness"]) == detectors.SINCE_PAPER["sharpness"]
    assert f"{detectors.SINCE_PAPER['anisotropy-4'][0]:.3f}" in lines[6].split("|")[1]
    assert table1.paper_numbers(BY_NAME["sharpness"], "imagenet") is None


def test_columns_side_by_side_with_their_headings_and_na_cells():
    columns = {"laion": {"std": fake_row(0.98, True), "wen": fake_row(0.9)}, "cifar10": {"std": fake_row(0.95, True)}}
    lines = table1.column_lines(columns, {"laion": "cpu-testbed", "cifar10": "edm-testbed"}, ["wen", "std"], BY_NAME)
    assert lines[0] == "LAION column — run on: CPU testbed"
    assert lines[1] == "CIFAR10 column — run on: EDM testbed"
    assert "LAION: CPU testbed" in lines[2] and "ImageNet: not run" in lines[2]
    wen_line, std_line = lines[3], lines[4]
    assert "N/A (needs a prompt)" in wen_line and "0.900 / 0.500" in wen_line
    assert "0.950 / 0.500" in std_line and "not run here" in std_line     # ImageNet was not run


def test_summarize_is_the_metrics_of_the_scores_with_the_control_beside():
    rng = np.random.default_rng(0)
    scores = {"mem": rng.normal(2, 1, 40), "gen": rng.normal(0, 1, 60), "control": rng.normal(1, 1, 20)}
    row = table1.summarize(BY_NAME["std"], scores, seconds=0.5, reused=3, n_boot=20)
    assert row["auroc"] == pytest.approx(metrics.auroc(scores["mem"], scores["gen"]))
    assert row["auroc_vs_low_dose_titles"] == pytest.approx(metrics.auroc(scores["mem"], scores["control"]))
    assert (row["n_mem"], row["n_gen"], row["n_control"], row["scores_read_from_cache"]) == (40, 60, 20, 3)
    assert row["prompt_free"] and row["label"] == BY_NAME["std"].label

    cliques = {"mem": np.array([10.0, 12, 1]), "gen": np.array([1.0, 2, 1])}
    carlini_row = table1.summarize(BY_NAME["carlini"], cliques, seconds=1.0, reused=0, n_boot=5)
    assert carlini_row["verdict_fraction_mem"] == pytest.approx(2 / 3) and carlini_row["verdict_fraction_gen"] == 0


def test_control_rows_keep_the_titles_trained_the_given_number_of_times():
    rows = [{"index": i} for i in range(6)]
    kept = table1.control_rows(rows, np.array([1, 1, 2, 2, 5, 10]), (1, 2))
    assert [r["index"] for r in kept] == [0, 1, 2, 3]


def test_roc_figure_keeps_coinciding_curves_visible_and_the_legend_outside():
    perfect = (np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0]))
    curves = {"carlini": perfect, "nemo": tuple(a.copy() for a in perfect),
              "wen": (np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.7, 1.0])), "std": perfect}
    labels = {n: BY_NAME[n].label for n in curves}
    fig, ax = plt.subplots(figsize=(10, 5))
    same = plotting.plot_detector_rocs(ax, curves, labels, {n: BY_NAME[n].prompt_free for n in curves})
    assert same == {"nemo": "carlini", "std": "carlini"}
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[0] == labels["carlini"] and "same curve as Carlini et al." in texts[1]   # the table's order
    fig.canvas.draw()
    legend_box, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend_box.x0 >= axes_box.x1                                  # right of the axes, not on the curves
    lines = [line for line in ax.get_lines() if line.get_linestyle() != ":"]
    assert lines[0].get_linewidth() == max(line.get_linewidth() for line in lines)   # the widest drawn first
    plt.close(fig)


def test_no_detector_colour_is_near_the_std_detectors():
    std = np.array(to_rgb(plotting.DETECTOR_STYLES["std"]["color"]))
    assert plotting.DETECTOR_STYLES["std"]["color"] == plotting.MEM_COLOR
    for name, style in plotting.DETECTOR_STYLES.items():
        if name != "std":
            assert np.abs(np.array(to_rgb(style["color"])) - std).sum() > 0.6, name
            assert style["color"] != plotting.GEN_COLOR
    assert set(plotting.DETECTOR_STYLES) == set(detectors.TABLE_ROWS)


def test_image_rows_draw_each_image_with_its_title_and_a_block_label():
    fig = plt.figure(figsize=(6, 4))
    images = [np.zeros((3, 4, 4)) - 1, np.ones((4, 4, 3))]               # [3, H, W] in [-1, 1] and [H, W, 3]
    axes = plotting.image_rows(fig, [images, images], [["a", "b"], ["c", "d"]], label="block")
    assert axes.shape == (2, 2) and axes[1, 0].get_title() == "c"
    assert fig._suptitle.get_text() == "block"
    np.testing.assert_array_equal(plotting.as_display_image(images[0]), np.zeros((4, 4, 3)))
    assert plotting.as_display_image(images[1]).shape == (4, 4, 3)
    np.testing.assert_allclose(plotting.as_display_image(np.full((4, 4, 3), 255, np.uint8)), 1.0)   # uint8
    plt.close(fig)


def test_curves_coincide_as_step_functions_whatever_their_threshold_count():
    a = (np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0]))
    b = (np.array([0.0, 0.0, 0.0, 0.5, 1.0]), np.array([0.0, 0.5, 1.0, 1.0, 1.0]))   # same curve, more points
    c = (np.array([0.0, 0.1, 1.0]), np.array([0.0, 1.0, 1.0]))
    assert plotting.coinciding_curves({"a": a, "b": b, "c": c}) == {"b": "a"}


def test_by_kind_scores_each_kind_and_the_pool_against_the_same_negatives():
    """Hand-worked AUROCs: kind a above every negative (1), kind b below (0), both pooled: 4 of 6 pairs won."""
    neg = np.array([1.0, 2.0])
    rows = table1.summarize_by_kind({"a": np.array([3.0, 4.0]), "b": np.array([0.5]), "c": np.array([])}, neg,
                                    n_boot=50)
    assert rows["a"]["auroc"] == 1.0 and rows["b"]["auroc"] == 0.0
    assert rows["all"]["auroc"] == pytest.approx(4 / 6) and rows["all"]["n_pos"] == 3
    assert rows["c"] == {"auroc": None, "auroc_ci": None, "tpr_at_1pct_fpr": None, "n_pos": 0}
    assert rows["a"]["tpr_at_1pct_fpr"] == 1.0 and rows["b"]["tpr_at_1pct_fpr"] == 0.0


def test_the_claim_holds_when_std_reaches_the_best_prompt_based_methods_ci():
    def row(auroc, low):
        return {"k": {"auroc": auroc, "auroc_ci": [low, 1.0], "tpr_at_1pct_fpr": 0.5, "n_pos": 9}}
    by_kind = {"std": row(0.90, 0.80), "wen": row(0.95, 0.88), "nemo": row(0.70, 0.60), "lid": row(0.99, 0.97)}
    free = {"std": True, "wen": False, "nemo": False, "lid": True}
    verdict = table1.matches_the_best_prompt_based(by_kind, free, "k")
    assert verdict["best_prompt_based"] == "wen" and verdict["matches"] is True     # lid is prompt-free
    by_kind["std"] = row(0.87, 0.80)
    assert table1.matches_the_best_prompt_based(by_kind, free, "k")["matches"] is False
    by_kind["std"]["k"]["auroc"] = None
    assert table1.matches_the_best_prompt_based(by_kind, free, "k") is None


def test_by_kind_lines_put_the_papers_auroc_beside_all_and_claim_lines_say_the_verdict():
    def kinds_row(auroc, low):
        return {k: {"auroc": auroc, "auroc_ci": [low, 1.0], "tpr_at_1pct_fpr": 0.5, "n_pos": 7}
                for k in ("verbatim", "all")}
    table = {"wen": {"prompt_free": False, "by_kind": kinds_row(0.95, 0.90)},
             "std": {"prompt_free": True, "by_kind": kinds_row(0.91, 0.85)}}
    table["wen"]["by_kind"]["verbatim"] = {"auroc": None, "auroc_ci": None, "tpr_at_1pct_fpr": None, "n_pos": 0}
    by_name = {n: detectors.get(n) for n in table}
    lines = table1.by_kind_lines(table, by_name, ["verbatim", "all"])
    assert lines[1].startswith("wen") and "—" in lines[1] and lines[1].endswith(f"{0.986:8.3f}")
    assert "0.910 [0.85, 1.00] 0.50" in lines[2] and lines[2].endswith(f"{0.987:8.3f}")
    claim = table1.claim_by_kind(table, ["verbatim", "all"])
    assert claim["verbatim"] is None and claim["all"]["matches"] is True
    assert table1.claim_lines(claim) == [
        "all: std 0.910 vs the best prompt-based method, wen 0.950 (CI from 0.900): matches"]
    table["anisotropy"] = {"prompt_free": False, "by_kind": kinds_row(0.99, 0.97)}   # a row since the paper
    assert table1.claim_by_kind(table, ["all"])["all"]["best_prompt_based"] == "wen"  # the claim is the paper's


def test_by_kind_adds_a_column_without_the_negatives_that_copy():
    positives = {"verbatim": np.array([0.9]), "template": np.array([0.8])}
    negatives = np.array([0.1, 0.95, 0.2])                    # the second held-out generation copies after all
    rows = table1.summarize_by_kind(positives, negatives, n_boot=20, negatives_copy=np.array([False, True, False]))
    assert rows["all"]["auroc"] == pytest.approx(4 / 6) and rows["all"]["n_neg"] == 3      # counted by hand
    assert rows[table1.NONCOPYING]["auroc"] == 1.0 and rows[table1.NONCOPYING]["n_neg"] == 2
    assert rows[table1.NONCOPYING]["n_pos"] == 2
    none_copy = table1.summarize_by_kind(positives, negatives, n_boot=20, negatives_copy=np.zeros(3, dtype=bool))
    assert table1.NONCOPYING not in none_copy
