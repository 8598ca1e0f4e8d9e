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


def sweep_auroc(extract, sets: dict, layers, levels, poolings) -> dict[str, float]:
    """The detector's ablation (§4.1: which layer, noise level and pooling), read after the fixed default: AUROC
    of std(h) of sets["Mem"] (positives) vs sets["Gen"] for every cell, keyed "layer|level|pooling".

    extract(images, layers, level, poolings) -> reps[layer][pooling] float [N, C]: one pass per set and noise
    level (a σ on EDM, a timestep on DiT) records every layer and pooling at once."""
    from .metrics import auroc

    sweep = {}
    for level in levels:
        by_set = {k: extract(v, list(layers), level, list(poolings)) for k, v in sets.items()}
        for layer in layers:
            for pooling in poolings:
                sweep[f"{layer}|{level}|{pooling}"] = auroc(rep_std(by_set["Mem"][layer][pooling]),   # [N] each
                                                            rep_std(by_set["Gen"][layer][pooling]))
    return sweep


def sweep_table(sweep: dict[str, float], layers, levels, poolings, level_name: str = "sigma") -> str:
    """`sweep_auroc`'s result as a text table: one row per layer and level, one column per pooling."""
    width = max(len(layer) for layer in layers) + 2
    lines = [f"{'layer':<{width}} {level_name:>6} " + " ".join(f"{p:>13}" for p in poolings)]
    for layer in layers:
        for level in levels:
            cells = " ".join(f"{sweep[f'{layer}|{level}|{p}']:13.3f}" for p in poolings)
            lines.append(f"{layer:<{width}} {level!s:>6} {cells}")
    return "\n".join(lines)
