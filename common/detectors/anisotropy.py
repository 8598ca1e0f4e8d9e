"""Asthana & Belagiannis (ICLR 2026): the norm of the guidance at high noise plus its alignment with the
unconditional score at low noise, both on pure noise x_T — two CFG passes, no denoising.

    norm  = ‖ε(x_T, c) − ε(x_T, ∅)‖₂ at t = 981, the first DDIM timestep     (Wen et al.'s first-step norm)
    cos   = mean over pixels of cos∠(ε_∅, ε_c − ε_∅) at t_cos, the cosine over the 4 latent channels at each pixel,
            both ε taken at the same x_T with t_cos = the third-to-last DDIM timestep (41 of 50 steps)
    score = 1.0 · norm + 2.0 · cos, each term the mean over the `generations` runs

as `local_model/pipe.py` of `rohanasthana/memorization-anisotropy` (its detection branch: `hvp_cont` holds the norm
of `eps_diff`, `cosine_cont` the per-pixel `cosine_similarity(..., dim=1)` of mode "x,c|x", averaged over pixels and
generations), `detect_eval.py` (γ₁ = 1.0, γ₂ = 2.0 for SD v1) and `run_detection.sh` (n = 1, seed 51, CFG 7.5,
mode "x,c|x", no normalization — their `--normalization` flag never reaches the pipeline). Their mode "x,x|c"
(cos∠(ε_∅, ε_c)) and "x|c,c|x" (cos∠(ε_c, ε_c − ε_∅)) are options. Rows: "anisotropy" (n = 1) and
"anisotropy-4" (n = 4, their README's other setting; `run_detection.sh` lists it commented out).

The norm term is `wen.guidance_norm`, the function Wen et al.'s row uses: with the per-image seeds and n = 1 it is
that row's score. x_T as `sharpness` (their code is built on Jeon et al.'s pipeline): "per-image" (default) or
"official" (one randn(n, 4, h, w) after seeding with 51 for every prompt, here on a CPU generator). Their script
also runs the UNet twice more before returning (a step it discards); the cost here is the two passes that count.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..models.generate import NUM_INFERENCE_STEPS
from .base import Detector, Samples, batches, check_choice, check_seeds
from .sharpness import cfg_embeddings, prompt_runs
from .wen import guidance_norm

OFFICIAL_SEED = 51              # run_detection.sh seeds=(51)
COSINE_STEP_INDEX = -3          # t_cos = timesteps[-3]: 41 of 50 DDIM steps (it moves with the step count)
WEIGHTS = (1.0, 2.0)            # detect_eval.py, SD v1: γ₁ (norm), γ₂ (cosine)
MODES = ("x,c|x", "x,x|c", "x|c,c|x")


def channel_cosine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, mode: str = "x,c|x") -> torch.Tensor:
    """Per sample, the mean over pixels of the cosine over channels (dim 1) that `mode` names: [B] from [B, 4, h, w].
    "x,c|x": (ε_∅, ε_c − ε_∅); "x,x|c": (ε_∅, ε_c); "x|c,c|x": (ε_c, ε_c − ε_∅)."""
    u, c = eps_uncond.float(), eps_cond.float()
    first, second = {"x,c|x": (u, c - u), "x,x|c": (u, c), "x|c,c|x": (c, c - u)}[check_choice(mode, MODES, "mode")]
    return F.cosine_similarity(first, second, dim=1).flatten(1).mean(dim=1)              # [B, h, w] -> [B]


@torch.no_grad()
def anisotropy_terms(pipe, prompts: Sequence[str], x_T: torch.Tensor, num_inference_steps: int = NUM_INFERENCE_STEPS,
                     cosine_step_index: int = COSINE_STEP_INDEX, mode: str = "x,c|x",
                     batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(norm, cos) of each run, float64 [N] each; run i is prompts[i] on x_T[i] ([N, 4, h, w])."""
    from diffusers import DDIMScheduler

    if len(prompts) != len(x_T):
        raise ValueError(f"{len(prompts)} prompts for {len(x_T)} initial noises: need one per run")
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(num_inference_steps)
    t_norm, t_cos = scheduler.timesteps[0], scheduler.timesteps[cosine_step_index]
    dtype = pipe.unet.dtype
    norms, cosines = [], []
    for part in batches(len(prompts), batch_size):
        embeddings = cfg_embeddings(pipe, prompts[part]).to(dtype)          # [2B, tokens, width]
        x = (x_T[part] * scheduler.init_noise_sigma).to(pipe.device, dtype)  # [B, 4, h, w]
        for t, keep in ((t_norm, norms), (t_cos, cosines)):
            x_t = scheduler.scale_model_input(x, t)
            eps_uncond, eps_cond = pipe.unet(torch.cat([x_t, x_t]), t, encoder_hidden_states=embeddings).sample.chunk(2)
            keep.append((guidance_norm(eps_uncond, eps_cond) if keep is norms
                         else channel_cosine(eps_uncond, eps_cond, mode)).cpu())
    return torch.cat(norms).double().numpy(), torch.cat(cosines).double().numpy()


def anisotropy_score(pipe, prompts: Sequence[str], seeds: Sequence[int], generations: int = 1,
                     weights: tuple[float, float] = WEIGHTS, seeds_scheme: str = "per-image",
                     official_seed: int = OFFICIAL_SEED, height: int | None = None, width: int | None = None,
                     guidance_scale: float | None = None, **options) -> np.ndarray:
    """Their score of each prompt, float64 [N]; higher = more memorized. `options`: num_inference_steps,
    cosine_step_index, mode, batch_size. guidance_scale is accepted and unused: the score takes no sampling step."""
    runs, x_T = prompt_runs(pipe, prompts, seeds, generations, seeds_scheme, official_seed, height, width)
    norm, cos = anisotropy_terms(pipe, runs, x_T, **options)                              # [N·n] each
    norm, cos = (v.reshape(len(prompts), -1).mean(axis=1) for v in (norm, cos))
    return weights[0] * norm + weights[1] * cos


def _score(pipe, samples: Samples, **options) -> np.ndarray:
    return anisotropy_score(pipe, samples.prompts, check_seeds(samples, "Asthana & Belagiannis"), **options)


ANISOTROPY = Detector("anisotropy", "Asthana & Belagiannis, anisotropy, n = 1", "anisotropy", needs_prompt=True,
                      score_fn=_score, options={"generations": 1},
                      description="‖ε_c − ε_∅‖ at t = 981 + 2 · cos∠(ε_∅, ε_c − ε_∅) at t = 41, on x_T")
ANISOTROPY_4 = Detector("anisotropy-4", "Asthana & Belagiannis, anisotropy, n = 4", "anisotropy",
                        needs_prompt=True, score_fn=_score, options={"generations": 4},
                        description="the same, each term the mean over 4 generations of the prompt")
