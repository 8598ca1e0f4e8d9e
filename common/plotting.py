"""The paper's figure style (official `Figs/`): Mem in royalblue, Gen in crimson, large sans fonts, 300 dpi.

Figures are saved atomically to `Figs/<name>.png`; notebooks pass `figs_dir` so a smoke run can write
elsewhere. The environment variable ``DGR_FIG_DPI`` lowers the resolution where only the code path matters: the
SMOKE runs of the tests and of `make smoke` save at 100 dpi (a large figure: 0.5 s instead of 1.7 s at 300).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .plumbing.paths import FIGS_DIR
from .plumbing.results import atomic_path
from .theory.data import to_image
from .theory.stats import rep_std

MEM_COLOR = "royalblue"
GEN_COLOR = "crimson"
DPI = int(os.environ.get("DGR_FIG_DPI", 300))

PAPER_RC = {
    "font.size": 16,
    "axes.titlesize": 20,
    "axes.labelsize": 18,
    "legend.fontsize": 16,
    "xtick.labelsize": 14,
    "ytick.labelsize": 14,
    "axes.grid": False,
    "savefig.bbox": "tight",
}


def file_tag(label: str) -> str:
    """A data source or model label as a file-name part: "lfw-standin" -> "lfw_standin", "cpu-testbed" ->
    "cpu_testbed", so every figure's file name says which data and model it shows."""
    return re.sub(r"[^a-z0-9]+", "_", str(label).lower()).strip("_")


def use_paper_style() -> None:
    plt.rcParams.update(PAPER_RC)


def save_figure(fig: plt.Figure, name: str, figs_dir: str | Path = FIGS_DIR, dpi: int = DPI) -> Path:
    """Save `fig` as `<figs_dir>/<name>.png` atomically; returns the path."""
    path = Path(figs_dir) / f"{name}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def show_images(axes, images, titles=None, cmap: str = "gray", normalize: str = "data") -> None:
    """Draw flat 32x32 images (one per axis), without ticks.

    normalize="data": values in [-1, 1] shown on a fixed scale; "each": each image min-max scaled (for
    weight vectors, whose scale is arbitrary).
    """
    titles = titles if titles is not None else [None] * len(images)
    for ax, img, title in zip(np.ravel(axes), images, titles):
        if normalize == "each":
            side = int(np.sqrt(img.size))
            ax.imshow(np.asarray(img).reshape(side, side), cmap=cmap)
        else:
            ax.imshow(to_image(img), cmap=cmap, vmin=0.0, vmax=1.0)
        ax.set_xticks([]), ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if title:
            ax.set_title(title, fontsize=14)


def plot_representations(ax, reps: dict, colors: dict | None = None, offset: float = 0.12) -> None:
    """Fig 5 style: each representation h [p] as vertical lines, side by side, std (population) in the legend."""
    colors = colors or {"Mem": MEM_COLOR, "Gen": GEN_COLOR}
    shifts = np.linspace(-offset, offset, len(reps)) if len(reps) > 1 else [0.0]
    for shift, (label, h) in zip(shifts, reps.items()):
        h = np.asarray(h, dtype=np.float64)
        ax.vlines(np.arange(len(h)) + shift, 0, h, color=colors.get(label), linewidth=2.5,
                  label=f"{label} (std: {rep_std(h):.4f})")
    ax.set_xlabel("Latent Dimension")
    ax.set_ylabel("Activation")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, loc="upper right")


# ----------------------------------------------------------------------------------------------------
# Stable Diffusion figures (Fig 5 right, Fig 7): the official SD notebook's size and larger fonts
# ----------------------------------------------------------------------------------------------------
SD_FIGSIZE = (10.8, 5.2)
SD_RC = {"axes.titlesize": 28, "axes.labelsize": 24, "xtick.labelsize": 20, "ytick.labelsize": 20,
         "legend.fontsize": 24}


