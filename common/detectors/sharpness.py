"""Jeon, Kim & No (ICML 2025): the sharpness of the probability landscape at the start of sampling.

With s(x, c) = −ε(x, c)/σ_t the score (σ_t = √(1 − ᾱ_t)) and H(x, c) = ∂s/∂x the Hessian of log p_t, the score of a
prompt is the norm of a Hessian–vector product, the Hessian difference applied to the guidance:

    v = s(x_t, c) − s(x_t, ∅) = −(ε_c − ε_∅)/σ_t                          (the guidance, as a score)
    h = H(x_t, c) v − H(x_t, ∅) v                                         (one forward-mode JVP of x ↦ [s_∅; s_c])
    score = mean over the first `num_steps` sampling steps and the `generations` runs of ‖h‖₂

as `local_model/pipe.py` of `Dongjae0324/sharpness_memorization_diffusion` (the detection branch of `__call__`:
`diff_score`, `score_func`, `hvp_comb` with `torch.func.jvp`, `hvp_cont[i]` the mean over generations) and
`detect_eval.py` (the mean over steps). Between two scored steps the run takes an ordinary DDIM step with CFG 7.5.
Their defaults (`detect_mem.py`): n = 1 generation, 1 step (`hvp_sampling_num`), seed 42; their README and
`run_detection.sh` also run n = 4 — the two rows here, "sharpness" and "sharpness-4".

Where this module differs from their scripts, and why:
    seeds      "per-image" (default): generation k of a prompt starts from x_T of `generate.repeat_seeds(image seed,
               n)[k]`, so with n = 1 the score is taken on the scored image's own sampling run (as Wen et al.'s row).
               "official": their `set_seed(42)` before every prompt — one randn(n, 4, h, w), the same n tensors for
               every prompt (drawn here on a CPU generator; their GPU run draws other tensors).
    precision  the pipeline's dtype for the CFG pass (they run bf16 weights), float32 for the JVP (their autocast)
    attention  the math kernel of scaled-dot-product attention inside the JVP (their `_jvp_mode_enabled` turns off
               the fused CUDA kernels; on a CPU the fused kernel has no forward-mode derivative either)
Their SD v2 branch (v-prediction) is not here: SD v1.4 and the testbeds predict ε.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch

from ..models.generate import GUIDANCE_SCALE, NUM_INFERENCE_STEPS, repeat_seeds
from .base import (Detector, Samples, batches, check_choice, check_positive, check_seeds, seeded_initial_noise,
                   shared_initial_noise)

SEED_SCHEMES = ("per-image", "official")
OFFICIAL_SEED = 42            # detect_mem.py --gen_seed
SHARPNESS_STEPS = 1           # detect_mem.py --hvp_sampling_num


def cfg_embeddings(pipe, prompts: Sequence[str]) -> torch.Tensor:
    """The text embeddings of a CFG batch, [∅ × B; prompts]: [2B, tokens, width] (the stock `encode_prompt`)."""
    cond, uncond = pipe.encode_prompt(list(prompts), pipe.device, 1, True)
    return torch.cat([uncond, cond])


def generation_noise(seeds: Sequence[int], generations: int, shape: tuple[int, ...], scheme: str,
                     official_seed: int) -> torch.Tensor:
    """x_T of each (prompt, generation) run, prompt-major: [N · generations, *shape]. `scheme` "per-image": from the
    image's seed and its repeats; "official": the same `shared_initial_noise` for every prompt."""
    check_choice(scheme, SEED_SCHEMES, "seeds")
    if scheme == "official":
        return shared_initial_noise(generations, shape, official_seed).repeat(len(seeds), 1, 1, 1)
    return seeded_initial_noise([s for seed in seeds for s in repeat_seeds(seed, generations)], shape)


