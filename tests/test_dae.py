"""The tied ReLU DAE: the official alias tie, hand gradients, the fast trainer against the official training
cells (`common.theory.official`, as written), the Cor 3.2 formulas, checkpoints in our format and the official one, and
the cache."""
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn

from common.theory import dae, official


def _data(n=32, d=64, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 0.5


def test_alias_tie_keeps_decoder_equal_to_encoder_transposed_after_training():
    model = dae.build_dae(0, d=64, p=16, tie="alias")
    params = list(model.parameters())
    assert len(params) == 2 and params[1].data_ptr() == params[0].data_ptr()  # two Parameters, one storage
    before = model.encoder.weight.detach().clone()
    dae.train_dae(model, _data(), replace(dae.GEN_CONFIG, steps=5, batch_size=8, lr=1e-2), progress=False)
    assert not torch.equal(before, model.encoder.weight)
    assert torch.equal(model.decoder.weight, model.encoder.weight.t())


def test_model_is_built_as_the_official_one():
    torch.manual_seed(1)
    theirs = official.DAE(16, in_dim=64)
    ours = dae.build_dae(1, d=64, p=16)
    assert torch.equal(ours.encoder.weight, theirs.encoder[0].weight)
    x = _data(4)
    torch.testing.assert_close(ours(x), theirs(x))


def test_clean_tie_has_one_parameter_used_twice():
    model = dae.TiedDAE(d=64, p=16, tie="clean")
    assert len(list(model.parameters())) == 1
    x = _data(4)
    W = model.encoder.weight
    torch.testing.assert_close(model(x), torch.relu(x @ W.t()) @ W)


def test_unknown_tie_is_named():
    with pytest.raises(ValueError, match="'free'"):
        dae.TiedDAE(tie="free")


@pytest.mark.parametrize("tie", ["alias", "clean"])
def test_hand_gradients_equal_autograd(tie):
    torch.manual_seed(1)
    model = dae.TiedDAE(d=64, p=16, tie=tie)
    x = _data(8)
    x_noisy = x + 0.2 * torch.randn_like(x)
    loss = nn.MSELoss()(model(x_noisy), x)
    loss.backward()
    hand_loss, g_enc, g_dec = dae.tied_dae_grads(model.encoder.weight.detach(), x, x_noisy)
    torch.testing.assert_close(hand_loss, loss.detach())
    if tie == "alias":
        torch.testing.assert_close(g_enc, model.encoder.weight.grad)
        torch.testing.assert_close(g_dec.t(), model.decoder.weight.grad)
    else:
        torch.testing.assert_close(g_enc + g_dec, model.encoder.weight.grad)


def _official_run(x, cfg, p):
    if cfg.batch_size is None:
        return official.train_dae_mem(x, cfg.steps, cfg.sigma, cfg.lr, cfg.weight_decay, cfg.seed, p)
    return official.train_dae_gen(x, cfg.steps, cfg.sigma, cfg.lr, cfg.weight_decay, cfg.seed, p, cfg.batch_size)


@pytest.mark.parametrize("cfg", [replace(dae.GEN_CONFIG, steps=300), replace(dae.MEM_CONFIG, steps=300)],
                         ids=["gen-adam", "mem-rmsprop"])
def test_fast_trainer_follows_the_official_cell(cfg):
    """Small model, a few hundred steps: same init, batch and noise draws, so only float rounding differs."""
    x = _data(300) if cfg.batch_size else _data(5)
    ours = dae.build_dae(cfg.seed, d=64, p=16)
    dae.train_dae(ours, x, cfg, progress=False)
    torch.testing.assert_close(ours.encoder.weight, _official_run(x, cfg, 16).encoder[0].weight, atol=2e-5, rtol=1e-4)


# Gen (Adam, the whole stand-in, 3,000 batches) takes a minute or more: slow tier; the fast tier keeps Mem and the
# small-model comparison above.
@pytest.mark.parametrize("name,cfg,tol", [pytest.param("gen", dae.GEN_CONFIG, 1e-3, marks=pytest.mark.slow),
                                          ("mem", dae.MEM_CONFIG, 1e-2)])
def test_fast_trainer_against_the_official_cell_on_the_stand_in(name, cfg, tol, standin_faces):
    """The comparison with the official cell: seed 1, 3,000 steps, p = 100 on the face stand-in (RMSprop amplifies the rounding of
    near-zero gradients to ~4e-3; Adam stays ~2e-4)."""
    from common.theory.data import memorization_set

    x = torch.from_numpy(standin_faces.train)
    x = x[memorization_set(standin_faces)] if name == "mem" else x
    cfg = replace(cfg, steps=3000)
    ours = dae.build_dae(cfg.seed)
    dae.train_dae(ours, x, cfg, progress=False)
    theirs = _official_run(x, cfg, 100).encoder[0].weight
    assert float((ours.encoder.weight - theirs).detach().abs().max()) <= tol


def test_train_dae_logs_the_loss_and_is_deterministic():
    cfg = replace(dae.GEN_CONFIG, steps=40, batch_size=8, lr=1e-2)
    runs = []
    for _ in range(2):
        model = dae.build_dae(1, d=64, p=16)
        runs.append((dae.train_dae(model, _data(), cfg, progress=False, log_every=10), model.encoder.weight.clone()))
    assert runs[0][0]["loss_steps"] == [10, 20, 30, 40] and runs[0][0]["losses"] == runs[1][0]["losses"]
    assert torch.equal(runs[0][1], runs[1][1])


def test_effective_lambda_from_mse_mean_and_weight_decay():
    # alias: two Parameters each decayed by w  ->  lambda = d*w/2; clean: one Parameter -> d*w/4
    assert dae.effective_lambda(dae.MEM_CONFIG, 1024, "alias") == pytest.approx(1024 * 0.01 / 2)
    assert dae.effective_lambda(dae.MEM_CONFIG, 1024, "clean") == pytest.approx(1024 * 0.01 / 4)


def test_predicted_column_norms_cor_3_2():
    x = np.zeros((2, 4)); x[0, 0] = 10.0; x[1, :] = 3.0                  # ||x||^2 = 100 and 36
    np.testing.assert_allclose(dae.predicted_column_norms(x, 25.0, 0.2),
                               [np.sqrt(75 / 100.04), np.sqrt(11 / 36.04)])


def test_memorization_minimizer_stores_each_image_with_the_predicted_norm():
    """A small Cor 3.2 run: 3 negatively correlated images (β = −0.15), p = 16 ≥ n = 3.

    Every unit ends either dead or a copy of one training image, and the energy stored along each image
    (Σ‖wⱼ‖² over the columns copying it) is Cor 3.2's ‖rᵢxᵢ‖². The energy is the invariant: two units
    copying the same image are a flat direction of the loss (only ‖w₁‖² + ‖w₂‖² enters it), so whether an
    image ends in one column or two depends on the initialisation.
    """
    d, sigma = 64, 0.2
    x = torch.full((3, d), -0.3)
    for i in range(3):
        x[i, 20 * i : 20 * i + 10] = 3.0
    cfg = replace(dae.MEM_CONFIG, steps=3000, lr=3e-3, sigma=sigma)
    predicted = dae.predicted_column_norms(x.numpy(), 3 * dae.effective_lambda(cfg, d), sigma)
    for seed in (1, 2):
        model = dae.build_dae(seed, d=d, p=16)
        dae.train_dae(model, x, replace(cfg, seed=seed), progress=False)
        W = model.W.detach().numpy().T                                       # [p, d]
        norms = np.linalg.norm(W, axis=1)
        live = norms > 0.1
        cos = W[live] @ x.numpy().T / np.outer(norms[live], x.norm(dim=1).numpy())
        assert cos.max(axis=1).min() > 0.99                                  # live units are copies
        stored = np.array([(norms[live][cos.argmax(axis=1) == i] ** 2).sum() for i in range(3)])
        np.testing.assert_allclose(np.sqrt(stored), predicted, rtol=0.05)
        assert norms[~live].max() < 0.05


def test_theoretical_mem_loss():
    x = np.zeros((1, 4)); x[0, 0] = 2.0
    assert dae.theoretical_mem_loss(x, 0.5) == pytest.approx(0.25 * 4 / 4.25)


def test_safetensors_round_trip(tmp_path):
    torch.manual_seed(0)
    model = dae.TiedDAE(d=64, p=16, tie="clean")
    dae.save_dae(model, tmp_path / "m.safetensors", {"train_seconds": 1.5})
    loaded, meta = dae.load_dae(tmp_path / "m.safetensors")
    assert loaded.tie == "clean" and meta == {"train_seconds": 1.5}
    assert torch.equal(loaded.encoder.weight, model.encoder.weight)


def test_official_checkpoint_file_loads(tmp_path):
    """A file as the official notebook writes it: `torch.save(model_mem.state_dict(), ...)` of its `DAE`, whose
    layers sit in `nn.Sequential` (keys `encoder.0.weight`, `decoder.0.weight`) and whose decoder aliases the
    encoder's transposed storage."""
    torch.manual_seed(0)
    theirs = official.DAE(16, in_dim=64)
    torch.save(theirs.state_dict(), tmp_path / "DAE_sample_5_sigma_0.2.pth")
    model, meta = dae.load_dae(tmp_path / "DAE_sample_5_sigma_0.2.pth")
    assert model.tie == "alias" and meta["official_checkpoint"].endswith("DAE_sample_5_sigma_0.2.pth")
    assert torch.equal(model.encoder.weight, theirs.encoder[0].weight)
    assert torch.equal(model.decoder.weight, model.encoder.weight.t())
    x = _data(4)
    torch.testing.assert_close(model(x), theirs(x))


def test_checkpoint_with_other_keys_or_an_untied_decoder_is_refused(tmp_path):
    enc = torch.randn(16, 64)
    torch.save({"encoder.0.weight": enc, "decoder.0.weight": torch.randn(64, 16)}, tmp_path / "untied.pth")
    with pytest.raises(ValueError, match="not the encoder weight"):
        dae.load_dae(tmp_path / "untied.pth")
    torch.save({"enc.weight": enc}, tmp_path / "other.pth")
    with pytest.raises(KeyError, match=r"expected the official DAE's keys .*'encoder.0.weight'.*found \['enc.weight'\]"):
        dae.load_dae(tmp_path / "other.pth")


def test_train_or_load_reuses_only_an_identical_config(tmp_path):
    x = _data()
    cfg = replace(dae.GEN_CONFIG, steps=20, batch_size=8)
    m1, info1 = dae.train_or_load(x, cfg, p=16, cache_dir=tmp_path, progress=False)
    m2, info2 = dae.train_or_load(x, cfg, p=16, cache_dir=tmp_path, progress=False)
    assert not info1["cached"] and info2["cached"] and info2["train_seconds"] == pytest.approx(info1["train_seconds"])
    assert torch.equal(m1.encoder.weight, m2.encoder.weight)
    _, info3 = dae.train_or_load(x, replace(cfg, lr=2e-4), p=16, cache_dir=tmp_path, progress=False)
    _, info4 = dae.train_or_load(x + 1e-3, cfg, p=16, cache_dir=tmp_path, progress=False)
    assert not info3["cached"] and not info4["cached"]
    assert len(list(tmp_path.glob("*.safetensors"))) == 3


def test_live_units_sorted_by_norm():
    model = dae.TiedDAE(d=8, p=4, tie="clean")
    with torch.no_grad():
        model.encoder.weight.copy_(torch.diag(torch.tensor([0.05, 2.0, 0.5, 0.0])) @ torch.ones(4, 8) / 8**0.5)
    assert dae.live_units(model).tolist() == [1, 2]


def test_train_dae_callback_sees_the_weights_and_leaves_the_run_unchanged():
    cfg = replace(dae.GEN_CONFIG, steps=30, batch_size=8, lr=1e-2)
    plain = dae.build_dae(1, d=64, p=16)
    dae.train_dae(plain, _data(), cfg, progress=False)
    seen = []

    def callback(step, model):
        seen.append((step, model.encoder.weight.clone()))
        torch.randn(1000)                                   # draws from the global RNG: must not matter

    watched = dae.build_dae(1, d=64, p=16)
    dae.train_dae(watched, _data(), cfg, progress=False, callback=callback, callback_every=10)
    assert [s for s, _ in seen] == [10, 20, 30]
    assert torch.equal(seen[-1][1], watched.encoder.weight)
    assert torch.equal(plain.encoder.weight, watched.encoder.weight)


def test_theoretical_mem_loss_with_weight_decay_is_the_loss_of_the_stored_columns():
    """With λ > 0 the formula is the expected loss of f(y) = s x̂x̂ᵀy, s = (‖x‖² − nλ)/(‖x‖² + σ²), and this s
    minimises n × Eq. 6 for one stored column: (s − 1)²‖x‖² + σ²s² + 2nλ·s (‖W₁‖² + ‖W₂‖² = 2s)."""
    rng = np.random.default_rng(0)
    x, sigma, n_lambda = rng.normal(size=(1, 16)) * 2.0, 0.3, 5.0
    sq = float((x**2).sum())
    s = (sq - n_lambda) / (sq + sigma**2)
    noise = rng.normal(size=(200_000, 16)) * sigma
    y = x + noise
    f = s * (y @ x.T) / sq * x                                            # s x̂x̂ᵀ y
    mc = float(((f - x) ** 2).sum(axis=1).mean())
    assert dae.theoretical_mem_loss(x, sigma, n_lambda) == pytest.approx(mc, rel=0.02)
    grid = np.linspace(s - 0.2, s + 0.2, 401)
    objective = (grid - 1) ** 2 * sq + sigma**2 * grid**2 + 2 * n_lambda * grid
    assert grid[np.argmin(objective)] == pytest.approx(s, abs=1e-3)
    assert dae.theoretical_mem_loss(x, sigma, 0.0) == pytest.approx(dae.theoretical_mem_loss(x, sigma))
