"""Every detector of Table 1 against its recipe written out step by step (tiny random pipeline, or a network
whose Jacobian is known), and the errors a user meets with bad input."""
from pathlib import Path

import numpy as np
import pytest
import torch
from test_representations import empty_prompt_embedding, random_images

from common import detectors
from common.models import generate, representations as reps
from common.theory import stats
from common.detectors import carlini, lid, nemo, wen

SHARED_NEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "nemo" / \
    "statistics_additional_laion_prompts_v1_4.pt"


def text_embedding(pipe, prompt):
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    return pipe.text_encoder(ids)[0]                                             # [1, tokens, width]


# ----------------------------------------------------------------------------------------------------
# The family
# ----------------------------------------------------------------------------------------------------
def test_registry_has_every_table1_method_and_says_which_need_the_prompt():
    assert {d.paper_row for d in detectors.DETECTORS.values()} == {*detectors.PAPER_TABLE1, "sharpness", "anisotropy"}
    assert set(detectors.SINCE_PAPER) == {n for n, d in detectors.DETECTORS.items() if d.paper_row not in
                                          detectors.PAPER_TABLE1}
    assert detectors.TABLE_ROWS[-len(detectors.SINCE_PAPER):] == tuple(detectors.SINCE_PAPER)   # the block last
    assert {n for n, d in detectors.DETECTORS.items() if d.prompt_free} == {"std", "lid"}
    with pytest.raises(KeyError, match="unknown detector 'flipd'.*known: carlini"):
        detectors.get("flipd")


def test_bad_samples_and_prompt_based_methods_without_prompts_are_clear_errors(tiny_pipe):
    images = random_images(2)
    with pytest.raises(ValueError, match="3 prompts for 2 images"):
        detectors.Samples(images, prompts=["a", "b", "c"])
    with pytest.raises(ValueError, match="non-empty"):
        detectors.Samples(images[:0])
    no_prompts = detectors.Samples(images, seeds=[0, 1])
    for name in ("wen", "nemo", "carlini", "lid-cond", "sharpness", "anisotropy"):
        with pytest.raises(ValueError, match=f"detector '{name}' needs the prompts.*prompt-free detectors: .*std"):
            detectors.get(name).score(tiny_pipe, no_prompts)
    with pytest.raises(ValueError, match="samples.seeds is None"):
        detectors.get("wen").score(tiny_pipe, detectors.Samples(images, prompts=["a", "b"]))


@torch.no_grad()
def test_std_detector_is_the_std_of_the_extracted_representation(tiny_pipe):
    images = random_images(3, seed=2)
    scores = detectors.get("std").score(tiny_pipe, detectors.Samples(images), extraction_seed=7)
    rep = reps.extract_representations(tiny_pipe, images, seeds=[7, 8, 9], progress=False)
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, stats.rep_std(rep[reps.DETECTION_LAYER]["spatial_max"]), rtol=1e-6)


