"""`common.theory.regimes`, the machinery of the regimes notebook, on cases whose answer is known by hand: block
detection on a W built with known blocks, the closed forms of Cor 3.2 worked out on paper, the measurements of a
DAE whose columns are set by hand, the transition's interpolation."""
import numpy as np
import pytest
import torch

from common.theory import dae, regimes

E = np.eye(6)


def two_clusters():
    """Cluster 0: 3e₀ ± e₂, cluster 1: 3e₁ ± e₃ (two samples of each sign): the Gram matrix of cluster 0 is
    diag(36, ·, 4) on (e₀, e₂) with no cross term, so its eigenvectors are e₀, e₂ with eigenvalues 36, 4."""
    signs = np.array([1.0, -1.0, 1.0, -1.0])
    x0 = 3 * E[0] + signs[:, None] * E[2]
    x1 = 3 * E[1] + signs[:, None] * E[3]
    x = np.empty((8, 6))
    x[0::2], x[1::2] = x0, x1                       # sample i in cluster i mod 2, as Mixture.sample
    return x, np.arange(8) % 2


def test_cluster_owners_finds_blocks_a_shared_unit_and_an_orphan():
    x, labels = two_clusters()
    W = np.stack([E[0] + 0.1 * E[2], E[0], E[1], E[1] + E[3], -(E[0] + E[1]), E[0] + E[1]], axis=1)
    owner, shared = regimes.cluster_owners(W, x, labels, 2)
    assert owner[:5].tolist() == [0, 0, 1, 1, -1]   # unit 4 fires on nothing
    assert shared == 1                               # unit 5 fires on both clusters


def test_block_analysis_recovers_a_known_rotation_and_the_thm31_singular_values():
    x, labels = two_clusters()
    theta = np.radians(10.0)
    W = np.stack([0.9 * E[0] + 0.1 * E[2], 0.9 * E[0] - 0.1 * E[2],           # cluster 0: span{e₀, e₂}
                  np.cos(theta) * E[1] + np.sin(theta) * E[4],                 # cluster 1: e₁ tilted by 10°
                  np.cos(theta) * E[1] + np.sin(theta) * E[4] + 0.5 * E[3]], axis=1)
    owner, shared, blocks = regimes.block_analysis(W, x, labels, 2, n_lambda=2.0, sigma=0.5)
    assert owner.tolist() == [0, 0, 1, 1] and shared == 0
    b0, b1 = blocks
    assert b0["p_k"] == 2 and b1["p_k"] == 2
    np.testing.assert_allclose(b0["angles"], [0, 0], atol=1e-6)
    np.testing.assert_allclose(b1["angles"], [0, 10], atol=1e-6)             # e₃ shared, e₁ off by 10°
    # W₀ W₀ᵀ = diag(2·0.81, 2·0.01) on (e₀, e₂)
    np.testing.assert_allclose(b0["sv"], [np.sqrt(1.62), np.sqrt(0.02)], rtol=1e-12)
    # sqrt((λ_j − nλ)/(λ_j + n_k σ²)) with λ = 36, 4, nλ = 2, n_k = 4, σ² = 0.25
    np.testing.assert_allclose(b0["sv_pred"], [np.sqrt(34 / 37), np.sqrt(2 / 5)], rtol=1e-12)


def test_block_analysis_caps_the_rank_at_the_eigenvalues_above_n_lambda():
    x, labels = two_clusters()
    W = np.stack([0.9 * E[0] + 0.1 * E[2], 0.9 * E[0] - 0.1 * E[2], E[1], E[1] + E[3]], axis=1)
    _, _, blocks = regimes.block_analysis(W, x, labels, 2, n_lambda=10.0, sigma=0.5)
    assert [b["p_k"] for b in blocks] == [1, 1]      # the eigenvalue 4 is below nλ = 10: predicted empty


