"""Steering a class-conditional DiT (§4.3's Eq. 11 on a transformer, Fig 7's measurement on the DiT testbed;
the paper steers only SD):

    v_l = mean over the concept's images of the token-mean MLP hidden of block l (one pass at t, class label)
    sample each group's (label, seed) at every α with α·v_l added to every token of the conditional CFG half
    moved(group, α) = mean over the group of mean |x_α − x_0| per pixel ([0, 1] scale)
    steerability ratio(α) = moved(memorized) / moved(generalized)     (the claim: < 1, memorized samples resist)

The steerer (`steerer.RepresentationSteerer`) and the pixel measure (`steerability.pixel_change`) are the SD
notebook's; the sampler is `dit.sample` (per-sample seeds, so a group is steered from the same noise at every α).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from ..models import dit
from ..models.representations import extract_dit_representations
from .steerability import pixel_change
from .steerer import RepresentationSteerer, StepWindow


def dit_concept_vectors(model, images: torch.Tensor, layers: Sequence[str], timestep: int,
                        label: int) -> dict[str, np.ndarray]:
    """v per layer: the token-mean hidden of `images` [N, 3, H, W] at `timestep` with the class `label`,
    averaged over the images -> float32 [C] per layer."""
    reps = extract_dit_representations(model, images, list(layers), timestep, ["spatial_mean"], labels=label)
    return {name: reps[name]["spatial_mean"].mean(axis=0) for name in layers}               # [C] each


def steer_dit_groups(model, vectors: Mapping[str, np.ndarray], alphas: Sequence[float], window: StepWindow,
                     groups: Mapping[str, tuple], num_steps: int,
                     guidance_scale: float) -> dict[tuple[str, float], torch.Tensor]:
    """Sample every group (name -> (class labels [M], seeds [M])) at every α with the steerer on; returns
    images[(group, α)] -> [M, 3, H, W] in [-1, 1]. α = 0 is the unsteered baseline (the hooks add nothing)."""
    steered = {}
    for group, (labels, seeds) in groups.items():
        for alpha in alphas:
            with RepresentationSteerer(model.transformer, vectors, alpha, window, cfg=guidance_scale > 1):
                steered[group, alpha] = dit.sample(model, labels, seeds, num_steps, guidance_scale)
    return steered


def moved_per_alpha(steered: Mapping[tuple[str, float], torch.Tensor], alphas: Sequence[float],
                    baseline_alpha: float = 0.0) -> dict[str, list[float]]:
    """moved[group][i]: the group's mean pixel change at alphas[i] against its images at `baseline_alpha`."""
    groups = dict.fromkeys(group for group, _ in steered)
    return {group: [float(pixel_change(steered[group, a], steered[group, baseline_alpha]).mean())
                    for a in alphas] for group in groups}


def ratio_per_alpha(moved: Mapping[str, list[float]], memorized: str, generalized: str,
                    alphas: Sequence[float]) -> dict[float, float | None]:
    """The steerability ratio moved(memorized) / moved(generalized) at each α; None where nothing moved."""
    return {a: (moved[memorized][i] / moved[generalized][i] if moved[generalized][i] > 0 else None)
            for i, a in enumerate(alphas)}