# ----------------------------------------------------------------------------------------------------
# Wen et al.
# ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def test_wen_score_is_the_text_noise_norm_at_the_first_ddim_step(tiny_pipe):
    pipe, prompts, seeds = tiny_pipe, ["a red square", "a blue circle"], [3, 4]
    side = pipe.unet.config.sample_size
    uncond = empty_prompt_embedding(pipe)
    expected = []
    for prompt, seed in zip(prompts, seeds):
        x_T = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(seed))   # DDIM init sigma = 1
        first_t = 49 * (1000 // 50) + 1                                        # DDIM 50 steps, steps_offset 1: 981
        eps = pipe.unet(torch.cat([x_T, x_T]), first_t,
                        encoder_hidden_states=torch.cat([uncond, text_embedding(pipe, prompt)])).sample
        expected.append(float((eps[1] - eps[0]).norm()))
    scores = detectors.get("wen").score(pipe, detectors.Samples(random_images(2), prompts, seeds), batch_size=2)
    np.testing.assert_allclose(scores, expected, rtol=1e-4)


@torch.no_grad()
def test_wen_score_stops_the_stock_pipeline_after_its_steps(tiny_pipe):
    calls = []
    handle = tiny_pipe.unet.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        wen.wen_text_noise_norm(tiny_pipe, ["a", "b", "c"], [0, 1, 2], num_steps=3, batch_size=2, progress=False)
    finally:
        handle.remove()
    assert calls == [4, 4, 4, 2, 2, 2]                                          # 3 CFG passes per batch, then stop
    with pytest.raises(ValueError, match="guidance"):
        wen.wen_text_noise_norm(tiny_pipe, ["a"], [0], guidance_scale=1.0, progress=False)
    with pytest.raises(ValueError, match="one seed per prompt"):
        wen.wen_text_noise_norm(tiny_pipe, ["a", "b"], [0], progress=False)
    with pytest.raises(ValueError, match="generations must be an integer >= 1, got 0"):
        wen.wen_text_noise_norm(tiny_pipe, ["a"], [0], generations=0, progress=False)


@torch.no_grad()
def test_wen_notebook_setting_is_the_mean_of_single_runs_over_generations_and_all_steps(tiny_pipe):
    prompts, seeds, steps = ["a red square", "a blue circle"], [3, 4], 3
    both = wen.wen_text_noise_norm(tiny_pipe, prompts, seeds, num_steps=None, generations=2,
                                   num_inference_steps=steps, batch_size=3, progress=False)
    singles = [wen.wen_text_noise_norm(tiny_pipe, prompts, [s + k * generate.REPEAT_SEED_STRIDE for s in seeds],
                                       num_steps=steps, num_inference_steps=steps, progress=False) for k in range(2)]
    np.testing.assert_allclose(both, np.mean(singles, axis=0), rtol=1e-5)
    assert not np.allclose(singles[0], singles[1])
    assert detectors.get("wen-4x50").options == {"num_steps": None, "generations": 4, "progress": False}


# ----------------------------------------------------------------------------------------------------
# NeMo
# ----------------------------------------------------------------------------------------------------
def test_nemo_value_layers_are_the_down_and_mid_cross_attention_values(tiny_pipe):
    assert nemo.value_layers(tiny_pipe.unet) == [
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v",
        "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v",
        "mid_block.attentions.0.transformer_blocks.0.attn2.to_v"]


def sd14_value_widths():
    """Widths of NeMo's 7 layers in SD v1.4's UNet (built on the meta device: shapes only, no memory)."""
    from diffusers import UNet2DConditionModel

    from common.models.pipelines import SD14_UNET_CONFIG

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD14_UNET_CONFIG)
    modules = dict(unet.named_modules())
    return [modules[name].out_features for name in nemo.value_layers(unet)]


def test_sd14_has_exactly_nemos_seven_value_layers():
    assert sd14_value_widths() == [320, 320, 640, 640, 1280, 1280, 1280]


@torch.no_grad()
def test_nemo_activation_score_is_the_max_z_of_to_v_of_the_text_embedding(tiny_pipe):
    pipe, prompts = tiny_pipe, ["a red square", "kolo vasu", "a blue circle"]
    modules = dict(pipe.unet.named_modules())
    layers = nemo.value_layers(pipe.unet)
    expected_acts = [np.stack([modules[name](text_embedding(pipe, p))[0].abs().mean(dim=0).numpy() for p in prompts])
                     for name in layers]                                      # per layer [3, width]
    acts = nemo.prompt_activations(pipe, prompts, batch_size=2)
    for a, e in zip(acts, expected_acts):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-7)
    rng = np.random.default_rng(0)
    reference = nemo.NemoStatistics(tuple(rng.normal(size=a.shape[1]) for a in acts),
                                    tuple(rng.uniform(0.01, 0.05, size=a.shape[1]) for a in acts), "hand-made")
    z = np.concatenate([np.abs(e - m) / s for e, m, s in zip(expected_acts, reference.mean, reference.std)], axis=1)
    samples = detectors.Samples(random_images(3), prompts)
    np.testing.assert_allclose(detectors.get("nemo").score(pipe, samples, statistics=reference), z.max(axis=1), rtol=1e-5)
    counts = detectors.get("nemo").score(pipe, samples, statistics=reference, statistic="count", theta=20.0)
    np.testing.assert_array_equal(counts, (z > 20.0).sum(axis=1))
    assert 0 < counts.sum() < z.size                                          # the threshold does cut

    computed = nemo.reference_statistics(pipe, prompts)
    np.testing.assert_allclose(computed.std[0], np.std(expected_acts[0], axis=0, ddof=1), rtol=1e-5)