def latent_shape(pipe, height: int | None = None, width: int | None = None) -> tuple[int, int, int]:
    """x_T's shape for images of `height` x `width` (None: the pipeline's default size), as the stock pipeline."""
    side, factor = pipe.unet.config.sample_size, pipe.vae_scale_factor
    return (pipe.unet.config.in_channels, height // factor if height else side, width // factor if width else side)


def prompt_runs(pipe, prompts: Sequence[str], seeds: Sequence[int], generations: int, scheme: str,
                official_seed: int, height: int | None = None,
                width: int | None = None) -> tuple[list[str], torch.Tensor]:
    """The `generations` runs of each prompt, prompt-major: their prompts and x_T [N · generations, 4, h, w]."""
    generations = check_positive(generations, "generations")
    prompts, seeds = [str(p) for p in prompts], list(seeds)
    if not prompts or len(prompts) != len(seeds):
        raise ValueError("need one seed per prompt, and at least one prompt")
    x_T = generation_noise(seeds, generations, latent_shape(pipe, height, width), scheme, official_seed)
    return [p for p in prompts for _ in range(generations)], x_T


def jvp_context(device: torch.device):
    """What their `_jvp_mode_enabled` + autocast sets: the math attention kernel and, on CUDA, float32 compute."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    stack = contextlib.ExitStack()
    stack.enter_context(sdpa_kernel(SDPBackend.MATH))
    if device.type == "cuda":
        stack.enter_context(torch.autocast("cuda", dtype=torch.float32))
    return stack


def hessian_guidance_product(unet, x: torch.Tensor, t, embeddings: torch.Tensor, sigma: float,
                             v: torch.Tensor) -> torch.Tensor:
    """h = H(x, c) v − H(x, ∅) v for a CFG batch: x [B, 4, h, w], embeddings [∅ × B; c × B], v [B, 4, h, w]. The
    JVP of x ↦ [s(x, ∅); s(x, c)] (one UNet pass on [x; x]) along v, conditional half minus unconditional half."""
    def scores(z):                                                          # [2B, 4, h, w]
        return -unet(torch.cat([z, z]), t, encoder_hidden_states=embeddings).sample / sigma

    with jvp_context(x.device):
        _, jv = torch.func.jvp(scores, (x,), (v.to(x.dtype),))             # [2B, 4, h, w]
    jv_uncond, jv_cond = jv.float().chunk(2)
    return jv_cond - jv_uncond


@torch.no_grad()
def sharpness_per_step(pipe, prompts: Sequence[str], x_T: torch.Tensor, num_steps: int = SHARPNESS_STEPS,
                       num_inference_steps: int = NUM_INFERENCE_STEPS, guidance_scale: float = GUIDANCE_SCALE,
                       batch_size: int = 8) -> np.ndarray:
    """‖h‖₂ of each run at its first `num_steps` DDIM steps, float64 [N, num_steps]; run i samples prompts[i] from
    x_T[i] ([N, 4, h, w])."""
    from diffusers import DDIMScheduler

    if not 1 <= num_steps <= num_inference_steps:
        raise ValueError(f"num_steps must be in [1, {num_inference_steps}], got {num_steps}")
    if len(prompts) != len(x_T):
        raise ValueError(f"{len(prompts)} prompts for {len(x_T)} initial noises: need one per run")
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)          # the pipeline's own stays untouched
    scheduler.set_timesteps(num_inference_steps)
    dtype = pipe.unet.dtype
    out = []
    for part in batches(len(prompts), batch_size):
        embeddings = cfg_embeddings(pipe, prompts[part]).to(dtype)          # [2B, tokens, width]
        latents = (x_T[part] * scheduler.init_noise_sigma).to(pipe.device, dtype)   # [B, 4, h, w]
        rows = []
        for t in scheduler.timesteps[:num_steps]:
            x = scheduler.scale_model_input(latents, t)
            eps_uncond, eps_cond = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=embeddings).sample.chunk(2)
            sigma = float((1 - scheduler.alphas_cumprod[int(t)]) ** 0.5)
            v = -(eps_cond.float() - eps_uncond.float()) / sigma                          # s_c − s_∅
            h = hessian_guidance_product(pipe.unet, x, t, embeddings, sigma, v)            # [B, 4, h, w]
            rows.append(h.flatten(1).norm(dim=1))
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            latents = scheduler.step(eps, t, latents).prev_sample
        out.append(torch.stack(rows, dim=1).cpu())
    return torch.cat(out).double().numpy()


def sharpness_score(pipe, prompts: Sequence[str], seeds: Sequence[int], generations: int = 1,
                    num_steps: int = SHARPNESS_STEPS, seeds_scheme: str = "per-image",
                    official_seed: int = OFFICIAL_SEED, height: int | None = None, width: int | None = None,
                    **sampling) -> np.ndarray:
    """Jeon et al.'s score of each prompt, float64 [N]; higher = more memorized. `sampling`: num_inference_steps,
    guidance_scale, batch_size."""
    runs, x_T = prompt_runs(pipe, prompts, seeds, generations, seeds_scheme, official_seed, height, width)
    per_step = sharpness_per_step(pipe, runs, x_T, num_steps, **sampling)                # [N·n, steps]
    per_run = per_step.reshape(len(prompts), generations, num_steps)
    return per_run.mean(axis=1).mean(axis=1)            # theirs: mean over generations per step, then over steps


def _score(pipe, samples: Samples, **options) -> np.ndarray:
    return sharpness_score(pipe, samples.prompts, check_seeds(samples, "Jeon et al."), **options)


SHARPNESS = Detector("sharpness", "Jeon et al., sharpness, n = 1", "sharpness", needs_prompt=True,
                     score_fn=_score, options={"generations": 1},
                     description="‖(H_c − H_∅)(s_c − s_∅)‖ at the first DDIM step, one generation")
SHARPNESS_4 = Detector("sharpness-4", "Jeon et al., sharpness, n = 4", "sharpness", needs_prompt=True,
                       score_fn=_score, options={"generations": 4},
                       description="the same, mean over 4 generations of the prompt")