def plot_representation_lines(ax, reps: dict, colors: dict | None = None) -> None:
    """Fig 5 (right) style: each pooled representation h [p] as a line over its dimensions, std in the legend."""
    colors = colors or {"Mem": MEM_COLOR, "Gen": GEN_COLOR}
    for label, h in reps.items():
        h = np.asarray(h, dtype=np.float64)
        ax.plot(np.arange(len(h)), h, color=colors.get(label), linewidth=1.8, alpha=0.9,
                label=f"{label} (std={rep_std(h):.3f})")
    ax.set_xlabel("Latent dimension")
    ax.set_ylabel("Activation")
    ax.grid(True, alpha=0.25)
    ax.legend(loc="upper right", frameon=True)


MODEL_NAMES = {"cpu-testbed": "CPU testbed", "edm-testbed": "EDM testbed", "dit-testbed": "DiT testbed",
               "CompVis/stable-diffusion-v1-4": "SD v1.4", "tiny": "tiny random SD"}


def model_name(label: str) -> str:
    """A model label (`families.model_label`: "cpu-testbed", a hub id, a folder's name) as a title says it:
    "CPU testbed", "SD v1.4", ...; any other label as it is."""
    return MODEL_NAMES.get(str(label), str(label))


def plot_auroc_grid(ax, grid: np.ndarray, row_labels, col_labels, title: str) -> None:
    """A [rows, cols] table of AUROCs as a heatmap on the fixed scale 0-1 (0.5 = chance, white), each cell
    printed, in white on the dark cells (far from 0.5) and in black on the light ones."""
    grid = np.asarray(grid, dtype=np.float64)
    ax.imshow(grid, vmin=0, vmax=1, cmap="RdBu_r", aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=14,
                color="white" if abs(value - 0.5) > 0.3 else "black")
    ax.set_xticks(range(len(col_labels)), list(col_labels))
    ax.set_yticks(range(len(row_labels)), list(row_labels))
    ax.set_title(title)


def plot_alpha_grid(rows: dict, alphas, official_alphas, footers: list[str] | None = None,
                    title: str | None = None, panel: float = 2.2, fontsize: float = 14):
    """The α sweeps of Fig 7 as image rows on a new figure: rows {row label: one image path per α}, one
    column per α of `alphas`. Where `alphas` goes beyond the official grid, the official α and the
    extension are two blocks side by side, each headed by what it is, so the official panels sit beside the
    α at which the edit shows. `footers`: one text per α under the last row. Every element has its own
    place (inches, no automatic layout), so titles, labels and footers never cover an image.
    Returns (figure, image axes [len(rows), len(alphas)])."""
    alphas = list(alphas)
    n_official = sum(a in set(official_alphas) for a in alphas)
    split = n_official if 0 < n_official < len(alphas) else None     # official first, then the rest
    col_gap, block_gap, row_gap, left = 0.12 * panel, 0.45 * panel, 0.15, 0.45
    line = fontsize / 72 * 1.6                                          # one text line, inches
    top = line * (1 + (split is not None) + (title is not None))       # α titles, block heads, title
    bottom = line if footers is not None else 0.1
    x = [left + i * (panel + col_gap) + (block_gap if split is not None and i >= split else 0)
         for i in range(len(alphas))]                                   # left edge of each column
    width, height = x[-1] + panel + 0.1, top + len(rows) * panel + (len(rows) - 1) * row_gap + bottom
    fig = plt.figure(figsize=(width, height))
    axes = np.empty((len(rows), len(alphas)), dtype=object)
    for r, (label, paths) in enumerate(rows.items()):
        y = height - top - (r + 1) * panel - r * row_gap                # bottom edge of row r
        for c, path in enumerate(paths):
            ax = axes[r, c] = fig.add_axes((x[c] / width, y / height, panel / width, panel / height))
            ax.imshow(plt.imread(path))
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"α={alphas[c]:g}", fontsize=fontsize)
            if footers is not None and r == len(rows) - 1:
                ax.set_xlabel(footers[c], fontsize=fontsize - 2)
        axes[r, 0].set_ylabel(label, fontsize=fontsize)
    if split is not None:
        y_head = (height - line * (1 + (title is not None))) / height
        for head, cols in (("official grid", range(split)), ("extended grid", range(split, len(alphas)))):
            center = (x[cols[0]] + x[cols[-1]] + panel) / 2 / width
            fig.text(center, y_head, head, ha="center", va="bottom", fontsize=fontsize,
                     fontweight="bold")
    if title is not None:
        fig.text(0.5, (height - line) / height, title, ha="center", va="bottom", fontsize=fontsize + 1)
    return fig, axes


