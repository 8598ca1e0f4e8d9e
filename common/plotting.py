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
# Stable Diffusion figures (Fig 6a/6b): the official SD notebook's size and larger fonts
# ----------------------------------------------------------------------------------------------------
SD_FIGSIZE = (10.8, 5.2)
SD_RC = {"axes.titlesize": 28, "axes.labelsize": 24, "xtick.labelsize": 20, "ytick.labelsize": 20,
         "legend.fontsize": 24}


def plot_representation_lines(ax, reps: dict, colors: dict | None = None) -> None:
    """Fig 6a style: each pooled representation h [p] as a line over its dimensions, std in the legend."""
    colors = colors or {"Mem": MEM_COLOR, "Gen": GEN_COLOR}
    for label, h in reps.items():
        h = np.asarray(h, dtype=np.float64)
        ax.plot(np.arange(len(h)), h, color=colors.get(label), linewidth=1.8, alpha=0.9,
                label=f"{label} (std={rep_std(h):.3f})")
    ax.set_xlabel("Latent dimension")
    ax.set_ylabel("Activation")
    ax.grid(True, alpha=0.25)
    ax.legend(loc="upper right", frameon=True)


def plot_score_densities(ax, scores: dict, colors: dict | None = None, alpha: float = 0.7) -> None:
    """Fig 6b style (official notebook): filled KDEs of each set's scores, normalised per set (seaborn,
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