def test_mixture_means_form_a_regular_simplex_in_orthogonal_subspaces():
    mix = regimes.make_mixture(6, 3, d=64, rank=5, mean_norm=5.0)
    vertices = np.concatenate([mix.means, mix.points])
    np.testing.assert_allclose(np.linalg.norm(vertices, axis=1), 5.0)
    cos = vertices @ vertices.T / 25.0
    np.testing.assert_allclose(cos[~np.eye(6, dtype=bool)], -1 / 5, atol=1e-12)
    bases = np.concatenate(list(mix.bases), axis=1)                           # [d, 3·r]
    np.testing.assert_allclose(bases.T @ bases, np.eye(15), atol=1e-12)      # covariances: orthogonal ...
    np.testing.assert_allclose(vertices @ bases, 0, atol=1e-12)              # ... and to every vertex
    sub = mix.subspace(2)                                                     # [d, r + 1]
    np.testing.assert_allclose(sub.T @ sub, np.eye(6), atol=1e-12)
    x, labels = mix.sample(3000, seed=0)
    assert labels[:4].tolist() == [0, 1, 2, 0] and x.dtype == np.float32
    z = (x[labels == 1] - mix.means[1]) @ mix.bases[1]                         # coordinates in its directions
    np.testing.assert_allclose(z.var(0), mix.eig, rtol=0.15)
    residual = x[labels == 1] - mix.means[1] - z @ mix.bases[1].T
    assert np.abs(residual).max() < 1e-4                                      # nothing outside them


def test_participation_counts_a_spike_as_one_and_a_flat_block_as_its_size():
    h = np.array([[0, 3.0, 0, 0], [1, 1, 1, 0], [2, 2, 2, 2]])
    np.testing.assert_allclose(regimes.participation(h), [1, 3, 4])


def test_column_norm_and_loss_closed_forms_on_a_case_worked_by_hand():
    x = np.array([[3.0, 4.0, 0.0]])                  # ‖x‖² = 25
    # nλ = 5, σ² = 15: ‖r x‖² = (25 − 5)/(25 + 15) = 1/2
    np.testing.assert_allclose(dae.predicted_column_norms(x, 5.0, np.sqrt(15.0)), [np.sqrt(0.5)])
    # loss (s − 1)²‖x‖² + σ²s² = 0.25·25 + 15·0.25 = 10
    assert dae.theoretical_mem_loss(x, np.sqrt(15.0), 5.0) == pytest.approx(10.0)


def hand_model(W: np.ndarray) -> dae.TiedDAE:
    model = dae.TiedDAE(d=W.shape[0], p=W.shape[1], tie="alias")
    with torch.no_grad():
        model.encoder.weight.copy_(torch.as_tensor(W.T, dtype=torch.float32))
    return model


def test_expected_loss_of_one_stored_column_matches_the_closed_form():
    """f = W[Wᵀ·]₊ with one column √s·x̂: f(x + σε) = s x̂ (‖x‖ + σ x̂ᵀε) (the ReLU never clips at ‖x‖ ≫ σ),
    so E‖f − x‖² = (s − 1)²‖x‖² + σ²s²."""
    x = np.zeros((1, 8), dtype=np.float32)
    x[0, 0] = 5.0
    s, sigma = 0.5, 0.1
    model = hand_model(np.sqrt(s) * np.eye(8)[:, :1])
    loss = regimes.expected_loss(model, x, sigma, draws=4000)
    assert loss == pytest.approx((s - 1) ** 2 * 25 + sigma**2 * s**2, rel=2e-3)


def test_stored_sums_the_energy_of_every_column_that_copies_an_image():
    x = np.eye(4)[:2] * 3.0                                                    # two orthogonal images
    W = np.stack([0.6 * np.eye(4)[0], 0.8 * np.eye(4)[0], 0.9 * np.eye(4)[1], 0.5 * np.eye(4)[2]], axis=1)
    out = regimes.stored(W, x, copy_cos=0.95)
    np.testing.assert_allclose(out["energy"], [0.36 + 0.64, 0.81])           # image 0 split over two columns
    assert out["copies"].tolist() == [2, 1]
    np.testing.assert_allclose(out["best_cos"], [1.0, 1.0])


