"""Detection metrics: AUROC, TPR at 1% FPR (two named definitions) and bootstrap confidence intervals.

Memorized samples are the positives; a higher score means "more likely memorized" (paper §4.1, Table 1).

TPR@1%FPR has two definitions in use, and they differ on small or tied sets, so both are reported:

    tpr_at_fpr           strict: the largest TPR over all thresholds whose FPR is at most 1%. A sample is
                         flagged when score >= threshold, so a threshold on a tied value flags every sample
                         with that value, negatives included.
    tpr_at_fpr_official  the official notebook's: threshold = the 99th percentile of the negative scores
                         (`np.quantile`, linear interpolation, on float32 scores as the notebook casts them);
                         TPR = fraction of positives >= threshold. Its FPR can exceed 1% when negatives tie
                         at the threshold, and with 100 negatives the threshold interpolates between the two
                         largest ones.

AUROC is sklearn's `roc_auc_score` (ties count one half). Bootstrap CIs resample prompts with replacement,
positives and negatives separately (the class sizes stay fixed), and take percentiles.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

DEFAULT_MAX_FPR = 0.01


def _scores(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("a score set is empty")
    return x


def auroc(positive_scores, negative_scores) -> float:
    """Area under the ROC curve, positives = memorized (sklearn `roc_auc_score`)."""
    pos, neg = _scores(positive_scores), _scores(negative_scores)
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return float(roc_auc_score(labels, np.r_[pos, neg]))


def roc_points(positive_scores, negative_scores) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of the ROC curve, for plotting (sklearn `roc_curve`)."""
    pos, neg = _scores(positive_scores), _scores(negative_scores)
    fpr, tpr, _ = roc_curve(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg])
    return fpr, tpr


def tpr_at_fpr(positive_scores, negative_scores, max_fpr: float = DEFAULT_MAX_FPR) -> float:
    """Strict TPR@FPR: the largest fraction of positives flagged by a threshold that flags at most
    `max_fpr` of the negatives (flag = score >= threshold; the empty threshold +inf always qualifies)."""
    pos, neg = np.sort(_scores(positive_scores)), np.sort(_scores(negative_scores))
    allowed_false_positives = int(np.floor(max_fpr * len(neg) + 1e-9))
    thresholds = np.unique(np.r_[pos, neg])                                  # every distinct score
    false_positives = len(neg) - np.searchsorted(neg, thresholds, side="left")   # negatives >= threshold
    true_positives = len(pos) - np.searchsorted(pos, thresholds, side="left")    # positives >= threshold
    ok = false_positives <= allowed_false_positives
    return float(true_positives[ok].max() / len(pos)) if ok.any() else 0.0


def tpr_at_fpr_official(positive_scores, negative_scores, fpr: float = DEFAULT_MAX_FPR) -> float:
    """The official notebook's TPR@FPR: threshold = np.quantile(negatives, 1 - fpr); TPR = mean(pos >= thr).
    Scores are cast to float32 first, as the notebook does."""
    pos = _scores(positive_scores).astype(np.float32)
    neg = _scores(negative_scores).astype(np.float32)
    threshold = np.quantile(neg, 1.0 - float(fpr))
    return float((pos >= threshold).mean())


def bootstrap_ci(metric: Callable[[np.ndarray, np.ndarray], float], positive_scores, negative_scores,
                 n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of `metric(pos, neg)`: resample positives and negatives (prompts) with
    replacement, each within its own class, `n_boot` times."""
    pos, neg = _scores(positive_scores), _scores(negative_scores)
    rng = np.random.default_rng(seed)
    values = np.array([
        metric(pos[rng.integers(0, len(pos), len(pos))], neg[rng.integers(0, len(neg), len(neg))])
        for _ in range(n_boot)
    ])
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [tail, 1.0 - tail])
    return float(lo), float(hi)


def detection_summary(positive_scores, negative_scores, n_boot: int = 1000, seed: int = 0) -> dict:
    """AUROC and both TPR@1%FPR definitions, with bootstrap 95% CIs for AUROC and strict TPR."""
    pos, neg = _scores(positive_scores), _scores(negative_scores)
    return {
        "n_pos": len(pos), "n_neg": len(neg),
        "auroc": auroc(pos, neg),
        "auroc_ci": bootstrap_ci(auroc, pos, neg, n_boot, seed=seed),
        "tpr_at_1pct_fpr": tpr_at_fpr(pos, neg),
        "tpr_at_1pct_fpr_ci": bootstrap_ci(tpr_at_fpr, pos, neg, n_boot, seed=seed),
        "tpr_at_1pct_fpr_official": tpr_at_fpr_official(pos, neg),
    }


ROW_KEYS = ("auroc", "auroc_ci", "tpr_at_1pct_fpr", "n_pos", "n_neg")


def detection_row(positive_scores, negative_scores, n_boot: int = 1000) -> dict:
    """The compact row a table keeps of `detection_summary`: AUROC, its CI, strict TPR@1%FPR and the counts."""
    summary = detection_summary(positive_scores, negative_scores, n_boot=n_boot)
    return {k: summary[k] for k in ROW_KEYS}


def median_index(scores) -> int:
    """The index of the set's median score (the lower middle one for an even count): the rule that picks a
    group's typical sample for an example figure, fixed before looking at the result (not its most extreme)."""
    values = _scores(scores)
    return int(np.argsort(values, kind="stable")[(len(values) - 1) // 2])