def test_nemo_errors_name_the_mismatch(tiny_pipe):
    samples = detectors.Samples(random_images(1), ["a"])
    with pytest.raises(ValueError, match="NeMo needs reference statistics"):
        detectors.get("nemo").score(tiny_pipe, samples)
    wrong = nemo.NemoStatistics((np.zeros(320),) * 7, (np.ones(320),) * 7, "sd14 file")
    with pytest.raises(ValueError, match=r"layer widths \[320, 320.*\(sd14 file\); the model's value layers have \[32, 32, 64\]"):
        detectors.get("nemo").score(tiny_pipe, samples, statistics=wrong)
    with pytest.raises(ValueError, match="at least 2 prompts"):
        nemo.reference_statistics(tiny_pipe, ["a"])


def test_nemo_statistics_file_in_the_official_format_loads(tmp_path):
    """Their `1_compute_activations_statistics.py` saves `(mean_list, std_list)`: two lists of 7 float tensors."""
    widths = [320, 320, 640, 640, 1280, 1280, 1280]
    means = [torch.rand(w) for w in widths]
    stds = [torch.rand(w) + 0.1 for w in widths]
    torch.save((means, stds), tmp_path / "statistics.pt")
    loaded = nemo.load_statistics(tmp_path / "statistics.pt")
    assert loaded.widths == widths
    np.testing.assert_allclose(loaded.std[4], stds[4].numpy(), rtol=1e-7)
    torch.save((means, stds[:6]), tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="expected \\(means, stds\\)"):
        nemo.load_statistics(tmp_path / "broken.pt")


@pytest.mark.skipif(not SHARED_NEMO.is_file(), reason=f"NeMo's released statistics not found at {SHARED_NEMO}")
def test_nemos_released_sd14_statistics_load_and_fit_sd14():
    loaded = nemo.load_statistics(SHARED_NEMO)
    assert loaded.widths == sd14_value_widths()
    assert all((s > 0).all() for s in loaded.std) and all(np.isfinite(m).all() for m in loaded.mean)


def test_offline_without_the_statistics_file_fails_fast_with_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="statistics_additional_laion_prompts_v1_4.pt"):
        nemo.load_statistics(cache_dir=tmp_path, timeout=0.5)


@torch.no_grad()
def test_nemo_ssim_is_the_max_pairwise_msssim_of_normalised_second_step_noise_differences(tiny_pipe):
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms_ssim

    pipe, prompt, seed, n_seeds = tiny_pipe, "a red square", 5, 3
    side = pipe.unet.config.sample_size
    diffs = []
    for s in generate.repeat_seeds(seed, n_seeds):
        x_T = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(s))
        eps = pipe.unet(x_T, 961, encoder_hidden_states=text_embedding(pipe, prompt)).sample   # 2nd of 50 DDIM steps
        d = eps - x_T
        low, high = d.amin(dim=(2, 3), keepdim=True), d.amax(dim=(2, 3), keepdim=True)
        diffs.append((d - low) / (high - low))
    diffs = torch.cat(diffs)                                                  # [3, 4, 16, 16]
    kernel, sigma, betas = nemo.ssim_settings(side)
    first, second = [0, 0, 1], [1, 2, 2]                                      # torch.combinations of 3 seeds
    # the default, their code's: all pairs in one call, no data_range (inferred from the pooled pairs per scale)
    pooled = float(ms_ssim(diffs[first], diffs[second], reduction="none", kernel_size=kernel, sigma=sigma,
                           betas=betas).max())
    # data_range=1.0 (the former default): each pair on its own with a fixed range
    fixed = max(float(ms_ssim(diffs[i:i + 1], diffs[j:j + 1], kernel_size=kernel, sigma=sigma, betas=betas,
                              data_range=1.0)) for i in range(3) for j in range(i + 1, 3))
    samples = detectors.Samples(random_images(1), [prompt], [seed])
    score = detectors.get("nemo-ssim").score(pipe, samples, n_seeds=n_seeds)
    np.testing.assert_allclose(score, [pooled], rtol=1e-4)
    score = detectors.get("nemo-ssim").score(pipe, samples, n_seeds=n_seeds, data_range=1.0)
    np.testing.assert_allclose(score, [fixed], rtol=1e-4)
    assert abs(pooled - fixed) > 0.05 * abs(fixed)                           # the option matters
    with pytest.raises(ValueError, match="n_seeds must be an integer >= 2, got 1"):
        detectors.get("nemo-ssim").score(pipe, detectors.Samples(random_images(1), [prompt], [seed]), n_seeds=1)