def plot_steerability_curves(axes, curves: dict, alphas, titles, official_max: float | None = None,
                             colors: dict | None = None) -> None:
    """Fig 7, measured: on each axis one measure's change against α, a thin line per image and the group mean
    (markers). curves {group label: [one array [len(alphas), M] per axis]}. α on a symlog axis (linear up to
    1, stretched so the official grid's ticks stay apart) with ticks at the swept values; a dotted line at
    `official_max` marks the end of the official grid."""
    colors = colors or {"Gen": GEN_COLOR, "Mem": MEM_COLOR}
    alphas = np.asarray(alphas, dtype=np.float64)
    for i, (ax, title) in enumerate(zip(axes, titles)):
        for label, per_axis in curves.items():
            values = np.asarray(per_axis[i], dtype=np.float64)                       # [A, M]
            ax.plot(alphas, values, color=colors.get(label), alpha=0.15, linewidth=1)
            ax.plot(alphas, values.mean(axis=1), color=colors.get(label), linewidth=3, marker="o",
                    label=f"{label} ({values.shape[1]} images)")
        ax.set_xscale("symlog", linthresh=1.0, linscale=4.0)
        set_plain_ticks(ax, alphas)
        ax.tick_params(axis="x", labelsize=12)
        if official_max is not None and official_max < alphas.max():
            ax.axvline(official_max, color="black", linestyle=":", linewidth=1.2)
        ax.set_xlabel("α")
        ax.set_title(title, fontsize=16)
        ax.grid(alpha=0.3)


def label_separated_points(ax, points: np.ndarray, labels, color: str, min_distance: float = 0.1,
                           fontsize: float = 11) -> list[int]:
    """Write labels[i] beside points[i] ([n, 2] data coordinates) for the points at least `min_distance` (a
    fraction of the axes' width/height) from every point labelled before, first and last first; returns the
    indices labelled. Crowded points stay unlabelled instead of writing over each other."""
    points = np.asarray(points, dtype=np.float64)
    span = np.array([np.ptp(ax.get_xlim()), np.ptp(ax.get_ylim())])
    order = [0, len(points) - 1, *range(1, len(points) - 1)] if len(points) > 1 else [0]
    done: list[int] = []
    for i in order:
        if all(np.hypot(*((points[i] - points[j]) / span)) >= min_distance for j in done):
            done.append(i)
            ax.annotate(labels[i], points[i], textcoords="offset points", xytext=(5, 5), fontsize=fontsize,
                        color=color, zorder=5, fontweight="bold")   # drawn over the markers
    return sorted(done)


def plot_rep_trajectory(ax, references: dict, paths: dict, alphas, colors: dict | None = None) -> None:
    """The steering trajectory on PC1/PC2: reference sets as points ({label: [n, 2]}), steered paths as lines
    through their α ({label: [len(alphas), 2]}), α written beside the path points that have room. The references
    take neither the Mem nor the Gen colour (those are the steered paths')."""
    colors = {"ref (+)": "darkorange", "ref (-)": "teal", "steered Gen": GEN_COLOR, "steered Mem": MEM_COLOR,
              **(colors or {})}
    for label, pcs in references.items():
        ax.scatter(*np.asarray(pcs).T, s=14, color=colors.get(label), label=label)
    for i, (label, pcs) in enumerate(paths.items()):
        ax.plot(*np.asarray(pcs).T, color=colors.get(label), linewidth=2.5 - 0.5 * i, marker="os"[i % 2],
                markersize=6, linestyle="-" if i == 0 else "--", label=label)
    ax.margins(0.08)
    for label, pcs in paths.items():
        label_separated_points(ax, pcs, [f"{a:g}" for a in alphas], colors.get(label))
    ax.grid(alpha=0.3)


