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
    paper = "paper (all);\nnewer rows: their\nown paper's"
    assert sorted(t.get_text() for t in legend.get_texts()) == ["all", "chance", paper, "verbatim"]
    plt.close(fig)


def test_seed_spread_draws_one_marker_per_seed_filled_for_seed_0_and_a_bar_over_the_range():
    runs = {f"seed {s}": {"seed": s, "memorized_by_kind": {"verbatim": 0.9 - 0.1 * s, "ordinary": 0.5},
                          "methods": {"std": {"auroc": 0.8 + 0.05 * s}, "wen": {"auroc": 0.7}}} for s in (0, 1, 2)}
    fig, axes = plt.subplots(1, 2)
    plotting.plot_seed_spread(axes, {"seed_spread": {"runs": runs}})
    markers = [line for line in axes[1].lines if len(line.get_xdata()) == 1]
    assert len(markers) == 6                                              # 2 methods x 3 seeds
    std = [m for m in markers if abs(m.get_xdata()[0]) < 0.5]
    assert sorted(round(m.get_ydata()[0], 2) for m in std) == [0.8, 0.85, 0.9]
    filled = [m for m in std if matplotlib.colors.to_rgba(m.get_markerfacecolor()) != (1.0, 1.0, 1.0, 1.0)]
    assert [m.get_ydata()[0] for m in filled] == [0.8]                    # seed 0 only
    bars = axes[0].collections[0].get_segments()[0]                     # verbatim: from the lowest to the highest
    assert bars[:, 1].min() == pytest.approx(0.7) and bars[:, 1].max() == pytest.approx(0.9)
    assert [t.get_text() for t in axes[1].get_xticklabels()] == ["std", "wen"]
    plt.close(fig)