def test_ssim_settings_are_nemos_where_torchmetrics_allows_them():
    assert nemo.ssim_settings(64) == nemo.OFFICIAL_SSIM                    # SD v1.4's latents
    assert nemo.ssim_settings(44) == nemo.OFFICIAL_SSIM
    kernel, sigma, betas = nemo.ssim_settings(8)                            # the CPU testbed's latents
    assert (kernel, len(betas)) == (3, 2) and int(3.5 * sigma + 0.5) * 2 + 1 == 3


# ----------------------------------------------------------------------------------------------------
# Ross et al. (FLIPD)
# ----------------------------------------------------------------------------------------------------
def linear_eps(A):
    return lambda rows, owner: (rows.flatten(1) @ A.T).reshape(rows.shape)


def test_flipd_of_a_linear_network_is_exact():
    """ε(y) = A y: tr(∂ε/∂y) = tr(A) and ‖ε(ψx)‖² are known, so FLIPD = D − σ tr(A) + ψ²‖Ax‖²."""
    g = torch.Generator().manual_seed(0)
    D = 12
    A = torch.randn(D, D, generator=g, dtype=torch.float64)
    x = torch.randn(3, 3, 2, 2, generator=g, dtype=torch.float64)
    psi, sigma = lid.vp_coefficients()
    assert (round(psi, 4), round(sigma, 4)) == (0.9955, 0.0950)           # their lid_*.yaml's ψ and σ at t0
    expected = D - sigma * torch.trace(A) + psi**2 * ((x.flatten(1) @ A.T) ** 2).sum(1)
    for mode in ("exact", "auto"):                                          # D <= 3,500: auto is exact
        np.testing.assert_allclose(lid.flipd(linear_eps(A), x, trace=mode, chunk=5), expected.numpy(), rtol=1e-10)
    v = torch.randn(D, generator=torch.Generator().manual_seed(42), dtype=torch.float64)
    one_probe = D - sigma * (v @ A @ v) + psi**2 * ((x.flatten(1) @ A.T) ** 2).sum(1)
    np.testing.assert_allclose(lid.flipd(linear_eps(A), x, trace="hutchinson"), one_probe.numpy(), rtol=1e-10)


def test_hutchinson_with_many_probes_agrees_with_the_exact_trace():
    g = torch.Generator().manual_seed(1)
    A = torch.eye(20, dtype=torch.float64) * 3 + 0.3 * torch.randn(20, 20, generator=g, dtype=torch.float64)
    y = torch.randn(2, 20, generator=g, dtype=torch.float64)
    exact = lid.exact_trace(linear_eps(A), y)
    probes = 4000
    estimate = lid.hutchinson_trace(linear_eps(A), y, probes=probes)
    sym = (A + A.T) / 2
    tolerance = 5 * float(torch.sqrt(2 * (sym**2).sum() / probes))          # 5 standard errors
    np.testing.assert_allclose(exact.numpy(), [float(torch.trace(A))] * 2, rtol=1e-12)
    np.testing.assert_allclose(estimate.numpy(), exact.numpy(), atol=tolerance)


def test_exact_trace_matches_the_full_jacobian_of_a_nonlinear_conditioned_network():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 2, 3, padding=1).double()
    scale = torch.tensor([0.5, 2.0], dtype=torch.float64)                      # per-sample conditioning

    def eps_fn(rows, owner):
        return torch.tanh(conv(rows)) * scale[owner, None, None, None]

    y = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    expected = [float(torch.autograd.functional.jacobian(lambda z: eps_fn(z[None], torch.tensor([i]))[0], y[i])
                      .reshape(18, 18).trace()) for i in range(2)]
    np.testing.assert_allclose(lid.exact_trace(eps_fn, y, chunk=7).numpy(), expected, rtol=1e-10)