def plot_score_densities(ax, scores: dict, colors: dict | None = None, alpha: float = 0.7) -> None:
    """Fig 5 (right) separation style (official notebook): filled KDEs of each set's scores, normalised per set (seaborn,
    `common_norm=False`, `cut=0`); x range = the pooled 1-99% quantiles padded by 6%."""
    import seaborn as sns
    from matplotlib.patches import Patch

    colors = colors or {"Mem": MEM_COLOR, "Gen": GEN_COLOR}
    for label, values in scores.items():
        values = np.asarray(values, dtype=np.float64)
        if np.ptp(values) > 0:                       # a KDE needs spread; a constant set is left out
            sns.kdeplot(x=values, fill=True, alpha=alpha, color=colors.get(label), linewidth=1.8, cut=0, ax=ax)
    pooled = np.concatenate([np.asarray(v, dtype=np.float64) for v in scores.values()])
    lo, hi = np.quantile(pooled, [0.01, 0.99])
    if hi > lo:
        ax.set_xlim(lo - 0.06 * (hi - lo), hi + 0.06 * (hi - lo))
    ax.set_xlabel("Activation std")
    ax.set_ylabel("Density")
    ax.grid(True, alpha=0.25)
    ax.legend(handles=[Patch(facecolor=colors.get(k), edgecolor=colors.get(k), alpha=alpha, label=k) for k in scores],
              loc="upper right", frameon=True)


