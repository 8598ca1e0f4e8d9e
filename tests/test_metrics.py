"""Detection metrics against hand-made scores whose answers are known by counting."""
import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from common.detectors import metrics


def pairwise_auroc(pos, neg):
    """Mann-Whitney by brute force: P(pos > neg) + P(pos == neg) / 2."""
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_perfect_and_reversed_separation():
    pos, neg = [3.0, 4.0, 5.0], [0.0, 1.0, 2.0]
    assert metrics.auroc(pos, neg) == 1.0
    assert metrics.tpr_at_fpr(pos, neg) == 1.0
    assert metrics.tpr_at_fpr_official(pos, neg) == 1.0
    assert metrics.auroc(neg, pos) == 0.0
    assert metrics.tpr_at_fpr(neg, pos) == 0.0


def test_auroc_counts_ties_as_one_half():
    pos, neg = [0.2, 0.5, 0.9], [0.1, 0.5, 0.7]
    assert metrics.auroc(pos, neg) == pytest.approx(5.5 / 9)   # 1 + 1.5 + 3 wins of 9 pairs
    assert metrics.auroc([1.0, 1.0], [1.0, 1.0]) == 0.5


def test_auroc_equals_sklearn_and_brute_force_with_ties():
    rng = np.random.default_rng(0)
    pos, neg = np.round(rng.normal(1, 1, 60), 1), np.round(rng.normal(0, 1, 80), 1)   # many ties
    expected = roc_auc_score(np.r_[np.ones(60), np.zeros(80)], np.r_[pos, neg])
    assert metrics.auroc(pos, neg) == pytest.approx(expected, abs=1e-12)
    assert metrics.auroc(pos, neg) == pytest.approx(pairwise_auroc(pos, neg), abs=1e-12)


def test_strict_tpr_allows_exactly_one_false_positive_in_100():
    pos = [5.0] * 50 + [20.0] * 50
    one_outlier = [0.0] * 99 + [10.0]
    assert metrics.tpr_at_fpr(pos, one_outlier) == 1.0            # threshold 5: 1 of 100 negatives flagged
    two_outliers = [0.0] * 98 + [10.0, 10.0]
    assert metrics.tpr_at_fpr(pos, two_outliers) == 0.5           # 2% at 5 and 10; only 20 qualifies
    assert metrics.tpr_at_fpr(pos, two_outliers, max_fpr=0.02) == 1.0


def test_strict_tpr_with_99_negatives_allows_no_false_positive():
    neg = [0.0] * 98 + [10.0]                                       # 1/99 > 1%
    assert metrics.tpr_at_fpr([5.0] * 10, neg) == 0.0
    assert metrics.tpr_at_fpr([5.0] * 5 + [11.0] * 5, neg) == 0.5


def test_ties_at_the_threshold_flag_negatives_too():
    pos = [5.0] * 50 + [20.0] * 50
    neg = [0.0] * 98 + [5.0, 5.0]                                   # two negatives tied with half the positives
    assert metrics.tpr_at_fpr(pos, neg) == 0.5                      # a threshold of 5 flags 2% of negatives
    assert metrics.tpr_at_fpr_official(pos, neg) == 1.0             # 99th percentile = 5; real FPR then 2%


def test_official_threshold_interpolates_between_the_two_largest_negatives():
    neg = np.arange(100.0)                                          # 99th percentile = 98 + 0.01 * (99 - 98)
    assert metrics.tpr_at_fpr_official([98.0] * 4, neg) == 0.0
    assert metrics.tpr_at_fpr_official([98.02] * 4, neg) == 1.0
    assert metrics.tpr_at_fpr([98.5] * 4, neg) == 1.0               # flags 99 only: 1%
    assert metrics.tpr_at_fpr([98.0] * 4, neg) == 0.0               # flags 98 and 99: 2%


def test_bootstrap_ci():
    assert metrics.bootstrap_ci(metrics.auroc, [3, 4, 5], [0, 1, 2], n_boot=200) == (1.0, 1.0)
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(1, 1, 200), rng.normal(0, 1, 200)
    lo, hi = metrics.bootstrap_ci(metrics.auroc, pos, neg, n_boot=300, seed=3)
    assert lo < metrics.auroc(pos, neg) < hi and hi - lo < 0.15
    assert (lo, hi) == metrics.bootstrap_ci(metrics.auroc, pos, neg, n_boot=300, seed=3)
    wide = metrics.bootstrap_ci(metrics.auroc, pos[:20], neg[:20], n_boot=300, seed=3)
    assert wide[1] - wide[0] > hi - lo                               # fewer prompts, wider interval


def test_detection_summary_keys_and_empty_sets():
    s = metrics.detection_summary([3, 4, 5], [0, 1, 2], n_boot=20)
    assert s == {"n_pos": 3, "n_neg": 3, "auroc": 1.0, "auroc_ci": (1.0, 1.0), "tpr_at_1pct_fpr": 1.0,
                 "tpr_at_1pct_fpr_ci": (1.0, 1.0), "tpr_at_1pct_fpr_official": 1.0}
    with pytest.raises(ValueError, match="empty"):
        metrics.auroc([], [1.0])


def test_median_index_picks_the_typical_score_not_the_extreme_one():
    assert metrics.median_index([5.0, 1.0, 3.0]) == 2                       # sorted 1, 3, 5: the 3
    assert metrics.median_index([4.0, 1.0, 3.0, 2.0]) == 3                  # even count: the lower middle (2)
    assert metrics.median_index([7.0]) == 0
    with pytest.raises(ValueError, match="empty"):
        metrics.median_index([])
