"""The paper's detector (§4.1, official `extract_one`): the population std of one pooled UNet activation.

    image --VAE sample, noise at t = 10, one UNet pass with the empty prompt--> up_blocks.0.resnets.2 (last SiLU)
          --spatial max--> h ∈ R^C      score = std(h)      (spiky = memorized; no prompt needed)

The representation itself, and the layer × t × pooling sweep, live in `models/representations.py`; this module is the
detector's row in the family. Image i draws its VAE sample and noise with seed `extraction_seed + i`.
"""
from __future__ import annotations

import numpy as np

from ..families import family_of
from ..models.representations import DETECTION_POOLING, EDM_DETECTION_SIGMA, EXTRACTION_SEED
from ..theory.stats import rep_std
from .base import Detector, Samples


def std_of_representation(pipe, samples: Samples, layer: str | None = None, timestep: int | None = None,
                          pooling: str = DETECTION_POOLING, extraction_seed: int = EXTRACTION_SEED,
                          batch_size: int = 16, progress: bool = False,
                          sigma: float = EDM_DETECTION_SIGMA, labels=None) -> np.ndarray:
    """std of the pooled activation of each image: float64 [N]. Defaults per model family: SD's layer at t = 10;
    on an EDM denoiser (no VAE, no prompt) the noise level σ (`sigma`, default 0.17); on a DiT the MLP hidden of
    its default block at t = 50, max over tokens, with `labels` (None: the null label, prompt-free)."""
    seeds = range(extraction_seed, extraction_seed + len(samples))
    reps = family_of(pipe).representation(pipe, samples.images, layer=layer, timestep=timestep, sigma=sigma,
                                          pooling=pooling, seeds=seeds, labels=labels, batch_size=batch_size,
                                          progress=progress)                                     # [N, C]
    return rep_std(reps)


STD = Detector("std", "std of representations (ours)", "std", needs_prompt=False, score_fn=std_of_representation,
               description="std of up_blocks.0.resnets.2 (last SiLU), spatial max, t = 10, empty prompt")
