"""The toy diffusion model: architecture, hand gradients, the fast trainer against the official-style loop,
the sampler and its input checks, checkpoints and the cache."""
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn

from common import toy_diffusion as td


def _model(d=64, hidden=16, seed=0, perturb=True):
    torch.manual_seed(seed)
    model = td.DAECond(d, hidden)
    if perturb:  # move off the zero-initialised time MLP and skip, so every gradient path is exercised
        with torch.no_grad():
            model.time_mlp[2].weight.normal_(0, 0.3), model.time_mlp[2].bias.normal_(0, 0.3), model.skip.fill_(0.2)
    return model


def test_initial_model_is_the_tied_dae_with_unit_time_scale():
    model = _model(perturb=False)
    x, sigma = torch.randn(4, 64), torch.full((4, 1), 0.5)
    W = model.encoder.weight
    torch.testing.assert_close(model.time_scale(sigma), torch.ones(4, 16))
    torch.testing.assert_close(model(x, sigma), torch.relu(x @ W.t()) @ W)     # skip starts at 0
    assert model.represent(x).shape == (4, 16) and (model.represent(x) >= 0).all()


def test_encoder_init_is_kaiming_uniform_fan_in():
    torch.manual_seed(0)
    W = td.DAECond(1024, 256).encoder.weight
    bound = np.sqrt(2.0) * np.sqrt(3.0 / 1024)                                 # gain(relu) * sqrt(3 / fan_in)
    assert W.abs().max() <= bound and W.abs().max() > 0.95 * bound


def test_hand_gradients_equal_autograd():
    model = _model()
    x0 = torch.randn(8, 64) * 0.5
    sigma = td._sample_sigma(8, td.MEM_CONFIG)
    x_t = x0 + sigma * torch.randn_like(x0)
    loss = nn.MSELoss()(model(x_t, sigma), x0)
    loss.backward()
    hand_loss, grads = td.diffusion_grads(model, x0, x_t, sigma)
    torch.testing.assert_close(hand_loss, loss.detach())
    assert set(grads) == {name for name, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, msg=name)


@pytest.mark.parametrize("transpose", ["none", "a", "b"])
def test_matmul_is_an_fp32_product_as_accurate_as_torch_mm(transpose):
    torch.manual_seed(0)
    a, b = torch.randn(96, 300), torch.randn(300, 40)
    if transpose == "a":
        a = a.t().contiguous().t()                     # strided operands, as the trainer passes them
    if transpose == "b":
        b = b.t().contiguous().t()
    exact = a.double() @ b.double()
    err = float((td.matmul(a, b).double() - exact).abs().max())
    err_mm = float((torch.mm(a, b).double() - exact).abs().max())
    err_bf16 = float(((a.bfloat16() @ b.bfloat16()).double() - exact).abs().max())
    assert td.matmul(a, b).dtype == torch.float32
    assert err < 4 * err_mm + 1e-6 and err < err_bf16 / 100     # fp32 rounding, not a reduced precision


def test_matmul_takes_the_onednn_path_where_torch_has_onednn():
    # the trainer's speed on AMD CPUs comes from this path; a torch build without it falls back to `mm`
    assert td._ONEDNN_LINEAR == torch.backends.mkldnn.is_available()


def test_bf16_matmul_mode_gives_the_fp32_gradients_to_bf16_precision():
    model = _model(d=256, hidden=64)
    x0 = torch.randn(32, 256) * 0.5
    sigma = td._sample_sigma(32, td.MEM_CONFIG)
    x_t = x0 + sigma * torch.randn_like(x0)
    loss32, g32 = td.diffusion_grads(model, x0, x_t, sigma)
    loss16, g16 = td.diffusion_grads(model, x0, x_t, sigma, matmul_dtype=torch.bfloat16)
    assert abs(float(loss16) / float(loss32) - 1) < 0.01
    for name in g32:
        rel = float((g16[name] - g32[name]).norm() / g32[name].norm())
        assert 0 < rel < 0.03, (name, rel)            # differs (bf16 did run), by bf16 rounding only


def test_sigma_is_log_uniform_on_the_training_range():
    torch.manual_seed(0)
    s = td._sample_sigma(200_000, td.MEM_CONFIG).log().squeeze(1)
    assert s.min() >= np.log(0.02) and s.max() <= np.log(2.0)
    assert abs(float(s.mean()) - (np.log(0.02) + np.log(2.0)) / 2) < 0.01      # uniform in log σ
    assert abs(float(s.std()) - (np.log(2.0) - np.log(0.02)) / np.sqrt(12)) < 0.01


def test_batches_are_shuffled_epochs_without_repeats():
    torch.manual_seed(0)
    batches = td._Batches(10, 3)
    epoch = torch.cat([batches.next() for _ in range(3)])                       # drop_last: 3 batches of 3
    assert len(set(epoch.tolist())) == 9
    with pytest.raises(ValueError, match="batch_size 11"):
        td._Batches(10, 11)


