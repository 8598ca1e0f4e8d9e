"""Layout helpers of `common.plotting`: a legend moved off the data keeps its entries, log-axis ticks read as the
plotted values."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from common import plotting  # noqa: E402


def test_legend_outside_keeps_entries_and_title_and_sits_beyond_the_axes():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="Mem")
    ax.plot([0, 1], [1, 0], label="Gen")
    ax.legend(title="AUROC", loc="upper right")
    legend = plotting.legend_outside(ax)
    assert [t.get_text() for t in legend.get_texts()] == ["Mem", "Gen"]
    assert legend.get_title().get_text() == "AUROC"
    fig.canvas.draw()
    box, axes_box = legend.get_window_extent(), ax.get_window_extent()
    assert box.x0 >= axes_box.x1                                        # entirely right of the axes
    top = plotting.legend_outside(ax, side="top")
    fig.canvas.draw()
    assert top.get_window_extent().y0 >= axes_box.y1 - 1                # entirely above the axes
    with pytest.raises(ValueError, match="side"):
        plotting.legend_outside(ax, side="inside")
    plt.close(fig)


def test_legend_outside_of_score_densities_keeps_their_patches():
    fig, ax = plt.subplots()
    rng = np.random.default_rng(0)
    plotting.plot_score_densities(ax, {"Mem": rng.normal(2, 0.3, 50), "Gen": rng.normal(0.5, 0.2, 50)})
    legend = plotting.legend_outside(ax)
    assert [t.get_text() for t in legend.get_texts()] == ["Mem", "Gen"]
    plt.close(fig)


def test_set_plain_ticks_labels_a_log_axis_with_the_values():
    fig, ax = plt.subplots()
    ax.plot([0.1, 10], [1, 2])
    ax.set_xscale("log")
    plotting.set_plain_ticks(ax, [0.2, 0.8, 2, 5])
    fig.canvas.draw()
    assert list(ax.get_xticks()) == [0.2, 0.8, 2, 5]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.2", "0.8", "2", "5"]
    assert not any(t.get_text() for t in ax.xaxis.get_minorticklabels())
    plt.close(fig)


def test_auroc_by_kind_draws_one_bar_per_method_and_kind_with_the_papers_diamond_on_all():
    def row(a):
        return {"auroc": a, "auroc_ci": [a - 0.05, a + 0.02] if a is not None else None}
    by_kind = {"wen": {"verbatim": row(0.9), "all": row(0.8)}, "std": {"verbatim": row(None), "all": row(0.7)}}
    fig, ax = plt.subplots()
    plotting.plot_auroc_by_kind(ax, by_kind, ["verbatim", "all"], {"wen": (0.986, 0.9, 0.1), "std": None})
    heights = [p.get_height() for p in ax.patches]
    assert len(heights) == 4 and heights[0] == 0.9 and np.isnan(heights[1]) and heights[2:] == [0.8, 0.7]
    diamond = [line for line in ax.lines if line.get_marker() == "D"]
    assert len(diamond) == 1 and diamond[0].get_ydata().tolist() == [0.986]
    assert diamond[0].get_xdata()[0] == ax.patches[2].get_x() + ax.patches[2].get_width() / 2
    legend = ax.get_legend()
    assert sorted(t.get_text() for t in legend.get_texts()) == ["all", "chance", "paper (all)", "verbatim"]
    plt.close(fig)
