"""Is a generated image a copy of a training image? The copy criteria of the testbeds, in one place.

    pearson     the CPU testbed's: Pearson correlation of pixels with the nearest distinct training image ≥ 0.95
                (its scenes are flat colour fields, where a scale-free measure is the right one)
    calibrated  Ross et al.'s "calibrated L2" (official `flipd`, `conf/mem_check.yaml`):
                ‖x − t‖ / ‖t − t'‖ < 0.8, where t is the training image nearest to x and t' the training
                image nearest to t: how close x is to t, measured in units of how crowded t's neighbourhood is

Each criterion comes with its false-copy rate: how often it fires between two *different* training images,
i.e. how often a sample that is merely near the data would be called a copy.
"""
from __future__ import annotations

import numpy as np
import torch

from ..theory.stats import centred, cosine_matrix, nearest_by_cosine, nearest_neighbors

PEARSON_THRESHOLD = 0.95
CALIBRATED_L2_THRESHOLD = 0.8
IDENTICAL = 1e-4     # an L2 distance below this is an identical pair (cdist's rounding of 0 is ~1e-7 on images)


def _flat(x) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return x.reshape(len(x), -1).astype(np.float64)


# ----------------------------------------------------------------------------------------------------
# Pearson correlation (the CPU testbed)
# ----------------------------------------------------------------------------------------------------
def pearson_nearest(samples, references) -> tuple[np.ndarray, np.ndarray]:
    """(correlation, index) of each sample's nearest reference by the Pearson correlation of pixels: [m], [m]."""
    return nearest_by_cosine(centred(_flat(samples)), centred(_flat(references)))


def pearson_false_copy_rate(references, threshold: float = PEARSON_THRESHOLD) -> dict:
    """The fraction of references whose nearest *other* reference passes `threshold`, and that correlation's
    quantiles."""
    x = centred(_flat(references))
    c = cosine_matrix(x, x)
    np.fill_diagonal(c, -np.inf)
    nearest = c.max(axis=1)
    return {"false_copy_rate": float((nearest >= threshold).mean()),
            "nn_correlation_quantiles": dict(zip(("50%", "99%", "99.9%", "max"),
                                                 map(float, np.quantile(nearest, [0.5, 0.99, 0.999, 1.0]))))}


# ----------------------------------------------------------------------------------------------------
# Calibrated L2 (Ross et al.)
# ----------------------------------------------------------------------------------------------------
def training_spacing(train) -> np.ndarray:
    """‖t − t'‖ of each training image to its nearest other training image: [n]. Needs n ≥ 2 distinct images."""
    dist, _ = nearest_neighbors(_flat(train), _flat(train), k=2)
    return dist[:, 1]                                           # column 0 is the image itself (distance 0)


def calibrated_l2(samples, train, spacing: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ratio, nearest) of each sample: ‖x − t‖ / ‖t − t'‖ with t its nearest training image (index `nearest`).

    train: the *distinct* training images (a duplicated image once; a duplicate pair would have spacing 0).
    spacing: `training_spacing(train)`, when already computed."""
    train = _flat(train)
    spacing = training_spacing(train) if spacing is None else np.asarray(spacing)
    if np.any(spacing < IDENTICAL):
        raise ValueError("two training images are identical: pass each distinct image once")
    dist, idx = nearest_neighbors(_flat(samples), train, k=1)
    return dist[:, 0] / spacing[idx[:, 0]], idx[:, 0]


def calibrated_l2_false_copy_rate(train, threshold: float = CALIBRATED_L2_THRESHOLD) -> dict:
    """The criterion applied to each training image against the *other* training images (leave-one-out): the
    fraction called a copy, and the ratio's quantiles."""
    train = _flat(train)
    dist, idx = nearest_neighbors(train, train, k=3)            # self, then its two nearest others
    nearest, d_nearest = idx[:, 1], dist[:, 1]
    # the nearest other's own spacing, among the images other than the left-out one
    d_nn, i_nn = nearest_neighbors(train[nearest], train, k=3)
    left_out = np.arange(len(train))
    own_spacing = np.where(i_nn[:, 1] == left_out, d_nn[:, 2], d_nn[:, 1])
    ratio = d_nearest / own_spacing
    return {"false_copy_rate": float((ratio < threshold).mean()), "threshold": threshold,
            "ratio_quantiles": dict(zip(("0.1%", "1%", "50%"), map(float, np.quantile(ratio, [0.001, 0.01, 0.5]))))}
