"""What a model family is: how its models load and are named, the prompts and steering task its notebooks use,
and how a detector reaches its noised input and its layer.

A family answers for every model it owns (`owns_model`: a name, a hub id or a folder) and every object its `load`
returns (`owns_pipe`). Its `interface` says how the network is called; the detectors that need more than the
family's representation (LID: a noise prediction at t₀) keep one function per interface.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# How the network is called, and so how a detector reaches a noised input:
#   sd-pipeline   a diffusers StableDiffusionPipeline: VAE latents, a text encoder, a UNet ε(z_t, t, prompt)
#   edm-denoiser  an EDM denoiser D(x; σ) on pixels, unconditional (`models.edm.EDMDenoiser`)
#   dit           a class-conditional latent transformer ε(z_t, t, label) (`models.dit.DiTModel`)
INTERFACES = ("sd-pipeline", "edm-denoiser", "dit")


def _not_offered(what: str):
    def fail(model, *args, **kwargs):
        raise ValueError(f"{model}: this model family has no {what}")
    return fail


@dataclass(frozen=True)
class ModelFamily:
    """One kind of model the notebooks, the CLI and the detectors can take.

    name            the family's name ("sd", "cpu-testbed", ...)
    interface       one of `INTERFACES`
    owns_model      (model name / hub id / folder) -> whether it is this family's
    owns_pipe       (loaded object) -> whether it is this family's
    resolve         model name -> what `load` and the caches take (the CPU testbed: its trained folder)
    load            (resolved model, device, dtype, seed) -> the loaded model
    label           resolved model -> a short name for titles and results JSON
    representation  (pipe, images [N, 3, H, W], *, layer, timestep, sigma, pooling, seeds, labels, batch_size,
                    progress) -> float32 [N, C]: the pooled activation the paper's detector reads, one pass at the
                    family's noise level; None for layer / timestep / sigma means the family's detection default
    detection_prompts  (model, n_mem, n_gen) -> (memorized `PromptRecord`s, generalized ones, where each came from)
    prompt_set      (model, "mem" | "gen", n | None) -> the prompt texts of a named set (the CLI)
    steering_task   model -> the `SteeringTask` of the steering notebook
    calibration_prompts  model -> prompts NeMo's reference statistics are computed from (where no released ones exist)
    copies_training_image  (model, images [N, 3, H, W] in [-1, 1]) -> bool [N]: whether each generation copies a
                    training image, where the training data is known (the testbeds); None where it is not (SD v1.4)
    """

    name: str
    interface: str
    owns_model: Callable[[str], bool]
    owns_pipe: Callable[[object], bool]
    load: Callable
    label: Callable[[str], str]
    representation: Callable[..., np.ndarray]
    resolve: Callable[[str], str] = str
    detection_prompts: Callable = _not_offered("detection prompt sets")
    prompt_set: Callable = _not_offered("named prompt sets")
    steering_task: Callable = _not_offered("steering task")
    calibration_prompts: Callable = _not_offered("calibration prompts (NeMo: use its released statistics)")
    copies_training_image: Callable | None = None

    def __post_init__(self):
        if self.interface not in INTERFACES:
            raise ValueError(f"{self.name}: interface {self.interface!r} is not one of {INTERFACES}")
