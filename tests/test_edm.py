"""The EDM testbed: EDM's preconditioning, loss and sampler against the paper's equations (and diffusers' own
EDM schedule), the copy criterion against brute force, the data and cache, and the two prompt-free detectors
(std, LID in its VE form) against their recipes written out."""
import math

import numpy as np
import pytest
import torch

from common.testbeds import copies, edm_testbed
from common import detectors
from common.models import edm, representations as reps
from common.detectors import lid


class RecordingUNet(torch.nn.Module):
    """Stands in for F: returns a fixed map of its input and records the c_noise it is given."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(0.3))
        self.seen_noise = None

    def forward(self, x, c_noise):
        self.seen_noise = c_noise
        return type("Out", (), {"sample": torch.tanh(x) * self.weight})()


def test_preconditioning_is_eq7_with_edm_table1_coefficients():
    unet = RecordingUNet()
    denoiser = edm.EDMDenoiser(unet)
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.01, 0.5, 20.0])
    out = denoiser(x, sigma)
    for i, s in enumerate(sigma.tolist()):
        sd = 0.5
        c_skip, c_out, c_in = sd**2 / (s**2 + sd**2), s * sd / math.sqrt(s**2 + sd**2), 1 / math.sqrt(s**2 + sd**2)
        expected = c_skip * x[i] + c_out * torch.tanh(c_in * x[i]) * 0.3
        torch.testing.assert_close(out[i], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(unet.seen_noise, sigma.log() / 4)


def test_loss_is_lambda_weighted_denoising_error_at_log_normal_sigma():
    denoiser = edm.EDMDenoiser(RecordingUNet())
    y = torch.rand(4, 2, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    loss = edm.edm_loss(denoiser, y, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)                                    # the same draws, by hand
    sigma = (-1.2 + 1.2 * torch.randn(4, generator=g)).exp()
    n = torch.randn(y.shape, generator=g) * sigma.reshape(-1, 1, 1, 1)
    weight = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    expected = weight * ((denoiser(y + n, sigma) - y) ** 2).flatten(1).mean(dim=1)
    torch.testing.assert_close(loss, expected)


def test_sigma_steps_match_diffusers_edm_karras_schedule():
    from diffusers import EDMEulerScheduler

    ours = edm.karras_sigmas(18)
    scheduler = EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, rho=7.0, sigma_schedule="karras")
    scheduler.set_timesteps(18)
    np.testing.assert_allclose(ours.numpy(), scheduler.sigmas.double().numpy(), rtol=1e-5)
    assert ours[0] == pytest.approx(80.0) and ours[-2] == pytest.approx(0.002) and ours[-1] == 0
    with pytest.raises(ValueError, match="num_steps must be >= 1, got 0"):
        edm.karras_sigmas(0)


class GaussianDenoiser(torch.nn.Module):
    """The exact D(x; σ) = s²/(s² + σ²) x for data N(0, s² I): the probability-flow ODE has the closed form
    x(σ) = x(σ_max) sqrt(s² + σ²) / sqrt(s² + σ_max²)."""

    def __init__(self, s=0.5):
        super().__init__()
        self.s, self.p = s, torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, sigma):
        return self.s**2 / (self.s**2 + float(sigma) ** 2) * x


def test_heun_sampler_solves_the_probability_flow_ode_to_second_order():
    x_T = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    expected = x_T * 80.0 * 0.5 / math.sqrt(0.25 + 80.0**2)
    errors = [float(((edm.heun_sample(GaussianDenoiser(), x_T, n) - expected).abs() / expected.abs()).max())
              for n in (18, 36, 72, 288)]
    assert errors[0] < 0.06 and errors[-1] < 2e-4
    assert 3.5 < errors[0] / errors[1] < 4.6 and 3.5 < errors[1] / errors[2] < 4.6   # halving the step: error / 4


def test_denoiser_folder_round_trip_and_clear_errors(tmp_path):
    config = edm_testbed.SMOKE_CONFIG
    denoiser = edm_testbed.build_denoiser(config).eval()
    denoiser.save_pretrained(tmp_path / "model")
    loaded = edm.EDMDenoiser.from_pretrained(tmp_path / "model")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded(x, 0.3), denoiser(x, 0.3))
    assert edm.is_edm_folder(tmp_path / "model") and not edm.is_edm_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="not an EDM denoiser folder"):
        edm.EDMDenoiser.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="outside the EDM model's noise range"):
        edm.noise_level_check(100.0)


# ----------------------------------------------------------------------------------------------------
# The copy criterion
# ----------------------------------------------------------------------------------------------------
def test_calibrated_l2_against_brute_force_and_its_leave_one_out_false_copy_rate():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(30, 12))
    train[1] = train[0] + 0.01 * rng.normal(size=12)                     # a near-duplicate pair
    samples = np.concatenate([train[5:7] + 0.001, rng.normal(size=(3, 12))])
    ratio, nearest = copies.calibrated_l2(samples, train)
    d = np.linalg.norm(samples[:, None] - train[None], axis=2)
    dt = np.linalg.norm(train[:, None] - train[None], axis=2)
    np.fill_diagonal(dt, np.inf)
    np.testing.assert_array_equal(nearest, d.argmin(axis=1))
    np.testing.assert_allclose(ratio, d.min(axis=1) / dt.min(axis=1)[nearest], rtol=1e-8)
    assert ratio[:2].max() < 0.01 and ratio[2:].min() > 0.8                # copies pass, fresh draws do not

    rate = copies.calibrated_l2_false_copy_rate(train)
    loo = []                                                            # the criterion with image i left out
    for i in range(len(train)):
        others = np.delete(train, i, axis=0)
        r, _ = copies.calibrated_l2(train[i:i + 1], others)
        loo.append(r[0])
    assert rate["false_copy_rate"] == pytest.approx(np.mean(np.array(loo) < 0.8))
    assert rate["false_copy_rate"] >= 2 / 30                              # the planted pair calls each other copies
    with pytest.raises(ValueError, match="identical"):
        copies.calibrated_l2(samples, np.concatenate([train, train[:1]]))


# ----------------------------------------------------------------------------------------------------
# Data and cache
# ----------------------------------------------------------------------------------------------------
def test_data_is_deterministic_natural_crops_with_planted_duplicates():
    config = edm_testbed.SMOKE_CONFIG.data
    a, b = edm_testbed.build_data(config), edm_testbed.build_data(config)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.images.shape == (40 + 2 + 4, 16, 16, 3) and a.images.dtype == np.uint8      # the SMOKE config's 16x16
    assert len(a.train_rows) == 40 + 2 * 5 + 2 * (1 + 2)
    assert a.images.std() > 20                                           # photographs, not flat fields
    with pytest.raises(ValueError, match="unknown data source 'cifar10'"):
        edm_testbed.EDMDataConfig(source="cifar10")
    with pytest.raises(ValueError, match="sample_size 32 differs from the data's resolution 16"):
        edm_testbed.EDMTestbedConfig(data=config)                        # the default 32x32 UNet on 16x16 data
    with pytest.raises(ValueError, match="duplication count must be >= 1, got 0"):
        edm_testbed.EDMDataConfig(duplication=0)


def test_smoke_testbed_trains_caches_and_retrains_on_a_changed_config(tmp_path):
    folder = edm_testbed.ensure_edm_testbed(edm_testbed.SMOKE_CONFIG, progress=False, root=tmp_path)
    assert edm_testbed.is_edm_testbed(folder)
    stamp = (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert edm_testbed.ensure_edm_testbed(edm_testbed.SMOKE_CONFIG, progress=False, root=tmp_path) == folder
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp   # reused
    info = edm_testbed.read_info(folder)
    info["config"]["steps"] = 999                                        # a folder whose record disagrees
    (folder / "testbed.json").write_text(__import__("json").dumps(info))
    edm_testbed.ensure_edm_testbed(edm_testbed.SMOKE_CONFIG, progress=False, root=tmp_path)
    assert edm_testbed.read_info(folder)["config"]["steps"] == 3          # retrained, not reused

    data = edm_testbed.load_data(folder)
    truth = edm_testbed.ground_truth(data.model_space()[data.indices("memorized")], data)
    assert truth["memorized"].all() and (truth["ratio"] < 1e-5).all()    # a training image copies itself
    dose = edm_testbed.dose_response(truth, data)
    assert dose[5]["samples_copying"] == 2 and dose[1]["samples_copying"] == 0


# ----------------------------------------------------------------------------------------------------
# The prompt-free detectors on an EDM model
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_denoiser():
    return edm_testbed.build_denoiser(edm_testbed.SMOKE_CONFIG).eval()


def test_std_detector_on_edm_is_the_recipe_written_out(smoke_denoiser):
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    scores = detectors.get("std").score(smoke_denoiser, detectors.Samples(images), batch_size=2)
    expected = []
    for i in range(3):
        n = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(i))
        seen = []
        block = smoke_denoiser.unet.up_blocks[0].resnets[2]
        handle = block.nonlinearity.register_forward_hook(lambda m, a, o: seen.append(o))
        with torch.no_grad():
            smoke_denoiser(images[i:i + 1] + 0.17 * n, 0.17)
        handle.remove()
        h = seen[-1].flatten(2).amax(dim=2)                                # last call, spatial max: [1, C]
        expected.append(float(h.double().std(unbiased=False)))
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="outside the EDM model's noise range"):
        reps.extract_edm_representations(smoke_denoiser, images, sigma=0.0)


class LinearDenoiser(torch.nn.Module):
    """D(x) = A x (flattened): tr(∂D/∂x) = tr(A) exactly."""

    def __init__(self, d, seed=0):
        super().__init__()
        self.A = torch.nn.Parameter(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)) / math.sqrt(d))

    def forward(self, x, sigma):
        return (x.flatten(1) @ self.A.T).reshape(x.shape)


def test_lid_ve_form_on_a_linear_denoiser():
    model = LinearDenoiser(12)
    x = torch.randn(3, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    fn = lambda rows, owner: model(rows, 0.05)                              # noqa: E731
    exact = lid.flipd_ve(fn, x, sigma=0.05, trace="exact")
    residual = ((model(x, 0.05) - x).flatten(1) ** 2).sum(dim=1).double()
    expected = float(torch.trace(model.A.detach()).double()) + residual.detach().numpy() / 0.05**2
    np.testing.assert_allclose(exact, expected, rtol=1e-6)
    many = lid.flipd_ve(fn, x, sigma=0.05, trace="hutchinson", probes=4000)
    np.testing.assert_allclose(many, exact, rtol=0.02)


def test_jacobian_spectrum_of_linear_denoisers_is_their_svd_rank_and_alignment():
    """D = A x: the singular values are A's; D = c I has effective rank D; D = u uᵀ x (rank one, u the
    mean-removed sample direction) has effective rank 1 and |cos(top vector, sample)| = 1 (App. B.3)."""
    model = LinearDenoiser(12)
    x = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(2))
    out = lid.jacobian_spectrum(lambda rows: model(rows, 0.1), x)
    expected = torch.linalg.svdvals(model.A.detach().double()).numpy()
    np.testing.assert_allclose(out["singular_values"], expected, rtol=1e-6)
    assert out["effective_rank"] == pytest.approx(expected.sum() ** 2 / (expected ** 2).sum(), rel=1e-9)
    scaled = lid.jacobian_spectrum(lambda rows: 0.5 * rows, x)
    assert scaled["effective_rank"] == pytest.approx(12.0)
    u = (x - x.mean()).flatten() / (x - x.mean()).norm()                                     # [12]
    rank_one = lid.jacobian_spectrum(lambda rows: ((rows.flatten(1) @ u)[:, None] * u).reshape(rows.shape), x)
    assert rank_one["effective_rank"] == pytest.approx(1.0, abs=1e-6)
    assert rank_one["top_vector_cos_with_sample"] == pytest.approx(1.0, abs=1e-6)


def test_sweep_auroc_scores_every_cell_and_its_table_lists_them():
    """A fake extractor whose Mem representations are spikier in layer "a" only: AUROC 1 there, 0.5 where the
    sets are identical; keys "layer|level|pooling", one extraction per set and level."""
    from common.detectors import std

    calls = []

    def extract(images, layers, level, poolings):
        calls.append((len(images), level))
        spiky = images[:, :1] * level                                                         # [N, 1]
        base = np.tile(np.linspace(0, 1, 8), (len(images), 1))                                 # [N, 8]
        return {"a": {p: base + np.c_[spiky, np.zeros((len(images), 7))] for p in poolings},
                "b": {p: base for p in poolings}}

    sets = {"Mem": np.full((4, 1), 10.0), "Gen": np.zeros((5, 1))}
    sweep = std.sweep_auroc(extract, sets, ["a", "b"], [1, 2], ["max", "mean"])
    assert list(sweep) == [f"{layer}|{level}|{p}" for level in (1, 2) for layer in "ab" for p in ("max", "mean")]
    assert all(sweep[f"a|{level}|{p}"] == 1.0 for level in (1, 2) for p in ("max", "mean"))
    assert all(sweep[f"b|{level}|{p}"] == 0.5 for level in (1, 2) for p in ("max", "mean"))
    assert calls == [(4, 1), (5, 1), (4, 2), (5, 2)]
    table = std.sweep_table(sweep, ["a", "b"], [1, 2], ["max", "mean"], level_name="t").splitlines()
    assert len(table) == 5 and table[0].split() == ["layer", "t", "max", "mean"]
    assert table[1].split() == ["a", "1", "1.000", "1.000"]


def test_lid_detector_on_edm_scores_minus_flipd_and_refuses_a_prompt(smoke_denoiser):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    scores = detectors.get("lid").score(smoke_denoiser, detectors.Samples(images), trace="hutchinson")
    fn = lambda rows, owner: smoke_denoiser(rows, lid.EDM_SIGMA0)           # noqa: E731
    np.testing.assert_allclose(scores, -lid.flipd_ve(fn, images, lid.EDM_SIGMA0, trace="hutchinson"), rtol=1e-6)
    with pytest.raises(ValueError, match="no prompt"):
        lid.lid_score(smoke_denoiser, detectors.Samples(images, prompts=["a", "b"]), conditional=True)
    assert lid.EDM_SIGMA0 == pytest.approx(0.0447, abs=1e-4)


# ----------------------------------------------------------------------------------------------------
# The real-model path: a public DDPM (ε-prediction, discrete linear β) as a VE denoiser
# ----------------------------------------------------------------------------------------------------
def small_ddpm(seed=0):
    """A DDPM UNet of the CIFAR10 model's block layout at a tenth of its width, with diffusers' DDPM scheduler."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(**{**edm.DDPM_CIFAR10_UNET_CONFIG, "block_out_channels": (16, 32, 32, 32), "norm_num_groups": 8})
    return unet.eval(), DDPMScheduler(**edm.DDPM_SCHEDULE, clip_sample=False)


