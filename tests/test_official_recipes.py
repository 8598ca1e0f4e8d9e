"""The detectors' recipes as their official code has them, each written out step by step here
and compared with ours on tiny models:

NeMo      ml-research/localizing_memorization_in_diffusion_models, `utils/activation_detection.py`:
          `prepare_diffusion_inputs`, `compute_noise_diff`, `calculate_max_pairwise_ssim` (MS-SSIM, no data_range)
LID       layer6ai-labs/flipd, `models/diffusions/sdes/utils.py::compute_trace_of_jacobian` (Hutchinson probes
          by batch position) and `lid/diffusions/fokker_planck.py::FlipdEstimator` (on SD, and on an EDM denoiser
          through their VP SDE)
"""
import math

import numpy as np
import pytest
import torch
from test_representations import random_images

from common import detectors
from common.detectors import scores
from common.detectors import lid, nemo
from common.plumbing.results import config_key

ms_ssim = pytest.importorskip("torchmetrics.functional.image").multiscale_structural_similarity_index_measure


def text_embeddings(pipe, prompts):
    ids = pipe.tokenizer(list(prompts), padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    return pipe.text_encoder(ids)[0]                                             # [N, tokens, width]


# ----------------------------------------------------------------------------------------------------
# NeMo: memorization strength
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipe64(tiny_pipe):
    """The tiny pipeline's text encoder with a 64x64-latent UNet (SD v1.4's latent side, so their MS-SSIM window
    11 with 3 scales applies): 8/16 channels, cross-attention only, cheap on a CPU."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from common.models.pipelines import TINY_UNET_CONFIG

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**{
        **TINY_UNET_CONFIG, "sample_size": 64, "block_out_channels": (8, 16), "norm_num_groups": 8,
        "layers_per_block": 1, "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "only_cross_attention": True}).eval()
    pipe = StableDiffusionPipeline(vae=tiny_pipe.vae, text_encoder=tiny_pipe.text_encoder,
                                   tokenizer=tiny_pipe.tokenizer, unet=unet,
                                   scheduler=DDIMScheduler.from_config(tiny_pipe.scheduler.config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def their_noise_diff(pipe, prompt, samples_per_prompt, seed=1, num_inference_steps=50, early_stopping=1):
    """`compute_noise_diff([prompt], ..., guidance_scale=0)`, step by step."""
    from diffusers import DDIMScheduler

    side, channels = pipe.unet.config.sample_size, pipe.unet.config.in_channels
    with torch.random.fork_rng():                                              # their call reseeds the global RNG
        generator = torch.manual_seed(seed)                                    # prepare_diffusion_inputs
        latents = torch.randn((samples_per_prompt, channels, side, side), generator=generator)
    embeddings = text_embeddings(pipe, [prompt] * samples_per_prompt)
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(num_inference_steps)
    for i, t in enumerate(scheduler.timesteps):                                # no scheduler.step: x_T stays
        if i < early_stopping and i != num_inference_steps - 1:
            continue                                                           # they run the UNet here too, unused
        noise_pred = pipe.unet(scheduler.scale_model_input(latents, t), t, encoder_hidden_states=embeddings,
                               return_dict=False)[0]
        if i >= early_stopping or i == num_inference_steps - 1:
            noise_diff = noise_pred - latents
            low, high = noise_diff.amin(dim=[2, 3]), noise_diff.amax(dim=[2, 3])
            return (noise_diff - low[..., None, None]) / (high - low)[..., None, None]


def their_max_pairwise_ssim(noise_diffs):
    """`calculate_max_pairwise_ssim`: every seed's largest SSIM with another (no data_range passed)."""
    pairs = torch.combinations(torch.arange(len(noise_diffs)), r=2)
    ssim = ms_ssim(noise_diffs[pairs[:, 0]], noise_diffs[pairs[:, 1]], reduction="none", kernel_size=11,
                   betas=(0.33, 0.33, 0.33))
    return torch.stack([ssim[(pairs == index).max(-1).values].max() for index in range(len(noise_diffs))])


def test_nemo_ssim_with_official_seeds_is_their_memorization_strength(pipe64):
    prompts, n_seeds = ["a red square", "a blue circle"], 4
    diffs = [their_noise_diff(pipe64, p, n_seeds) for p in prompts]                         # each [4, 4, 64, 64]
    expected = [float(their_max_pairwise_ssim(d).max()) for d in diffs]
    samples = detectors.Samples(random_images(2), prompts)                                   # no seeds needed
    ours = detectors.get("nemo-ssim").score(pipe64, samples, seeds="official", n_seeds=n_seeds)
    np.testing.assert_allclose(ours, expected, rtol=1e-4)
    assert nemo.ssim_settings(64) == nemo.OFFICIAL_SSIM
    # the data range matters: fixed at 1.0 every scale keeps more contrast, so the scores are far higher
    fixed = [nemo.max_pairwise_ssim(d, nemo.OFFICIAL_SSIM, data_range=1.0) for d in diffs]
    assert all(f > 1.3 * e for f, e in zip(fixed, expected)), (fixed, expected)
    # data_range=1.0 is the former behaviour: each pair on its own with data_range=1.0
    old = [max(float(ms_ssim(d[i:i + 1], d[j:j + 1], kernel_size=11, betas=(0.33, 0.33, 0.33), data_range=1.0))
               for i in range(n_seeds) for j in range(i + 1, n_seeds)) for d in diffs]
    np.testing.assert_allclose(fixed, old, rtol=1e-5)


def test_nemo_ssim_seed_schemes_and_the_recipe_they_record(tiny_pipe):
    noise = nemo.official_initial_noise(3, (4, 64, 64))
    with torch.random.fork_rng():
        torch.testing.assert_close(noise, torch.randn((3, 4, 64, 64), generator=torch.manual_seed(1)))
    # per-image (default) x_T are the images' own seeds; official: the same x_T for every prompt
    per_image = nemo.noise_differences(tiny_pipe, ["a red square"], [[7, 8, 9]], batch_size=2)
    shared = nemo.noise_differences(tiny_pipe, ["a red square"], initial_noise=torch.stack(
        [torch.randn((4, 16, 16), generator=torch.Generator().manual_seed(s)) for s in (7, 8, 9)]))
    torch.testing.assert_close(per_image, shared, rtol=1e-5, atol=1e-6)
    samples = detectors.Samples(random_images(2), ["a red square", "a red square"], [3, 4])
    official = detectors.get("nemo-ssim").score(tiny_pipe, samples, seeds="official", n_seeds=3)
    assert official[0] == official[1]                                          # same prompt, same x_T
    assert detectors.get("nemo-ssim").score(tiny_pipe, samples, n_seeds=3)[0] != official[0]

    detector = detectors.get("nemo-ssim")
    assert detector.options == {"seeds": "per-image", "data_range": None}
    assert (nemo.SSIM_SEED_SCHEME, nemo.SSIM_DATA_RANGE) == ("per-image", None)
    assert "data_range=None" in detector.description and "'per-image'" in detector.description
    recipe = nemo.ssim_recipe(**detector.options, side=64)
    assert recipe["seeds"] == "per-image" and recipe["data_range"] is None and recipe["official_window"]
    assert "seeding with 1" in nemo.ssim_recipe("official")["x_T"]
    with pytest.raises(ValueError, match="seeds must be one of"):
        detector.score(tiny_pipe, detectors.Samples(random_images(1), ["a"], [0]), seeds="theirs")
    with pytest.raises(ValueError, match="data_range must be None"):
        detector.score(tiny_pipe, detectors.Samples(random_images(1), ["a"], [0]), data_range=0)


def test_nemo_ssim_cache_key_changes_with_the_default_data_range(tmp_path):
    """Scores cached under the former default (data_range=1.0, no version in the key) must not be reused: the key
    (scores._record) has to carry `Detector.cache_version`, which NEMO_SSIM sets."""
    import json

    (tmp_path / "generation.json").write_text(json.dumps({"model": "tiny", "num_inference_steps": 50}))
    former = f"nemo-ssim-{config_key({'detector': 'nemo-ssim', 'options': {}, 'model': 'tiny'})}"
    now = scores.score_stem(tmp_path, "nemo-ssim")
    assert now != former, ("scores._record does not put Detector.cache_version into the key: a nemo-ssim score "
                           "cached with data_range=1.0 would be read as one with the inferred range")
    assert scores.score_stem(tmp_path, "nemo-ssim", {"data_range": 1.0}) not in (now, former)
    assert scores.score_stem(tmp_path, "nemo-ssim", {"data_range": None, "seeds": "per-image"}) == now
    assert scores.score_stem(tmp_path, "nemo-ssim", {"seeds": "official"}) != now
    # a detector without a version keeps its key
    lid_record = {"detector": "lid", "options": {}, "model": "tiny"}
    assert scores.score_stem(tmp_path, "lid") == f"lid-{config_key(lid_record)}"
    assert scores.score_stem(tmp_path, "lid", {"probe_scheme": "per-position"}) != scores.score_stem(tmp_path, "lid")


# ----------------------------------------------------------------------------------------------------
# LID: their Hutchinson probes
# ----------------------------------------------------------------------------------------------------
def double_vjp_jvp(fn, primals, tangents):
    """(fn(x), J v) by reverse mode twice (`torch.autograd.functional.jvp`): where torch's forward mode fails (on
    the CPU, torch 2.13's group_norm forward-mode formula breaks on the non-contiguous tangent that the mid-block
    attention of a `UNet2DModel` hands it), the same J v as `torch.func.jvp`."""
    return torch.autograd.functional.jvp(fn, primals, tangents)


def their_trace(fn, x, sample_count=1, seed=42, chunk_size=128, jvp=torch.func.jvp):
    """`compute_trace_of_jacobian(fn, x, method="hutchinson_gaussian")`, step by step."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        batch_size, data_shape = x.shape[0], x.shape[1:]
        all_v = torch.randn(size=(batch_size * sample_count, *data_shape)).cpu().float()
        all_x = x.cpu().unsqueeze(0).repeat(sample_count, *[1] * x.dim()).reshape(batch_size * sample_count,
                                                                                    *data_shape)
        forms = []
        with sdpa_kernel(SDPBackend.MATH):                                     # their `_jvp_mode`: math attention
            for v_batch, x_batch in zip(all_v.split(chunk_size), all_x.split(chunk_size)):
                jv = jvp(fn, (x_batch,), (v_batch,))[1]
                forms.append(torch.sum(v_batch * jv, dim=tuple(range(1, x.dim()))).detach())
    return torch.cat(forms).reshape(sample_count, batch_size).mean(dim=0)


def test_per_position_probes_are_their_rows_on_a_network_with_known_jacobian():
    w = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0)) + 0.5
    fn = lambda y: w * torch.sin(y)                                            # noqa: E731  J = diag(w cos y)
    for batch, probes in ((8, 1), (3, 1), (8, 2), (3, 3)):
        y = torch.randn(batch, 3, 4, 4, generator=torch.Generator().manual_seed(batch))
        v = torch.randn((batch * probes, 3, 4, 4), generator=torch.Generator().manual_seed(42))
        v = v.reshape(probes, batch, 3, 4, 4)                                  # row s·B + b: probe s of sample b
        by_hand = (w * torch.cos(y) * v**2).flatten(2).sum(dim=2).double().mean(dim=0)
        ours = lid.hutchinson_trace(lambda rows, owner: fn(rows), y, probes, probe_scheme="per-position")
        torch.testing.assert_close(their_trace(fn, y, probes).double(), by_hand, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours, by_hand, rtol=1e-5, atol=1e-5)
        shared = lid.hutchinson_trace(lambda rows, owner: fn(rows), y, probes)
        same = lid.probe_vectors((3, 4, 4), batch, probes)                     # shared: one probe set for all
        assert all(torch.equal(same[:, b], same[:, 0]) for b in range(batch))
        if probes == 1:                                                        # only position 0 agrees
            torch.testing.assert_close(shared[0], ours[0], rtol=1e-6, atol=1e-6)
        assert not torch.allclose(shared[1:], ours[1:])
    with pytest.raises(ValueError, match="probe_scheme must be one of"):
        lid.flipd(lambda rows, owner: fn(rows), y, trace="hutchinson", probe_scheme="per-sample")


def test_lid_per_position_on_the_tiny_pipeline_is_their_flipd_in_batches_of_eight(tiny_pipe):
    pipe, images = tiny_pipe, random_images(10, seed=5)                        # batches of 8 and 2
    psi, sigma = lid.vp_coefficients()
    uncond = text_embeddings(pipe, [""])
    expected = []
    for start in (0, 8):
        with torch.no_grad():
            x = lid.latent_means(pipe, images[start:start + 8])                # [B, 4, 16, 16]
        emb = uncond.expand(len(x), -1, -1).detach()

        def score_net(y):                                                      # their σ·s = −ε
            return -pipe.unet(y, torch.tensor(10), encoder_hidden_states=emb[:len(y)]).sample

        laplacian = their_trace(score_net, psi * x)
        with torch.no_grad():
            norm = score_net(psi * x).flatten(1).pow(2).sum(dim=1)
        expected.append(-(x[0].numel() + sigma * laplacian + norm))
    expected = torch.cat(expected).double().numpy()
    lid_detector = detectors.get("lid")
    ours = lid_detector.score(pipe, detectors.Samples(images), trace="hutchinson", probe_scheme="per-position")
    np.testing.assert_allclose(ours, expected, rtol=1e-4)
    assert lid.OFFICIAL_BATCH_SIZE == 8 and lid_detector.options["probe_scheme"] == lid.PROBE_SCHEME == "shared"

    # the default gives every sample the same probe: images 0, 5, 8 in one batch, and image 5 alone
    shared = lid_detector.score(pipe, detectors.Samples(images[[0, 5, 8]]), trace="hutchinson")
    alone = lid_detector.score(pipe, detectors.Samples(images[5:6]), trace="hutchinson")
    np.testing.assert_allclose(alone, shared[1:2], rtol=1e-5)                 # independent of position and batch
    np.testing.assert_allclose(shared[[0, 2]], ours[[0, 8]], rtol=1e-5)       # theirs agrees at position 0 only
    assert abs(shared[1] - ours[5]) > 1e-3 * abs(ours[5])


# ----------------------------------------------------------------------------------------------------
# LID on an EDM denoiser: the Hutchinson estimate keeps the D − ‖v‖² of the score's divergence
# ----------------------------------------------------------------------------------------------------
def test_flipd_ve_hutchinson_on_an_affine_denoiser_is_the_formula_by_hand():
    """D(x) = a x + b: ∂D/∂x = a I, so vᵀJv = a‖v‖², tr = a·D, and FLIPD ≈ D + (a − 1)‖v‖² + ‖D(x) − x‖²/σ²."""
    a, sigma = 0.9, 0.05
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    b = 0.1 * torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    denoise = lambda rows, owner: a * rows + b                                # noqa: E731
    d = x[0].numel()
    residual = ((a - 1) * x + b).flatten(1).pow(2).sum(dim=1)
    for scheme, probes in (("shared", 1), ("per-position", 1), ("per-position", 3)):
        v = lid.probe_vectors((3, 8, 8), 3, probes, 42, scheme).double()       # [P, B, 3, 8, 8]
        v2 = v.flatten(2).pow(2).sum(dim=2).mean(dim=0)                         # mean over probes of ‖v‖²
        by_hand = d + a * v2 - v2 + residual / sigma**2
        got = lid.flipd_ve(denoise, x, sigma, trace="hutchinson", probes=probes, probe_scheme=scheme)
        np.testing.assert_allclose(got, by_hand.numpy(), rtol=1e-6)
        assert not np.allclose(got, (a * v2 + residual / sigma**2).numpy(), rtol=1e-4)   # the former value
    exact = lid.flipd_ve(denoise, x, sigma, trace="exact")
    np.testing.assert_allclose(exact, (a * d + residual / sigma**2).numpy(), rtol=1e-10)
    probes = 2000
    many = lid.flipd_ve(denoise, x, sigma, trace="hutchinson", probes=probes)
    np.testing.assert_allclose(many, exact, atol=5 * abs(a - 1) * math.sqrt(2 * d / probes))   # 5 standard errors


@pytest.fixture(scope="module")
def smoke_denoiser():
    from common.testbeds import edm_testbed

    return edm_testbed.build_denoiser(edm_testbed.SMOKE_CONFIG).eval()


def their_flipd_through_the_vp_sde(denoiser, x, beta_min=0.1, beta_max=20.0, t=0.01):
    """FlipdEstimator on VpSde(β 0.1 … 20) at t, its score network σ_t·∇log p_t made of the VE denoiser:
    y = ψ x + σ_t n is x + (σ_t/ψ) n scaled by ψ, so ∇_y log p_t(y) = s_VE(y/ψ)/ψ with
    s_VE(z) = (D(z; σ_VE) − z)/σ_VE², σ_VE = σ_t/ψ, and σ_t·∇_y log p_t(y) = (D(y/ψ; σ_VE) − y/ψ)/σ_VE."""
    integral = (beta_max - beta_min) / 2 * t**2 + beta_min * t                # VpSde.beta_integral(0, t)
    coeff, sigma_t = math.exp(-0.5 * integral), math.sqrt(1 - math.exp(-integral))
    sigma_ve = sigma_t / coeff

    def score_net(y):
        z = y / coeff
        return (denoiser(z, sigma_ve) - z) / sigma_ve

    laplacian = their_trace(score_net, coeff * x, jvp=double_vjp_jvp)
    with torch.no_grad():
        norm = score_net(coeff * x).flatten(1).pow(2).sum(dim=1)
    return (x[0].numel() + sigma_t * laplacian + norm).double()


def test_flipd_ve_is_their_vp_sde_flipd_fed_the_same_denoiser(smoke_denoiser):
    images = torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(6)) * 2 - 1   # batches of 8 and 2
    theirs = torch.cat([their_flipd_through_the_vp_sde(smoke_denoiser, images[s:s + 8]) for s in (0, 8)]).numpy()
    ours = -detectors.get("lid").score(smoke_denoiser, detectors.Samples(images), trace="hutchinson",
                                       probe_scheme="per-position")
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
    psi, sigma_t = lid.vp_coefficients(0.01, 0.1, 20.0)
    assert lid.EDM_SIGMA0 == pytest.approx(sigma_t / psi)
    # the shared default differs from theirs by the probe only: sample 0 of each batch agrees
    shared = -detectors.get("lid").score(smoke_denoiser, detectors.Samples(images), trace="hutchinson")
    np.testing.assert_allclose(shared[[0, 8]], theirs[[0, 8]], rtol=1e-4)
