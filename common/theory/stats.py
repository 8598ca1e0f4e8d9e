"""Representation statistics and image-similarity measures.

The paper's spikiness score is one scalar: the population standard deviation (ddof = 0) of a
representation vector (paper §4.1; `torch.std(unbiased=False)` in the official code). The official
`rep_extraction_utils.py` also computes the l2 norm and the l4/l2 ratio; they are kept here for reference.
All functions take [..., p] arrays or tensors and reduce over the last axis.
"""
from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _np(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def rep_std(h: ArrayLike) -> np.ndarray:
    """Population std over the last axis: the paper's memorization score (spiky -> large)."""
    return _np(h).astype(np.float64).std(axis=-1)


def rep_l2(h: ArrayLike) -> np.ndarray:
    return np.linalg.norm(_np(h).astype(np.float64), axis=-1)


def rep_l4_over_l2(h: ArrayLike) -> np.ndarray:
    """‖h‖₄ / ‖h‖₂, in [p^(-1/4), 1]: 1 for a one-hot vector, p^(-1/4) for a flat one. 0 for h = 0."""
    h = _np(h).astype(np.float64)
    l2 = np.linalg.norm(h, axis=-1)
    l4 = (h**4).sum(axis=-1) ** 0.25
    return np.divide(l4, l2, out=np.zeros_like(l2), where=l2 > 0)


def rep_summary(h: ArrayLike) -> dict:
    """Mean of std, l2 and l4/l2 over a batch of representations [n, p], plus the mean active fraction."""
    h = _np(h)
    return {"std": float(rep_std(h).mean()), "l2": float(rep_l2(h).mean()),
            "l4_over_l2": float(rep_l4_over_l2(h).mean()), "active_fraction": float((h > 0).mean())}


def cosine_matrix(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Cosine similarity between every row of `a` [m, d] and every row of `b` [n, d] -> [m, n]."""
    a, b = _np(a).astype(np.float64), _np(b).astype(np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def nearest_by_cosine(a: ArrayLike, b: ArrayLike, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `a`, its largest cosine with a row of `b` and that row's index -> ([m], [m])."""
    b = _np(b)
    if len(b) == 0:
        raise ValueError("no rows to compare with (b is empty)")
    best, index = np.full(len(a), -np.inf), np.zeros(len(a), dtype=np.int64)
    for start in range(0, len(b), chunk):
        c = cosine_matrix(a, b[start:start + chunk])                        # [m, chunk]
        chunk_best, chunk_index = c.max(axis=1), c.argmax(axis=1)
        better = chunk_best > best
        index[better], best[better] = start + chunk_index[better], chunk_best[better]
    return best, index


def centred(x: ArrayLike) -> np.ndarray:
    """Each row minus its own mean: the cosine of centred rows is the Pearson correlation of the pixels."""
    x = _np(x).astype(np.float64)
    return x - x.mean(axis=-1, keepdims=True)


def max_cosine(a: ArrayLike, b: ArrayLike, chunk: int = 4096) -> np.ndarray:
    """For each row of `a`, its largest cosine with any row of `b` (chunked over `b` for large sets)."""
    return nearest_by_cosine(a, b, chunk)[0]


def psnr(x: ArrayLike, reference: ArrayLike, peak: float = 1.0) -> float:
    """10 log10(peak² / MSE). The official denoising figure uses peak = 1 on [-1, 1] data, which is 20 log10(2) ≈ 6.02 dB below the standard PSNR with peak = the range 2."""
    mse = float(np.mean((_np(x).astype(np.float64) - _np(reference).astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak**2 / mse)


# ----------------------------------------------------------------------------------------------------
# Memorization criteria for generated samples
# ----------------------------------------------------------------------------------------------------
def nearest_neighbors(samples: ArrayLike, train: ArrayLike, k: int = 2, chunk: int = 8192):
    """Euclidean distances and indices of each sample's `k` nearest training images -> ([m, k], [m, k])."""
    s = torch.as_tensor(_np(samples), dtype=torch.float64)
    t_all = torch.as_tensor(_np(train), dtype=torch.float64)
    if len(t_all) < k:
        raise ValueError(f"need at least {k} training images for {k} neighbours, got {len(t_all)}")
    best_d = torch.full((len(s), k), float("inf"), dtype=torch.float64)
    best_i = torch.zeros((len(s), k), dtype=torch.long)
    for start in range(0, len(t_all), chunk):
        d = torch.cdist(s, t_all[start : start + chunk])                    # [m, chunk]
        cand_d = torch.cat([best_d, d], dim=1)
        cand_i = torch.cat([best_i, torch.arange(start, start + d.shape[1]).expand(len(s), -1)], dim=1)
        best_d, order = cand_d.topk(k, dim=1, largest=False)
        best_i = cand_i.gather(1, order)
    return best_d.numpy(), best_i.numpy()


def nn_distance_ratio(samples: ArrayLike, train: ArrayLike) -> np.ndarray:
    """‖x − NN₁(x)‖ / ‖x − NN₂(x)‖ over the training set: near 0 for a copy of one training image, near 1
    for a sample equally far from its two nearest neighbours (Gu et al. 2025's memorization criterion)."""
    dist, _ = nearest_neighbors(samples, train, k=2)
    return np.divide(dist[:, 0], dist[:, 1], out=np.zeros(len(dist)), where=dist[:, 1] > 0)


def memorized_fraction_nn_ratio(samples: ArrayLike, train: ArrayLike, threshold: float = 1 / 3,
                                scale_free: bool = False) -> float:
    """Fraction of samples whose NN distance ratio is below `threshold` (Gu et al. 2025: 1/3).

    `scale_free=True` applies the test to directions: samples and training images each scaled to unit norm
    first, so a faint copy of a training image (the same direction at a fraction of its norm) counts as a copy.
    """
    if scale_free:
        samples, train = unit_rows(samples), unit_rows(train)
    return float((nn_distance_ratio(samples, train) < threshold).mean())


def unit_rows(x: ArrayLike) -> np.ndarray:
    """Each row scaled to unit Euclidean norm (all-zero rows stay zero)."""
    x = _np(x).astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def memorized_fraction_cos(samples: ArrayLike, train: ArrayLike, threshold: float = 0.95) -> float:
    """Fraction of samples whose largest cosine similarity to a training image is at least `threshold`."""
    return float((max_cosine(samples, train) >= threshold).mean())