def test_vp_denoiser_is_ddpms_predicted_clean_image_in_ve_coordinates():
    """At σ = σ(t) of an integer step, D(x_σ; σ) must equal diffusers' own x̂_0 (DDPMScheduler.step's
    pred_original_sample) at the VP point x_t = sqrt(ᾱ_t) x_σ; between steps t(σ) interpolates ln σ."""
    unet, scheduler = small_ddpm()
    denoiser = edm.VPDenoiser(unet, scheduler.alphas_cumprod)
    abar = scheduler.alphas_cumprod.double()
    sigma_of = lambda t: float(((1 - abar[t]) / abar[t]).sqrt())           # noqa: E731
    assert denoiser.sigma_min == pytest.approx(sigma_of(0), rel=1e-5)
    assert denoiser.sigma_max == pytest.approx(sigma_of(999), rel=1e-5) and 150 < denoiser.sigma_max < 160
    steps = torch.tensor([0, 17, 250, 999])
    sigmas = torch.tensor([sigma_of(t) for t in steps.tolist()])
    torch.testing.assert_close(denoiser.sigma_to_t(sigmas), steps.float(), atol=2e-3, rtol=0)
    mid = torch.tensor([math.sqrt(sigma_of(40) * sigma_of(41))])               # halfway in ln σ
    torch.testing.assert_close(denoiser.sigma_to_t(mid), torch.tensor([40.5]), atol=2e-3, rtol=0)

    x_sigma = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for t in (17, 250):
        x_t = x_sigma * abar[t].sqrt().float()
        with torch.no_grad():
            eps = unet(x_t, torch.tensor(t)).sample
            expected = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(0)).pred_original_sample
            got = denoiser(x_sigma, sigma_of(t))
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="outside the VPDenoiser model's noise range"):
        edm.noise_level_check(200.0, denoiser)