def test_lid_score_on_the_pipeline_is_minus_flipd_of_the_latent_mean(tiny_pipe):
    pipe, images, prompts = tiny_pipe, random_images(2, seed=3), ["a red square", "a blue circle"]
    psi, sigma = lid.vp_coefficients()
    v = torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(42))
    for name, conditioning in (("lid", ["", ""]), ("lid-cond", prompts)):
        expected = []
        for image, prompt in zip(images, conditioning):
            with torch.no_grad():
                x = pipe.vae.encode(image[None]).latent_dist.mean * pipe.vae.config.scaling_factor
            y = (psi * x).requires_grad_(True)
            eps = pipe.unet(y, 10, encoder_hidden_states=text_embedding(pipe, prompt)).sample
            (vjp,) = torch.autograd.grad((eps * v).sum(), y)
            expected.append(-(x.numel() - sigma * float((vjp * v).sum()) + float(eps.detach().pow(2).sum())))
        scores = detectors.get(name).score(pipe, detectors.Samples(images, prompts), trace="hutchinson")
        np.testing.assert_allclose(scores, expected, rtol=1e-4)
    with pytest.raises(ValueError, match="trace must be one of"):
        detectors.get("lid").score(pipe, detectors.Samples(images), trace="diagonal")


# ----------------------------------------------------------------------------------------------------
# Carlini et al.
# ----------------------------------------------------------------------------------------------------
def test_tiled_l2_against_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(size=(3, 3, 8, 12)), rng.uniform(size=(2, 3, 8, 12))
    expected = np.zeros((3, 2))
    for i in range(3):
        for j in range(2):
            tiles = [np.sqrt(np.mean((a[i, :, r:r + 2, c:c + 3] - b[j, :, r:r + 2, c:c + 3]) ** 2))
                     for r in range(0, 8, 2) for c in range(0, 12, 3)]
            expected[i, j] = max(tiles)
    np.testing.assert_allclose(carlini.tiled_l2(torch.from_numpy(a), torch.from_numpy(b)).numpy(), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="do not split into a 4x4 grid"):
        carlini.tiled_l2(torch.zeros(1, 3, 10, 10), torch.zeros(1, 3, 10, 10))


def test_largest_clique_on_a_hand_made_graph():
    # 0-1-2-3 pairwise close (a 4-clique), 3-4-5 a triangle, 6 alone; 0-4 close but 4 is far from 1, 2
    n, close = 7, {(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3), (3, 4), (3, 5), (4, 5), (0, 4)}
    d = np.ones((n, n))
    for i, j in close:
        d[i, j] = d[j, i] = 0.05
    assert carlini.largest_clique(d, tau=0.1) == 4
    assert carlini.largest_clique(d, tau=0.01) == 1
    assert carlini.largest_clique(d, tau=2.0) == 7
    np.testing.assert_array_equal(carlini.memorized_verdict([9.0, 10.0, 4.0]), [False, True, False])


@torch.no_grad()
def test_carlini_generations_start_from_the_scored_image_and_cliques_follow_tau(tiny_pipe):
    prompts, seeds = ["a red square", "a blue circle"], [3, 4]
    repeats = carlini.generate_repeats(tiny_pipe, prompts, seeds, 2, num_inference_steps=2)   # [2, 2, 3, 32, 32]
    first = tiny_pipe(prompts[:1], num_inference_steps=2, generator=generate.seeded_generators([3]),
                      output_type="pt").images[0]
    torch.testing.assert_close(repeats[0, 0], first, rtol=1e-4, atol=1e-5)
    assert repeats.shape == (2, 2, 3, 32, 32) and not torch.allclose(repeats[0, 0], repeats[0, 1])
    samples = detectors.Samples(random_images(2), prompts, seeds)
    options = dict(n_generations=3, num_inference_steps=2)
    np.testing.assert_array_equal(detectors.get("carlini").score(tiny_pipe, samples, tau=10.0, **options), [3, 3])
    np.testing.assert_array_equal(detectors.get("carlini").score(tiny_pipe, samples, tau=-1.0, **options), [1, 1])
    with pytest.raises(ValueError, match="n_generations must be an integer >= 2, got 1"):
        detectors.get("carlini").score(tiny_pipe, samples, n_generations=1)
