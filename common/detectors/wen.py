"""The Wen et al. (ICLR 2024) memorization score, the strongest prompt-based baseline of Table 1.

Score of a prompt c = the magnitude of the text-conditional noise prediction at the first sampling step(s):

    d_k = ‖ε_θ(x_{t_k}, c) − ε_θ(x_{t_k}, ∅)‖₂        (per image, L2 over all latent entries)
    score = mean of d_k over the first `num_steps` DDIM steps

as `track_noise_norm` in their `local_sd_pipeline.py` (`noise_pred_text - noise_pred_uncond`, then
`.norm(p=2)` per image); their detection uses the first step(s). Here it runs through the **stock**
`StableDiffusionPipeline`: a recorder on the UNet keeps its output at every step (the CFG batch is
[unconditional; conditional], so the two halves are ε(x_t, ∅) and ε(x_t, c)), and a step-end callback
interrupts the loop after `num_steps` steps (`pipe._interrupt`, diffusers' documented early stop), with
`output_type="latent"` so nothing is decoded. With the generation seeds, x_T is exactly the initial noise
of the generated image, so both detectors score the same generations.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .generate import GUIDANCE_SCALE, NUM_INFERENCE_STEPS, seeded_generators
from .hooks import RepresentationRecorder

WEN_STEPS = 1       # "at the first step": Wen et al.'s strongest setting for one generation per prompt


def _stop_after(num_steps: int):
    def callback(pipe, step: int, timestep, tensors: dict) -> dict:
        if step + 1 >= num_steps:
            pipe._interrupt = True                 # the denoising loop skips the remaining steps
        return tensors
    return callback


@torch.no_grad()
def wen_text_noise_norm(pipe, prompts: Sequence[str], seeds: Sequence[int], num_steps: int = WEN_STEPS,
                        num_inference_steps: int = NUM_INFERENCE_STEPS, guidance_scale: float = GUIDANCE_SCALE,
                        height: int | None = None, width: int | None = None, batch_size: int = 8,
                        progress: bool = True) -> np.ndarray:
    """Wen et al.'s score for each prompt (seeded like its generation), float64 [N]; higher = more memorized."""
    from tqdm.auto import tqdm

    if guidance_scale <= 1.0:
        raise ValueError("the Wen et al. score needs classifier-free guidance (guidance_scale > 1)")
    if not 1 <= num_steps <= num_inference_steps:
        raise ValueError(f"num_steps must be in [1, {num_inference_steps}]")
    prompts, seeds = [str(p) for p in prompts], list(seeds)
    if not prompts or len(prompts) != len(seeds):
        raise ValueError("need one seed per prompt, and at least one prompt")
    scores = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="Wen et al. score", disable=not progress):
        batch = prompts[start:start + batch_size]
        with RepresentationRecorder(pipe.unet, [""], keep="all") as recorder:   # "": the UNet's own output
            pipe(batch, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, height=height,
                 width=width, generator=seeded_generators(seeds[start:start + len(batch)]), output_type="latent",
                 callback_on_step_end=_stop_after(num_steps))
        per_step = []
        for noise_pred in recorder.outputs[""]:                                  # [2B, 4, h, w] per step
            uncond, cond = noise_pred.float().chunk(2)                           # [B, 4, h, w] each
            per_step.append((cond - uncond).flatten(1).norm(dim=1))              # [B]
        scores.append(torch.stack(per_step).mean(dim=0).cpu().numpy())          # [B]
    return np.concatenate(scores).astype(np.float64)