def test_full_batch_is_every_image_each_step_in_a_new_order():
    # the official Mem loop: DataLoader(batch_size=len(dataset), shuffle=True), one epoch per step
    torch.manual_seed(0)
    batches = td._Batches(5, None)
    orders = [batches.next().tolist() for _ in range(10)]
    assert all(sorted(order) == [0, 1, 2, 3, 4] for order in orders)
    assert len({tuple(order) for order in orders}) > 1


@pytest.mark.parametrize("cfg", [replace(td.GEN_CONFIG, steps=40, batch_size=128),
                                 replace(td.MEM_CONFIG, steps=40)], ids=["gen-adam", "mem-rmsprop"])
def test_fast_trainer_follows_the_official_style_loop(cfg):
    x = torch.rand(300 if cfg.batch_size else 5, 64) * 2 - 1
    torch.manual_seed(1); ours = td.DAECond(64, 16)
    torch.manual_seed(1); ref = td.DAECond(64, 16)
    td.train_diffusion(ours, x, cfg, progress=False)
    td.reference_train_diffusion(ref, x, cfg)
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-4, msg=name)


def test_fast_trainer_is_deterministic_and_learns():
    x = torch.rand(512, 64) * 2 - 1
    cfg = replace(td.GEN_CONFIG, steps=150, batch_size=128, lr=1e-3)
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        model = td.DAECond(64, 16)
        runs.append((td.train_diffusion(model, x, cfg, progress=False, log_every=50), model.encoder.weight.clone()))
    assert runs[0][0]["losses"] == runs[1][0]["losses"] and torch.equal(runs[0][1], runs[1][1])
    assert runs[0][0]["losses"][-1] < runs[0][0]["losses"][0]


def test_sigma_schedule_and_bad_sampler_settings():
    s = td.sigma_schedule(2.0, 0.02, 60)
    assert len(s) == 61 and s[0] == 2.0 and s[-1] == 0.0
    k = np.array([15, 30, 45])
    np.testing.assert_allclose(s[k], 2.0 * 0.01 ** (k / 59))                   # geometric: ratio 0.01^(1/59)
    assert np.round(s[k], 2).tolist() == [0.62, 0.19, 0.06]                      # the official figure's columns
    with pytest.raises(ValueError, match="steps=0"):
        td.sigma_schedule(2.0, 0.02, 0)
    with pytest.raises(ValueError, match="sigma_min=2.0, sigma_max=0.5"):
        td.sigma_schedule(0.5, 2.0, 10)
    with pytest.raises(ValueError, match="sigma_min=0.0"):
        td.sigma_schedule(2.0, 0.0, 10)


class _Oracle(nn.Module):
    """x̂0 = a fixed image, whatever the input: the reverse process must end exactly on it."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def forward(self, x_t, sigma):
        return self.target.expand_as(x_t)


def test_sampler_lands_on_the_denoisers_target_and_keeps_the_trajectory():
    target = torch.linspace(-0.9, 0.9, 64)
    x, traj = td.ve_sample(_Oracle(target), 3, steps=20, seed=0, keep_every=5, d=64)
    torch.testing.assert_close(x, target.expand(3, 64))                        # last step returns x̂0
    assert [round(s, 3) for s, _ in traj][:1] == [2.0] and traj[-1][0] == 0.0 and len(traj) == 5
    assert all(xs.abs().max() <= 1.0 for s, xs in traj[1:])                    # clamped after each step
    x2, _ = td.ve_sample(_Oracle(target), 3, steps=20, seed=0, d=64)
    torch.testing.assert_close(x, x2)


def test_checkpoint_round_trip_and_shape_mismatch(tmp_path):
    model = _model()
    td.save_model(model, tmp_path / "m.safetensors", {"train_seconds": 2.0})
    loaded, meta = td.load_model(tmp_path / "m.safetensors", d=64, hidden=16)
    assert meta == {"train_seconds": 2.0}
    for a, b in zip(model.parameters(), loaded.parameters()):
        assert torch.equal(a, b)
    torch.save(model.state_dict(), tmp_path / "Diffusion_sample_5.pth")           # the official format
    official, _ = td.load_model(tmp_path / "Diffusion_sample_5.pth", d=64, hidden=16)
    assert torch.equal(official.encoder.weight, model.encoder.weight)
    with pytest.raises(ValueError, match="do not match the config"):
        td.load_model(tmp_path / "m.safetensors", d=64, hidden=32)


def test_train_or_load_reuses_only_an_identical_config(tmp_path):
    x = torch.rand(5, 64) * 2 - 1
    cfg = replace(td.MEM_CONFIG, steps=20)
    m1, i1 = td.train_or_load(x, cfg, hidden=16, cache_dir=tmp_path, progress=False)
    m2, i2 = td.train_or_load(x, cfg, hidden=16, cache_dir=tmp_path, progress=False)
    assert not i1["cached"] and i2["cached"] and torch.equal(m1.encoder.weight, m2.encoder.weight)
    _, i3 = td.train_or_load(x, replace(cfg, sigma_max=1.0), hidden=16, cache_dir=tmp_path, progress=False)
    assert not i3["cached"]
