"""Wen et al. (ICLR 2024): the magnitude of the text-conditional noise prediction during sampling.

    d_k = ‖ε_θ(x_{t_k}, c) − ε_θ(x_{t_k}, ∅)‖₂        (per image, L2 over all latent entries)
    score = mean of d_k over the first `num_steps` DDIM steps and over `generations` samplings of the prompt

as `track_noise_norm` in their `local_sd_pipeline.py` (`noise_pred_text - noise_pred_uncond`, then `.norm(p=2)`
per image). Two settings are rows of the table:
    "wen"       first step, one generation: the paper's timing (0.134 s ≈ two UNet passes) points to it
    "wen-4x50"  their `detect_mem` notebook: 4 generations per prompt, all 50 steps
It runs through the **stock** `StableDiffusionPipeline`: a recorder on the UNet keeps its output at every step
(the CFG batch is [unconditional; conditional]), and a step-end callback interrupts the loop after `num_steps`
steps (`pipe._interrupt`, diffusers' documented early stop), with `output_type="latent"` so nothing is decoded.
Generation k of the image with seed s starts from seed s + k·10⁶ (`generate.repeat_seeds`; k = 0 is the scored
image's own x_T), so with one generation both detectors score the same sampling run.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..models.generate import GUIDANCE_SCALE, NUM_INFERENCE_STEPS, repeat_seeds, seeded_generators
from ..models.hooks import RepresentationRecorder
from .base import Detector, Samples, check_positive, check_seeds

WEN_STEPS = 1             # "at the first step": their strongest setting for one generation per prompt
NOTEBOOK_GENERATIONS = 4  # their notebook: num_images_per_prompt = 4, every step


def guidance_norm(eps_uncond: torch.Tensor, eps_cond: torch.Tensor) -> torch.Tensor:
    """‖ε(x, c) − ε(x, ∅)‖₂ of each sample over all its latent entries: [B] from two [B, 4, h, w]."""
    return (eps_cond.float() - eps_uncond.float()).flatten(1).norm(dim=1)


def _stop_after(num_steps: int):
    def callback(pipe, step: int, timestep, tensors: dict) -> dict:
        if step + 1 >= num_steps:
            pipe._interrupt = True                 # the denoising loop skips the remaining steps
        return tensors
    return callback


@torch.no_grad()
def text_noise_norm_per_step(pipe, prompts: Sequence[str], seeds: Sequence[int], num_steps: int | None = WEN_STEPS,
                             num_inference_steps: int = NUM_INFERENCE_STEPS, guidance_scale: float = GUIDANCE_SCALE,
                             height: int | None = None, width: int | None = None, batch_size: int = 8,
                             progress: bool = True) -> np.ndarray:
    """d_k of each (prompt, seed) sampling run at its first `num_steps` DDIM steps, float64 [N, num_steps].

    num_steps None: every step."""
    from tqdm.auto import tqdm

    num_steps = num_inference_steps if num_steps is None else num_steps
    if guidance_scale <= 1.0:
        raise ValueError("the Wen et al. score needs classifier-free guidance (guidance_scale > 1)")
    if not 1 <= num_steps <= num_inference_steps:
        raise ValueError(f"num_steps must be in [1, {num_inference_steps}], got {num_steps}")
    prompts, seeds = [str(p) for p in prompts], list(seeds)
    if not prompts or len(prompts) != len(seeds):
        raise ValueError("need one seed per prompt, and at least one prompt")
    rows = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="Wen et al. score", disable=not progress):
        batch_prompts, batch_seeds = prompts[start:start + batch_size], seeds[start:start + batch_size]
        with RepresentationRecorder(pipe.unet, [""], keep="all") as recorder:   # "": the UNet's own output
            pipe(batch_prompts, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                 height=height, width=width, generator=seeded_generators(batch_seeds),
                 output_type="latent", callback_on_step_end=_stop_after(num_steps))
        per_step = []
        for noise_pred in recorder.outputs[""]:                                  # [2B, 4, h, w] per step
            per_step.append(guidance_norm(*noise_pred.chunk(2)))                 # [B]: CFG batch [∅; c]
        rows.append(torch.stack(per_step, dim=1).cpu().numpy())                 # [B, num_steps]
    return np.concatenate(rows).astype(np.float64)


def wen_text_noise_norm(pipe, prompts: Sequence[str], seeds: Sequence[int], num_steps: int | None = WEN_STEPS,
                        generations: int = 1, **sampling) -> np.ndarray:
    """Wen et al.'s score of each prompt, float64 [N]; higher = more memorized. num_steps None: every step.

    `sampling`: num_inference_steps, guidance_scale, height, width, batch_size, progress."""
    generations = check_positive(generations, "generations")
    prompts, seeds = [str(p) for p in prompts], list(seeds)
    if not prompts or len(prompts) != len(seeds):
        raise ValueError("need one seed per prompt, and at least one prompt")
    runs = [(p, s) for p, seed in zip(prompts, seeds) for s in repeat_seeds(seed, generations)]  # prompt-major
    d = text_noise_norm_per_step(pipe, [p for p, _ in runs], [s for _, s in runs], num_steps, **sampling)
    return d.mean(axis=1).reshape(len(prompts), generations).mean(axis=1)    # mean over steps, then generations


def _score(pipe, samples: Samples, **options) -> np.ndarray:
    return wen_text_noise_norm(pipe, samples.prompts, check_seeds(samples, "Wen et al."), **options)


WEN = Detector("wen", "Wen et al., 1st step, 1 generation", "wen", needs_prompt=True, score_fn=_score,
               options={"num_steps": WEN_STEPS, "generations": 1, "progress": False},
               description="‖ε(x_T, c) − ε(x_T, ∅)‖ at the first DDIM step of the image's own sampling run")
WEN_NOTEBOOK = Detector("wen-4x50", "Wen et al., 50 steps x 4 generations", "wen", needs_prompt=True,
                        score_fn=_score, options={"num_steps": None, "generations": NOTEBOOK_GENERATIONS,
                                                  "progress": False},
                        description="their notebook: the mean over all 50 DDIM steps and 4 generations")
