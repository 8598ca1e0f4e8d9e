"""The paper's figure style (official `Figs/`): Mem in royalblue, Gen in crimson, large sans fonts, 300 dpi.

Figures are saved atomically to `Figs/<name>.png`; notebooks pass `figs_dir` so a smoke run can write
elsewhere.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .data import to_image
from .paths import FIGS_DIR
from .results import atomic_path
from .stats import rep_std

MEM_COLOR = "royalblue"
GEN_COLOR = "crimson"
DPI = 300

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