@pytest.mark.parametrize("layout", ["pipeline", "bare"])
def test_ddpm_cifar10_config_with_random_weights_runs_both_detectors(tmp_path, layout):
    """google/ddpm-cifar10-32's exact UNet config (random weights), saved as diffusers writes it: DDPMPipeline's
    folder (unet/, scheduler/) or the UNet's and scheduler's files side by side. The std detector hooks
    up_blocks.0.resnets.2 at 4x4 with 256 channels; LID runs at σ₀."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(**edm.DDPM_CIFAR10_UNET_CONFIG).eval()
    assert 35e6 < sum(p.numel() for p in unet.parameters()) < 36.5e6           # the published model: 35.7 M
    scheduler = DDPMScheduler(**edm.DDPM_SCHEDULE)
    if layout == "pipeline":
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path)
    else:
        unet.save_pretrained(tmp_path), scheduler.save_pretrained(tmp_path)
    denoiser = edm.load_denoiser(tmp_path)
    assert isinstance(denoiser, edm.VPDenoiser)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    rep = reps.extract_edm_representations(denoiser, images, poolings=["spatial_max"])[reps.DETECTION_LAYER]["spatial_max"]
    assert rep.shape == (2, 256)
    std = detectors.get("std").score(denoiser, detectors.Samples(images))
    np.testing.assert_allclose(std, rep.astype(np.float64).std(axis=1), rtol=1e-5)
    scores = detectors.get("lid").score(denoiser, detectors.Samples(images), trace="hutchinson")
    assert np.isfinite(scores).all() and scores.shape == (2,)


def test_load_denoiser_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an EDM denoiser"):
        edm.load_denoiser(tmp_path)
    with pytest.raises(FileNotFoundError, match="huggingface-cli download"):          # offline, not cached
        edm.load_denoiser("nobody-here/not-a-model")
    unet, _ = small_ddpm()
    unet.save_pretrained(tmp_path / "v")
    from diffusers import DDPMScheduler
    DDPMScheduler(**edm.DDPM_SCHEDULE, prediction_type="v_prediction").save_pretrained(tmp_path / "v")
    with pytest.raises(ValueError, match="only ε-prediction"):
        edm.load_denoiser(tmp_path / "v")


def test_open_model_runs_a_public_model_with_its_training_images(tmp_path, monkeypatch):
    """The notebook's MODEL + TRAIN_IMAGES path: a DDPM folder, its images as .npy or a folder of PNGs; samples
    cached under the model's name; missing or malformed training images are refused with the fix."""
    from PIL import Image

    unet, scheduler = small_ddpm()
    unet.save_pretrained(tmp_path / "ddpm"), scheduler.save_pretrained(tmp_path / "ddpm")
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "train.npy", images)
    (tmp_path / "pngs").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / "pngs" / f"{i:03d}.png")
    for source in (tmp_path / "train.npy", tmp_path / "pngs"):
        denoiser, data, info = edm_testbed.open_model(tmp_path / "ddpm", source)
        assert isinstance(denoiser, edm.VPDenoiser) and info["train_seconds"] is None and info["label"] == "ddpm"
        np.testing.assert_array_equal(data.images, images)
        assert list(data.indices("unique")) == [0, 1, 2, 3, 4] and (data.duplication == 1).all()
    monkeypatch.setattr("common.plumbing.paths.GENERATION_CACHE", tmp_path / "generations")
    samples, _ = edm_testbed.cached_samples(info["model"], 2, num_steps=2, progress=False)
    assert samples.shape == (2, 3, 32, 32) and (tmp_path / "generations" / "ddpm-heun2-seed0" / "samples.npz").is_file()
    truth = edm_testbed.ground_truth(samples, data)
    assert truth["ratio"].shape == (2,)
    cache = tmp_path / "generations" / "ddpm-heun2-seed0" / "samples.npz"
    cache.write_bytes(cache.read_bytes()[:100])                                # damaged: regenerated, same samples
    again, _ = edm_testbed.cached_samples(info["model"], 2, num_steps=2, progress=False)
    torch.testing.assert_close(again, samples)
    assert len(list(cache.parent.glob("samples.npz.corrupt-*"))) == 1
    with pytest.raises(ValueError, match="TRAIN_IMAGES"):
        edm_testbed.open_model(tmp_path / "ddpm")
    np.save(tmp_path / "bad.npy", images[:, :16])
    with pytest.raises(ValueError, match=r"uint8 \[N, 32, 32, 3\]"):
        edm_testbed.open_model(tmp_path / "ddpm", tmp_path / "bad.npy")


@pytest.mark.slow
def test_default_edm_testbed_trained_from_scratch_memorizes_its_duplicates_only(tmp_path):
    """The ground truth the CIFAR10 column rests on (≈ 10 min training + 30 s sampling on 2 cores)."""
    folder = edm_testbed.ensure_edm_testbed(edm_testbed.EDMTestbedConfig(), progress=False, root=tmp_path)
    data = edm_testbed.load_data(folder)
    samples = edm.generate(edm.EDMDenoiser.from_pretrained(folder), range(300))
    truth = edm_testbed.ground_truth(samples, data)
    dose = edm_testbed.dose_response(truth, data)
    # measured at the default config: 37 of 200 samples copy, 36 of them a crop trained 150 times (8 of 10 copied);
    # 1 copies a crop seen once; the criterion calls 6.4 % of distinct crops copies of another (crowded photos)
    assert dose[150]["samples_copying"] >= 30                          # the planted duplicates are reproduced
    assert dose[150]["images_copied"] >= 0.6
    assert dose[1]["samples_copying"] <= 6                              # crops seen once are (almost) never copied
    assert (~truth["memorized"]).sum() >= 150                           # and most samples are new
    assert edm_testbed.criterion_false_copy_rate(data)["false_copy_rate"] < 0.1
