"""The detectors published since the paper (`detectors.sharpness`, `detectors.anisotropy`): each against its
recipe written out step by step (the tiny pipeline; a network whose derivatives are known where a Hessian or an
angle is involved), and against a transcription of its official code run on the same model and inputs:

sharpness   Dongjae0324/sharpness_memorization_diffusion, `local_model/pipe.py` (the detection branch of
            `__call__`), `detect_mem.py` (`set_seed` before every prompt), `detect_eval.py` (mean over steps)
anisotropy  rohanasthana/memorization-anisotropy, `local_model/pipe.py` (its detection branch), `detect_eval.py`
            (γ₁ = 1.0 norm, γ₂ = 2.0 cosine for SD v1)
"""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from test_representations import empty_prompt_embedding, random_images

from common import detectors
from common.detectors import anisotropy, sharpness
from common.models import generate


def text_embeddings(pipe, prompts):
    ids = pipe.tokenizer(list(prompts), padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    return pipe.text_encoder(ids)[0]                                             # [N, tokens, width]


def ddim(pipe, steps):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    return scheduler


def x_T_of(seed, side):
    return torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(seed))   # DDIM init sigma = 1


# ----------------------------------------------------------------------------------------------------
# Jeon et al.: the Hessian-guidance product
# ----------------------------------------------------------------------------------------------------
class TanhUNet(torch.nn.Module):
    """ε(x, e) = a(e) · tanh(x) with a(e) = 1 + mean(e): ∂ε/∂x = a · sech²(x), elementwise."""

    dtype = torch.float64

    def forward(self, sample, timestep, encoder_hidden_states):
        a = 1 + encoder_hidden_states.mean(dim=(1, 2))                            # [2B]
        return SimpleNamespace(sample=a[:, None, None, None] * torch.tanh(sample))


