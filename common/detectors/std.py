"""The paper's detector (§4.1, official `extract_one`): the population std of one pooled UNet activation.

    image --VAE sample, noise at t = 10, one UNet pass with the empty prompt--> up_blocks.0.resnets.2 (last SiLU)
          --spatial max--> h ∈ R^C      score = std(h)      (spiky = memorized; no prompt needed)

The representation itself, and the layer × t × pooling sweep, live in `representations.py`; this module is the
detector's row in the family. Image i draws its VAE sample and noise with seed `extraction_seed + i`.
"""
from __future__ import annotations

import numpy as np

from ..dit import DiTModel
from ..edm import EDMDenoiser
from ..representations import (DETECTION_LAYER, DETECTION_POOLING, DETECTION_TIMESTEP, DIT_DETECTION_TIMESTEP,
                               EDM_DETECTION_SIGMA, EXTRACTION_SEED, extract_dit_representations,
                               extract_edm_representations, extract_representations)
from ..stats import rep_std
from .base import Detector, Samples


def std_of_representation(pipe, samples: Samples, layer: str | None = None, timestep: int | None = None,
                          pooling: str = DETECTION_POOLING, extraction_seed: int = EXTRACTION_SEED,
                          batch_size: int = 16, progress: bool = False,
                          sigma: float = EDM_DETECTION_SIGMA, labels=None) -> np.ndarray:
    """std of the pooled activation of each image: float64 [N]. Defaults per model family: SD's layer at t = 10;
    on an EDM denoiser (no VAE, no prompt) the noise level σ (`sigma`, default 0.17); on a DiT the MLP hidden of
    its default block at t = 50, max over tokens, with `labels` (None: the null label, prompt-free)."""
    seeds = range(extraction_seed, extraction_seed + len(samples))
    if isinstance(pipe, DiTModel):
        timestep = DIT_DETECTION_TIMESTEP if timestep is None else timestep
        reps = extract_dit_representations(pipe, samples.images, layer, timestep, [pooling], labels, seeds, batch_size)
        return rep_std(next(iter(reps.values()))[pooling])
    layer = DETECTION_LAYER if layer is None else layer
    timestep = DETECTION_TIMESTEP if timestep is None else timestep
    if isinstance(pipe, EDMDenoiser):
        reps = extract_edm_representations(pipe, samples.images, [layer], sigma, [pooling], seeds, batch_size)
        return rep_std(reps[layer][pooling])
    reps = extract_representations(pipe, samples.images, [layer], timestep, [pooling], seeds=seeds,
                                   batch_size=batch_size, progress=progress)
    return rep_std(reps[layer][pooling])


STD = Detector("std", "std of representations (ours)", "std", needs_prompt=False, score_fn=std_of_representation,
               description="std of up_blocks.0.resnets.2 (last SiLU), spatial max, t = 10, empty prompt")
