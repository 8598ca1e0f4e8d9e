"""Representation statistics and similarity measures against independent computations."""
import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import cosine_similarity

from common.theory import stats


def test_rep_std_is_population_std_like_torch_unbiased_false():
    h = torch.relu(torch.randn(7, 100, generator=torch.Generator().manual_seed(0)))
    np.testing.assert_allclose(stats.rep_std(h), h.std(dim=-1, unbiased=False).numpy(), rtol=1e-6)


def test_spiky_vector_has_larger_std_than_balanced_one_of_equal_energy():
    p = 100
    spiky = np.zeros(p); spiky[3] = 10.0
    balanced = np.full(p, 1.0)                                     # same l2 norm: 10
    assert stats.rep_l2(spiky) == pytest.approx(stats.rep_l2(balanced))
    assert stats.rep_std(spiky) == pytest.approx(np.sqrt(100 / p - (10 / p) ** 2))  # E[h²] − E[h]²
    assert stats.rep_std(balanced) == 0.0
    assert stats.rep_l4_over_l2(spiky) == pytest.approx(1.0)
    assert stats.rep_l4_over_l2(balanced) == pytest.approx(p ** -0.25)
    assert stats.rep_l4_over_l2(np.zeros(p)) == 0.0


def test_rep_summary_fields():
    s = stats.rep_summary(np.array([[0.0, 2.0], [1.0, 1.0]]))
    assert s["active_fraction"] == 0.75 and s["std"] == pytest.approx(0.5)


def test_cosine_matrix_matches_sklearn_and_chunked_max():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 30)), rng.normal(size=(23, 30))
    np.testing.assert_allclose(stats.cosine_matrix(a, b), cosine_similarity(a, b), atol=1e-12)
    np.testing.assert_allclose(stats.max_cosine(a, b, chunk=4), cosine_similarity(a, b).max(1), atol=1e-12)


def test_psnr_peak_conventions():
    ref = np.zeros(1024)
    assert stats.psnr(ref + 0.2, ref, peak=1.0) == pytest.approx(10 * np.log10(1 / 0.04))
    assert stats.psnr(ref + 0.2, ref, peak=2.0) - stats.psnr(ref + 0.2, ref, peak=1.0) == pytest.approx(20 * np.log10(2))
    assert stats.psnr(ref, ref) == float("inf")


def test_nearest_neighbors_and_nn_ratio_on_hand_made_points():
    train = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 4.0], [100.0, 100.0]])
    samples = np.array([[1.0, 0.0], [5.0, 0.0]])
    dist, idx = stats.nearest_neighbors(samples, train, k=2, chunk=3)      # chunk < n: the merge is tested
    np.testing.assert_allclose(dist, [[1.0, np.sqrt(17.0)], [5.0, 5.0]])
    assert idx[0].tolist() == [0, 2] and set(idx[1]) == {0, 1}
    np.testing.assert_allclose(stats.nn_distance_ratio(samples, train), [1 / np.sqrt(17.0), 1.0])
    assert stats.memorized_fraction_nn_ratio(samples, train) == 0.5          # 0.243 < 1/3, 1.0 is not
    with pytest.raises(ValueError, match="at least 2"):
        stats.nearest_neighbors(samples, train[:1])


def test_memorized_fraction_cos_threshold_is_inclusive():
    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    c = 0.95
    samples = np.array([[c, np.sqrt(1 - c**2)], [1.0, 1.0], [0.0, 2.0]])  # cos 0.95, 0.707, 1.0
    assert stats.memorized_fraction_cos(samples, train) == pytest.approx(2 / 3)


def test_scale_free_nn_ratio_sees_a_faint_copy():
    """A sample at 5 % of a training image's norm along its direction: no copy by Euclidean distance (it sits near
    the origin, about as far from every image), a copy on unit-normalised vectors."""
    g = np.random.default_rng(0)
    train = g.normal(size=(5, 256)) * 0.8
    faint = 0.05 * train[:3] + 0.002 * g.normal(size=(3, 256))
    assert stats.memorized_fraction_nn_ratio(faint, train) == 0.0
    assert stats.memorized_fraction_nn_ratio(faint, train, scale_free=True) == 1.0
    np.testing.assert_allclose(np.linalg.norm(stats.unit_rows(train), axis=1), 1.0)
    assert np.array_equal(stats.unit_rows(np.zeros((1, 4))), np.zeros((1, 4)))