def test_measure_counts_live_units_copies_and_copy_energy():
    d = 8
    x = np.zeros((2, d), dtype=np.float32)
    x[0, 0], x[1, 1] = 4.0, 4.0
    I = np.eye(d)
    W = np.stack([1.0 * I[0], 0.8 * I[1], 0.6 * I[2], 0.3 * I[3]], axis=1)    # live: norm ≥ 0.5 · 1.0
    out = regimes.measure(hand_model(W), x, {"test_err": x}, regimes.Setup(sigma=0.1))
    assert out["live_units"] == 3 and out["units_norm_gt_0_1"] == 4
    assert out["copy_fraction"] == pytest.approx(2 / 3)                       # the unit along e₂ copies nothing
    assert out["copy_energy_fraction"] == pytest.approx((1 + 0.64) / (1 + 0.64 + 0.36 + 0.09))
    assert out["train_err"] > 0 and out["test_err"] > 0


def test_crossing_interpolates_log_linearly_in_n():
    assert regimes.crossing([1, 100], [1.0, 0.0], 0.5) == pytest.approx(10.0)
    assert regimes.crossing([2, 10, 100], [1.0, 1.0, 0.0], 0.5) == pytest.approx(np.sqrt(1000))
    assert regimes.crossing([1, 100], [0.4, 0.0], 0.5) is None                # never above the level


def test_convergence_compares_the_last_measurement_with_the_middle_one():
    trace = [{"step": s, "copy_fraction": c, "rep_std": 1.0, "train_err": t, "test_err": 0.1}
             for s, c, t in [(1, 0.2, 0.1), (2, 0.5, 0.01), (3, 0.9, 0.011), (4, 0.6, 0.0125)]]
    rows = [{**trace[-1], "trace": trace}]
    out = regimes.convergence(rows)
    assert out["compared_steps"] == [2, 4]
    assert out["copy_fraction_change"] == [pytest.approx(0.1)]
    assert out["rel_train_err_change"] == [pytest.approx(0.25)]
    assert out["max_rel_train_err_change_where_train_err_ge_1e-3"] == pytest.approx(0.25)


def test_summarize_finds_both_transitions_and_prefers_fresh_draws():
    rows = [{"n": n, "copy_fraction": c, "copy_energy_fraction": c, "live_units": 1, "rep_std": 1.0,
             "train_err": tr, "test_err": 1.0, "fresh_err": fr, "train_seconds": 0.0,
             "trace": [{"step": 1, "copy_fraction": c, "rep_std": 1.0, "train_err": tr, "test_err": 1.0}]}
            for n, c, tr, fr in [(1, 1.0, 0.01, 1.0), (100, 0.0, 0.4, 0.5)]]
    s = regimes.summarize(rows, p=10)
    assert s["transition_n"] == pytest.approx(10.0) and s["transition_n_over_p"] == pytest.approx(1.0)
    assert s["gap_measured_on"] == "fresh_err"
    assert s["gap_transition_n"] is not None and s["gap_transition_n_over_p_test_set"] is None


def test_sweep_trains_each_n_and_measures_at_its_checkpoints():
    mix = regimes.make_mixture(3, 3, d=16, rank=2)
    x, _ = mix.sample(20, seed=1)
    setup = regimes.Setup(p=8)
    rows = regimes.sweep(x, {"test_err": x[:5]}, lambda n: regimes.adam_config(n, 40, 1e-3, 0.2), (2, 20),
                         setup, checkpoints=4)
    assert [r["n"] for r in rows] == [2, 20]
    assert [t["step"] for t in rows[0]["trace"]] == [10, 20, 30, 40]
    assert rows[1]["copy_fraction"] == rows[1]["trace"][-1]["copy_fraction"]


def test_unit_order_groups_by_owner_then_norm_with_orphans_last():
    W = np.stack([0.1 * E[0], 2.0 * E[0], 0.5 * E[0], 1.0 * E[0]], axis=1)
    assert regimes.unit_order(W, np.array([1, -1, 0, 1])).tolist() == [2, 3, 0, 1]