# ----------------------------------------------------------------------------------------------------
# Layout helpers: legends off the data, ticks at the plotted values
# ----------------------------------------------------------------------------------------------------
def legend_outside(ax, side: str = "right", **kwargs):
    """Redraw `ax`'s legend (same handles and labels) outside the axes, so it hides no data: "right" (beside
    the axes, top-aligned) or "top" (above, in one row). Returns the new legend."""
    legend = ax.get_legend()
    if legend is None:
        handles, labels = ax.get_legend_handles_labels()
        title = None
    else:
        handles, labels = legend.legend_handles, [t.get_text() for t in legend.get_texts()]
        title = legend.get_title().get_text() or None
    if side == "right":
        place = dict(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    elif side == "top":
        place = dict(loc="lower center", bbox_to_anchor=(0.5, 1.01), ncol=len(handles), borderaxespad=0.0)
    else:
        raise ValueError(f"side must be 'right' or 'top', not {side!r}")
    return ax.legend(handles, labels, title=title, **{"frameon": False, **place, **kwargs})


def set_plain_ticks(ax, values, axis: str = "x", fmt: str = "{:g}") -> None:
    """Ticks at `values` on a (log) axis, labelled plainly ("0.2", "1", "5"), minor labels off: no "2×10⁻¹"
    labels running into each other."""
    from matplotlib.ticker import NullFormatter, NullLocator

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_ticks(list(values), labels=[fmt.format(v) for v in values])
    target.set_minor_locator(NullLocator())
    target.set_minor_formatter(NullFormatter())


# ----------------------------------------------------------------------------------------------------
# Table 1: ROC curves of every detector (Table1_detection.ipynb)
# ----------------------------------------------------------------------------------------------------
# One colour, marker and width per detector. The std detector keeps royalblue (its colour in every figure); no
# other detector is blue or red (crimson is the generalized set's). Prompt-based methods are dashed. Wider lines
# are drawn first, so a curve that coincides with another still shows around it.
DETECTOR_STYLES = {
    "carlini": dict(color="black", marker="o", linewidth=5.0, alpha=0.55),
    "wen": dict(color="darkorange", marker="D", linewidth=2.0),
    "wen-4x50": dict(color="goldenrod", marker="v", linewidth=2.0),
    "nemo": dict(color="forestgreen", marker="s", linewidth=3.2),
    "nemo-ssim": dict(color="darkmagenta", marker="^", linewidth=1.8),
    "lid": dict(color="saddlebrown", marker="x", linewidth=2.0),
    "lid-cond": dict(color="gray", marker="P", linewidth=2.0),
    "std": dict(color=MEM_COLOR, marker=None, linewidth=3.0),
    "sharpness": dict(color="teal", marker="*", linewidth=2.0),
    "sharpness-4": dict(color="olive", marker="h", linewidth=1.8),
    "anisotropy": dict(color="deeppink", marker="<", linewidth=2.0),
    "anisotropy-4": dict(color="plum", marker=">", linewidth=1.8),
}


def _roc_step(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The ROC curve as a step function: the highest TPR reached at an FPR ≤ each grid value."""
    order = np.argsort(fpr, kind="stable")
    best = np.maximum.accumulate(np.asarray(tpr, dtype=np.float64)[order])
    at = np.searchsorted(np.asarray(fpr, dtype=np.float64)[order], grid, side="right") - 1
    return np.where(at >= 0, best[np.clip(at, 0, None)], 0.0)


def coinciding_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, str]:
    """{name: the earlier name whose ROC curve is the same} for each curve that repeats an earlier one (the same
    step function, however many thresholds each has)."""
    grid = np.unique(np.concatenate([np.asarray(fpr, dtype=np.float64) for fpr, _ in curves.values()]))
    steps = {name: _roc_step(fpr, tpr, grid) for name, (fpr, tpr) in curves.items()}
    same = {}
    for i, name in enumerate(curves):
        for other in list(curves)[:i]:
            if other not in same and np.allclose(steps[name], steps[other]):
                same[name] = other
                break
    return same


def plot_detector_rocs(ax, curves: dict[str, tuple[np.ndarray, np.ndarray]], labels: dict[str, str],
                       prompt_free: dict[str, bool], max_fpr: float = 0.01) -> dict[str, str]:
    """Table 1's ROC curves (FPR, TPR) of every detector on one axis, FPR on a symlog axis (linear below `max_fpr`,
    marked by a dotted line) and the legend outside the axes on the right. A curve identical to an earlier one
    says so in its legend entry. Returns `coinciding_curves(curves)`."""
    same = coinciding_curves(curves)
    order = sorted(curves, key=lambda n: -DETECTOR_STYLES.get(n, {}).get("linewidth", 2.0))    # wide ones first
    lines = {}
    for name in order:
        fpr, tpr = curves[name]
        style = {"color": "dimgray", "marker": ".", "linewidth": 2.0, **DETECTOR_STYLES.get(name, {})}
        (lines[name],) = ax.plot(fpr, tpr, linestyle="-" if prompt_free[name] else "--", markevery=0.08,
                                 markersize=7, zorder=3 if name == "std" else 2, **style)
    ax.axvline(max_fpr, color="black", linestyle=":", linewidth=1.2)
    ax.set_xscale("symlog", linthresh=max_fpr)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("False positive rate (Gen flagged)")
    ax.set_ylabel("True positive rate (Mem flagged)")
    ax.grid(alpha=0.3)
    texts = [labels[n] + (f"\n(same curve as {labels[same[n]].split(',')[0]})" if n in same else "") for n in curves]
    ax.legend([lines[n] for n in curves], texts, title="AUROC / TPR@1%FPR (dashed: needs the prompt)",
              loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=11, title_fontsize=11, frameon=True)
    return same


# ----------------------------------------------------------------------------------------------------
# The CPU testbed's image grids (CPU_testbed.ipynb)
# ----------------------------------------------------------------------------------------------------
KIND_COLORS = {"verbatim": "#4c72b0", "template": "#dd8452", "ordinary": "#55a868", "all": "0.35",
               "all_vs_noncopying": "0.7"}
KIND_LABELS = {"all_vs_noncopying": "all, vs held-out\ngenerations that\ncopy nothing"}


def plot_auroc_by_kind(ax, by_kind: dict[str, dict], kinds, paper: dict | None = None) -> None:
    """Grouped bars: per method (x), one bar per kind (its AUROC, the bootstrap CI as an error bar; a kind without
    positives is left out), and the paper's AUROC (a row since the paper: its own paper's) as a black diamond on the
    "all" bar; chance dashed; legend
    outside. by_kind: {method: {kind: {"auroc", "auroc_ci", ...}}}; paper: {method: (auroc, ...) or None}."""
    methods, width = list(by_kind), 0.8 / len(kinds)
    for k, kind in enumerate(kinds):
        x = np.arange(len(methods)) + (k - (len(kinds) - 1) / 2) * width
        rows = [by_kind[m][kind] for m in methods]
        have = [r["auroc"] is not None for r in rows]
        auroc = np.array([r["auroc"] if ok else np.nan for r, ok in zip(rows, have)])
        ci = np.array([r["auroc_ci"] if ok else (np.nan, np.nan) for r, ok in zip(rows, have)])   # [M, 2]
        ax.bar(x, auroc, width, color=KIND_COLORS.get(kind, "0.5"), label=KIND_LABELS.get(kind, kind),
               yerr=np.abs(ci.T - auroc), capsize=2, error_kw={"linewidth": 1})
        if kind == "all" and paper:
            marks = [(xi, paper[m][0]) for xi, m in zip(x, methods) if paper.get(m)]
            if marks:
                ax.plot(*zip(*marks), "D", color="black", markersize=7,
                        label="paper (all);\nnewer rows: their\nown paper's")
    ax.axhline(0.5, color="black", linestyle=":", linewidth=1.2, label="chance")
    ax.set_xticks(np.arange(len(methods)), methods, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("AUROC vs held-out captions")
    legend_outside(ax, "right", fontsize=12)


def as_display_image(image) -> np.ndarray:
    """An image [3, H, W] in [-1, 1] (a torch tensor or array), [H, W, 3] in [0, 1] or [H, W, 3] uint8 in
    [0, 255] -> [H, W, 3] in [0, 1]."""
    x = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    x = x / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)
    if x.ndim == 3 and x.shape[0] == 3 and x.shape[-1] != 3:
        x = (x.transpose(1, 2, 0) + 1) / 2                                     # [3, H, W] -> [H, W, 3]
    return np.clip(x, 0, 1)


def image_rows(fig, rows: list[list], titles: list[list[str]], label: str | None = None,
               fontsize: float = 10) -> np.ndarray:
    """Rows of images on a figure or subfigure, one column per item, each with its title, no ticks; `label` names
    the block (a short heading above it). Returns the axes [len(rows), columns]."""
    axes = np.atleast_2d(fig.subplots(len(rows), len(rows[0]), squeeze=False))
    for r, (images, row_titles) in enumerate(zip(rows, titles)):
        for ax, image, title in zip(axes[r], images, row_titles):
            ax.imshow(as_display_image(image), interpolation="nearest")
            ax.set_title(title, fontsize=fontsize)
            ax.set_xticks([]), ax.set_yticks([])
    if label:
        fig.suptitle(label, fontsize=fontsize + 5, fontweight="bold")
    return axes


def plot_length_seed_sweep(fig, result: dict, title: str) -> None:
    """A testbed's sweep (`detectors.training_sweep`): per verdict a panel against training length (×1, ×2, ×4; the other
    training seeds as grey dots at ×1), and below, generalized samples of each length (`result["pictures"]`)."""
    lengths = result["training_length_sweep"]
    x = [int(k[1:]) for k in lengths]
    runs = list(lengths.values())
    seeds = [r for name, r in result["seed_spread"]["runs"].items() if r["seed"] != runs[0]["seed"]]
    last = ("jacobian", "effective rank of ∂D/∂x (App. B.3)") if "jacobian" in runs[0] else \
        ("steering_ratio", f"steering: rare / common change, α = {runs[0].get('steering_alpha', 1):g}")
    panels = [("memorized_fraction", "memorized fraction"),
              ("gen_nn_correlation", "sample quality: generalized samples'\nmedian correlation, nearest training"),
              ("auroc", "AUROC, Mem vs Gen:\nstd (ours, blue), LID (grey)"), last]
    pictures = result.get("pictures", {})
    grid = fig.add_gridspec(2 + len(lengths), len(panels), height_ratios=[3, 0.6] + [1] * len(lengths),
                            wspace=0.3)
    for p, (key, label) in enumerate(panels):
        ax = fig.add_subplot(grid[0, p])
        if key == "auroc":
            for name, color in (("std", MEM_COLOR), ("lid", "0.4")):
                values = [r[name]["auroc"] for r in runs]
                ci = np.array([r[name]["auroc_ci"] for r in runs]).T                               # [2, L]
                ax.errorbar(x, values, yerr=np.abs(ci - values), color=color, marker="o", capsize=3)
                ax.plot([1] * len(seeds), [r[name]["auroc"] for r in seeds], "o", color=color, alpha=0.35,
                        markersize=5)
        elif key == "jacobian":
            for group, color in (("Mem", MEM_COLOR), ("Gen", GEN_COLOR)):
                ax.plot(x, [r["jacobian"][group]["effective_rank_median"] for r in runs], "o-", color=color,
                        label=group)
            ax.legend(fontsize=9)
        else:
            ax.plot(x, [r[key] for r in runs], "o-", color="black")
            ax.plot([1] * len(seeds), [r[key] for r in seeds], "o", color="0.6", markersize=5,
                    label="other seeds, x1" if seeds else None)
            if seeds and p == 0:
                ax.legend(fontsize=9)
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [f"x{k}" for k in x])
        ax.set_xticks([], minor=True)
        ax.set_xlabel(f"training length (× {result['default_steps']} steps)", fontsize=10)
        ax.tick_params(labelsize=10)
        ax.set_title(label, fontsize=11)
        ax.grid(alpha=0.3)
    if pictures:
        heading = fig.add_subplot(grid[1, :])
        heading.axis("off")
        heading.text(0.5, 0.1, "generalized samples at each training length (seed 0)", ha="center",
                     va="bottom", fontsize=12)
    for r, k in enumerate(lengths):
        images = pictures.get(f"steps x{k[1:]}")
        sub = fig.add_subfigure(grid[2 + r, :])
        if images is None:
            continue
        axes = sub.subplots(1, len(images))
        for ax, image in zip(np.atleast_1d(axes), images):
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
        np.atleast_1d(axes)[0].set_ylabel(k, fontsize=11, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=14)


def plot_seed_spread(axes, result: dict) -> None:
    """The CPU testbed's seed spread (`detectors.training_sweep`, testbed "cpu") on two axes: per kind the memorized
    share of its generations, and per method its Table 1 AUROC (verbatim titles vs held-out captions); one marker per
    training seed (seed 0, the default run, filled), a bar from the lowest to the highest."""
    runs = list(result["seed_spread"]["runs"].values())
    kinds, methods = list(runs[0]["memorized_by_kind"]), list(runs[0]["methods"])
    panels = [(kinds, [[r["memorized_by_kind"][k] for r in runs] for k in kinds], "memorized share of generations"),
              (methods, [[r["methods"][m]["auroc"] for r in runs] for m in methods],
               "AUROC, Table 1 (verbatim titles vs held-out captions)")]
    for ax, (names, values, label) in zip(axes, panels):
        for i, (name, vals) in enumerate(zip(names, values)):
            color = KIND_COLORS.get(name, MEM_COLOR if name == "std" else "0.35")
            ax.vlines(i, min(vals), max(vals), color=color, linewidth=6, alpha=0.3)
            for j, v in enumerate(vals):
                ax.plot(i + 0.12 * (j - (len(vals) - 1) / 2), v, "o", color=color, markersize=7,
                        markerfacecolor=color if runs[j]["seed"] == 0 else "white")
        ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4
                      else "center")
        ax.set_ylim(0, 1.05)
        ax.set_title(label, fontsize=13)
        ax.grid(axis="y", alpha=0.3)
    axes[0].plot([], [], "o", color="0.35", label="seed 0 (default run)")
    axes[0].plot([], [], "o", color="0.35", markerfacecolor="white", label="other training seeds")
    axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=10)