def test_hessian_guidance_product_of_a_network_with_known_derivatives():
    """s = −ε/σ, so H_c v − H_∅ v = −(a_c − a_∅) sech²(x) v / σ; with v = s_c − s_∅ = −(a_c − a_∅) tanh(x)/σ it is
    (a_c − a_∅)² sech²(x) tanh(x) / σ²."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    embeddings = torch.randn(4, 5, 6, generator=g, dtype=torch.float64)           # [∅ × 2; c × 2]
    a = 1 + embeddings.mean(dim=(1, 2))
    gap = (a[2:] - a[:2])[:, None, None, None]                                    # a_c − a_∅ per sample
    sigma = 0.8
    v = -gap * torch.tanh(x) / sigma
    h = sharpness.hessian_guidance_product(TanhUNet(), x, 981, embeddings, sigma, v)
    expected = gap ** 2 * torch.tanh(x) / torch.cosh(x) ** 2 / sigma ** 2
    torch.testing.assert_close(h, expected.float(), rtol=1e-6, atol=1e-7)


def their_recipe_by_hand(pipe, prompt, seed, num_steps, num_inference_steps, guidance=7.5):
    """‖(H_c − H_∅)(s_c − s_∅)‖ per step, Jacobian-vector products by double backward, the DDIM step by its formula."""
    scheduler = ddim(pipe, num_inference_steps)
    embeddings = {"u": empty_prompt_embedding(pipe), "c": text_embeddings(pipe, [prompt])}
    x = x_T_of(seed, pipe.unet.config.sample_size)
    norms = []
    for i, t in enumerate(scheduler.timesteps[:num_steps]):
        abar = scheduler.alphas_cumprod[int(t)]
        sigma = float((1 - abar) ** 0.5)
        with torch.no_grad():
            eps = {k: pipe.unet(x, t, encoder_hidden_states=e).sample for k, e in embeddings.items()}
        v = -(eps["c"] - eps["u"]) / sigma
        with sdpa_kernel(SDPBackend.MATH):                # the fused CPU kernel has no double backward
            jv = {k: torch.autograd.functional.jvp(
                lambda z, e=e: -pipe.unet(z, t, encoder_hidden_states=e).sample / sigma, x, v)[1]
                for k, e in embeddings.items()}
        norms.append(float((jv["c"] - jv["u"]).norm()))
        guided = eps["u"] + guidance * (eps["c"] - eps["u"])
        prev = scheduler.timesteps[i + 1] if i + 1 < len(scheduler.timesteps) else None
        abar_prev = scheduler.alphas_cumprod[int(prev)] if prev is not None else scheduler.final_alpha_cumprod
        x0 = (x - (1 - abar) ** 0.5 * guided) / abar ** 0.5
        x = abar_prev ** 0.5 * x0 + (1 - abar_prev) ** 0.5 * guided
    return float(np.mean(norms))


def test_sharpness_is_the_recipe_step_by_step_on_the_tiny_pipeline(tiny_pipe):
    prompts, seeds = ["a red square", "a blue circle"], [3, 4]
    for num_steps in (1, 2):                              # 2 of 2: all steps (their script never returns there)
        ours = sharpness.sharpness_score(tiny_pipe, prompts, seeds, num_steps=num_steps, num_inference_steps=2)
        expected = [their_recipe_by_hand(tiny_pipe, p, s, num_steps, 2) for p, s in zip(prompts, seeds)]
        np.testing.assert_allclose(ours, expected, rtol=2e-4)
    scores = detectors.get("sharpness").score(tiny_pipe, detectors.Samples(random_images(2), prompts, seeds),
                                              num_inference_steps=2)
    np.testing.assert_allclose(scores, sharpness.sharpness_score(tiny_pipe, prompts, seeds, num_inference_steps=2))
    with pytest.raises(ValueError, match=r"num_steps must be in \[1, 2\]"):
        sharpness.sharpness_score(tiny_pipe, prompts, seeds, num_steps=3, num_inference_steps=2)


def test_sharpness_over_generations_is_the_mean_of_single_runs_from_the_repeat_seeds(tiny_pipe):
    prompts, seeds = ["a red square", "a blue circle"], [3, 4]
    both = sharpness.sharpness_score(tiny_pipe, prompts, seeds, generations=2, num_inference_steps=2, batch_size=3)
    singles = [sharpness.sharpness_score(tiny_pipe, prompts, [s + k * generate.REPEAT_SEED_STRIDE for s in seeds],
                                         num_inference_steps=2) for k in range(2)]
    np.testing.assert_allclose(both, np.mean(singles, axis=0), rtol=1e-5)
    assert not np.allclose(singles[0], singles[1])
    assert detectors.get("sharpness-4").options == {"generations": 4}


# ----------------------------------------------------------------------------------------------------
# Asthana & Belagiannis: norm at high noise, angle at low noise
# ----------------------------------------------------------------------------------------------------
def test_channel_cosine_is_the_angle_over_channels_at_each_pixel_then_the_pixel_mean():
    u = torch.zeros(1, 4, 1, 2)
    c = torch.zeros(1, 4, 1, 2)
    u[0, 0] = 1.0                                      # ε_∅ = e₀ at both pixels
    c[0, 0, 0, 0], c[0, 1, 0, 0] = 2.0, 1.0            # pixel 0: c − u = (1, 1, 0, 0): 45°
    c[0, 0, 0, 1], c[0, 2, 0, 1] = 1.0, 3.0            # pixel 1: c − u = (0, 0, 3, 0): 90°
    torch.testing.assert_close(anisotropy.channel_cosine(u, c), torch.tensor([0.5 ** 0.5 / 2]))
    # "x,x|c": cos(ε_∅, ε_c) = 2/√5 and 1/√10
    torch.testing.assert_close(anisotropy.channel_cosine(u, c, "x,x|c"),
                               torch.tensor([(2 / 5 ** 0.5 + 1 / 10 ** 0.5) / 2]))
    with pytest.raises(ValueError, match="mode must be one of"):
        anisotropy.channel_cosine(u, c, "x,c")


@torch.no_grad()
def test_anisotropy_is_the_recipe_step_by_step_on_the_tiny_pipeline(tiny_pipe):
    pipe, prompts, seeds = tiny_pipe, ["a red square", "a blue circle"], [3, 4]
    scheduler = ddim(pipe, 50)
    t_norm, t_cos = scheduler.timesteps[0], scheduler.timesteps[-3]
    assert (int(t_norm), int(t_cos)) == (981, 41)                   # SD's schedule, 50 DDIM steps
    expected = []
    for prompt, seed in zip(prompts, seeds):
        x = x_T_of(seed, pipe.unet.config.sample_size)
        u, c = (pipe.unet(x, t_norm, encoder_hidden_states=e).sample
                for e in (empty_prompt_embedding(pipe), text_embeddings(pipe, [prompt])))
        norm = float((c - u).norm())
        u, c = (pipe.unet(x, t_cos, encoder_hidden_states=e).sample.numpy()[0]
                for e in (empty_prompt_embedding(pipe), text_embeddings(pipe, [prompt])))
        d = c - u
        cos = [np.dot(u[:, i, j], d[:, i, j]) / np.linalg.norm(u[:, i, j]) / np.linalg.norm(d[:, i, j])
               for i in range(u.shape[1]) for j in range(u.shape[2])]
        expected.append(1.0 * norm + 2.0 * float(np.mean(cos)))
    samples = detectors.Samples(random_images(2), prompts, seeds)
    np.testing.assert_allclose(detectors.get("anisotropy").score(pipe, samples, batch_size=1), expected, rtol=1e-4)
    # the norm term is Wen et al.'s first-step score, the same function on the same x_T
    norm_only = anisotropy.anisotropy_score(pipe, prompts, seeds, weights=(1.0, 0.0))
    np.testing.assert_allclose(norm_only, detectors.get("wen").score(pipe, samples), rtol=1e-5)


# ----------------------------------------------------------------------------------------------------
# Their code, transcribed: x_T from set_seed(gen_seed) before every prompt, n generations in one draw
# ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def their_detection_branch(pipe, prompt, gen_num, gen_seed, num_inference_steps=50, hvp_sampling_num=1,
                           anisotropy_mode=None):
    """`LocalStableDiffusionPipeline.__call__(prompt, num_images_per_prompt=gen_num, args)` with exp_type 'det',
    SD v1: Jeon et al.'s hvp_cont, or (anisotropy_mode given) Asthana & Belagiannis's (hvp_cont, cosine_cont)."""
    from diffusers.utils.torch_utils import randn_tensor
    from torch.func import jvp

    torch.manual_seed(gen_seed)                                                      # their set_seed
    self = pipe
    prompt_embeds, negative_prompt_embeds = self.encode_prompt(prompt, "cpu", gen_num, True, None)
    prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])
    scheduler = ddim(pipe, num_inference_steps)
    timesteps = scheduler.timesteps
    side = self.unet.config.sample_size
    latents = randn_tensor((gen_num, 4, side, side), generator=None, device=torch.device("cpu"),
                           dtype=prompt_embeds.dtype) * scheduler.init_noise_sigma
    ipp = gen_num
    hvp_cont, cosine_cont = torch.zeros(hvp_sampling_num), torch.zeros(hvp_sampling_num)
    for i, t in enumerate(timesteps):
        t_cosine = timesteps[-3]
        latent_model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        noise_pred_dict = self.unet(latent_model_input, t, encoder_hidden_states=prompt_embeds, return_dict=False)
        if anisotropy_mode:                                                      # their second pass, at t_cos
            latent_model_input_cosine = scheduler.scale_model_input(latent_model_input, t_cosine)
            noise_pred_dict_cosine = self.unet(latent_model_input_cosine, t_cosine,
                                               encoder_hidden_states=prompt_embeds, return_dict=False)
        if i >= hvp_sampling_num:
            return (hvp_cont, cosine_cont) if anisotropy_mode else hvp_cont
        beta_prod = torch.sqrt(1 - scheduler.alphas_cumprod[t])
        uc_eps, c_eps = noise_pred_dict[0].chunk(2)
        if anisotropy_mode:
            comb_hvp = c_eps - uc_eps
            uc_eps_cosine, c_eps_cosine = noise_pred_dict_cosine[0].chunk(2)
            cosine_sim = torch.nn.functional.cosine_similarity(uc_eps_cosine, c_eps_cosine - uc_eps_cosine, dim=1)
            cosine_cont[i] = torch.tensor([j.mean() for j in cosine_sim]).mean().item()
        else:
            diff_score = -(c_eps - uc_eps) / beta_prod

            def score_func(x):
                return -self.unet(torch.cat([x, x]), t, encoder_hidden_states=prompt_embeds,
                                  return_dict=False)[0] / beta_prod

            with sdpa_kernel(SDPBackend.MATH):     # theirs runs on CUDA; on a CPU forward AD needs this kernel
                _, jvp_result = jvp(score_func, (latent_model_input[:ipp],), (diff_score.view_as(latents),))
            eps_uc, eps_c = jvp_result.chunk(2)
            comb_hvp = eps_c - eps_uc
        hvp_cont[i] = torch.norm(comb_hvp.view(ipp, -1), dim=1).mean().item()
        noise_pred = uc_eps + 7.5 * (c_eps - uc_eps)
        latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
    raise AssertionError("hvp_sampling_num = num_inference_steps: their loop never returns")


def test_sharpness_with_their_seeds_is_their_detection_branch(tiny_pipe):
    prompts = ["a red square", "a blue circle"]
    for gen_num, steps in ((1, 1), (2, 2)):
        theirs = [float(their_detection_branch(tiny_pipe, p, gen_num, 42, 5, steps).mean()) for p in prompts]
        ours = sharpness.sharpness_score(tiny_pipe, prompts, [0, 0], generations=gen_num, num_steps=steps,
                                         num_inference_steps=5, seeds_scheme="official")
        np.testing.assert_allclose(ours, theirs, rtol=2e-4)
    # one generation from seed s: the per-image scheme on an image of seed s is their run with gen_seed s
    per_image = sharpness.sharpness_score(tiny_pipe, prompts, [42, 42], num_inference_steps=5)
    np.testing.assert_allclose(per_image, sharpness.sharpness_score(tiny_pipe, prompts, [7, 8], num_inference_steps=5,
                                                                    seeds_scheme="official"), rtol=1e-6)


def test_anisotropy_with_their_seeds_is_their_detection_branch_and_evaluation(tiny_pipe):
    prompts = ["a red square", "a blue circle"]
    for gen_num in (1, 2):
        terms = [their_detection_branch(tiny_pipe, p, gen_num, 51, anisotropy_mode="x,c|x") for p in prompts]
        theirs = [1.0 * float(norm.mean()) + 2.0 * float(cos.mean()) for norm, cos in terms]   # detect_eval.py
        ours = anisotropy.anisotropy_score(tiny_pipe, prompts, [0, 0], generations=gen_num, seeds_scheme="official")
        np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    with pytest.raises(ValueError, match="seeds must be one of"):
        anisotropy.anisotropy_score(tiny_pipe, prompts, [0, 0], seeds_scheme="global")
