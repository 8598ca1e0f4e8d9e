"""Representation steering (paper §4.2, Eq. 11): add α·v to named UNet activations during part of sampling.

    f_steered(x_t, t, c) = g(h(x_t, t, c) + α·v),     v = (1/|S|) Σ_{x̃ ∈ S} h(x̃_t̃, t̃, c̄)          (Eq. 11)

h is the output of a few UNet blocks, g the rest of the network, S a set of reference images showing the
target concept, c̄ the concept prompt. v is the **mean representation of the concept**, not a difference
(paper §4.2; the official notebook computes the NEG mean and leaves it unused). Settings of the official
`SD_steering.ipynb`, the defaults here:

- layers `STEERING_LAYERS`: the outputs of whole ResnetBlock2D modules, `up_blocks.0.resnets.0/1/2` and
  `up_blocks.1.resnets.0/1` (1280 channels in SD v1.4, 8x8 and 16x16), weight 1 each;
- v per layer: spatial-mean pooled output of one UNet pass on each reference, noised at t = 10, **with the
  concept prompt**, averaged over the references — `representations.extract_representations`, the same
  recorder and extractor as the detector;
- α·v is broadcast over space and added to the **conditional half** of the classifier-free-guidance batch
  only (diffusers stacks it [unconditional; conditional]); the same v at every steered step;
- the step window `StepWindow.last(40, last_n=20, skip_last=2)`: steps 18-37 (0-based) of 40 DDIM steps.

    vectors = concept_vectors(pipe, old_faces, prompt="portrait of an elderly woman")
    with RepresentationSteerer(pipe.unet, vectors, alpha=0.3, window=StepWindow.last(40), cfg=True):
        image = pipe(prompt, num_inference_steps=40, guidance_scale=3.5).images[0]

**How the current step is known: by counting UNet calls** (as the official `RepSteerer`, which wraps
`unet.forward` and adds 1 per call). A forward pre-hook on the UNet counts its calls since the context was
entered; call k is sampling step k mod `window.num_inference_steps`, so several pipeline runs inside one
context are each steered on the same steps. This works with an unmodified `pipe(...)` call — also one made
for us by a helper such as `generate.generate_images` — which `callback_on_step_end` would not: that
callback has to be passed into every call (merged with the caller's own), and it fires *after* a step, so
nothing announces step 0. Counting assumes one UNet call per sampling step, which holds for DDIM and the
other first-order schedulers of the SD pipelines (CFG is one batched call); a run whose number of UNet
calls is not a multiple of the window's steps (another `num_inference_steps`) gets a warning on exit.

The hooks are removed when the block exits, also on an exception: afterwards the model computes exactly what
it computed before. A `hooks.RepresentationRecorder` opened inside the block (its hooks run after these) sees
the steered outputs; one opened outside sees them unsteered.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..models.hooks import resolve_modules
from ..models.representations import DETECTION_TIMESTEP, extract_representations

STEERING_LAYERS = (
    "up_blocks.0.resnets.0",
    "up_blocks.0.resnets.1",
    "up_blocks.0.resnets.2",
    "up_blocks.1.resnets.0",
    "up_blocks.1.resnets.1",
)
STEERING_TIMESTEP = DETECTION_TIMESTEP   # t = 10 for the reference representations, as the detector
STEERING_POOLING = "spatial_mean"        # one value per channel: a vector that broadcasts over space
NUM_INFERENCE_STEPS = 40                 # DDIM steps of the official steering run
STEER_LAST_N = 20                        # steer the last 20 steps ...
STEER_SKIP_LAST = 2                      # ... except the last 2: steps 18-37 of 40
MEAN_OF_POS = "mean_of_pos"              # the paper's v: mean of the concept's references (Eq. 11)
POS_MINUS_NEG = "pos_minus_neg"          # difference of means, POS - NEG (a common alternative; not the paper's)
VECTOR_RULES = (MEAN_OF_POS, POS_MINUS_NEG)


# ----------------------------------------------------------------------------------------------------
# When to steer
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepWindow:
    """The sampling steps (0-based) to steer, for a run of `num_inference_steps` steps."""

    steps: tuple[int, ...]
    num_inference_steps: int

    def __post_init__(self):
        n = self.num_inference_steps
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, not {n!r}")
        for step in self.steps:
            if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < n:
                raise ValueError(f"step {step!r} is outside the run's steps [0, {n}) (num_inference_steps={n})")
        object.__setattr__(self, "steps", tuple(sorted({int(s) for s in self.steps})))

    @classmethod
    def last(cls, num_inference_steps: int = NUM_INFERENCE_STEPS, last_n: int = STEER_LAST_N,
             skip_last: int = STEER_SKIP_LAST) -> "StepWindow":
        """The official window: the last `last_n` steps before the final `skip_last` ones, i.e. steps
        start..end with end = T - skip_last - 1 and start = end - last_n + 1 (40, 20, 2 -> 18..37)."""
        for name, value in (("last_n", last_n), ("skip_last", skip_last)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
        end = num_inference_steps - skip_last - 1
        start = end - last_n + 1
        if last_n and start < 0:
            raise ValueError(f"last_n={last_n} + skip_last={skip_last} > num_inference_steps={num_inference_steps}: "
                             f"the window would start at step {start}, outside [0, {num_inference_steps})")
        return cls(tuple(range(start, end + 1)), num_inference_steps)

    def __contains__(self, step: int) -> bool:
        return step in self.steps

    def __str__(self) -> str:
        if not self.steps:
            return f"no step of {self.num_inference_steps}"
        contiguous = self.steps == tuple(range(self.steps[0], self.steps[-1] + 1))
        where = f"{self.steps[0]}-{self.steps[-1]}" if contiguous else ", ".join(map(str, self.steps))
        return f"steps {where} of {self.num_inference_steps}"


# ----------------------------------------------------------------------------------------------------
# What to add: the concept vectors
# ----------------------------------------------------------------------------------------------------
def concept_vectors(pipe, pos_images: torch.Tensor, prompt: str, layers: Sequence[str] = STEERING_LAYERS,
                    rule: str = MEAN_OF_POS, neg_images: torch.Tensor | None = None, neg_prompt: str | None = None,
                    timestep: int = STEERING_TIMESTEP, seeds: Sequence[int] | None = None, batch_size: int = 16,
                    progress: bool = True) -> dict[str, np.ndarray]:
    """{layer: v [C]} from reference images ([N, 3, H, W] in [-1, 1]), float32.

    Each reference's representation is its spatial-mean pooled layer output, one UNet pass at `timestep` with
    its own prompt (`prompt` for POS, `neg_prompt` for NEG), by `representations.extract_representations`.
    rule=MEAN_OF_POS: v = mean over POS (Eq. 11, the official rule). rule=POS_MINUS_NEG: v = mean POS - mean NEG.
    """
    if rule not in VECTOR_RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {VECTOR_RULES}")
    if len(pos_images) == 0:
        raise ValueError(f"the POS reference set is empty (0 images for prompt {prompt!r})")
    if rule == POS_MINUS_NEG and (neg_images is None or len(neg_images) == 0 or neg_prompt is None):
        raise ValueError(f"rule {POS_MINUS_NEG!r} needs NEG references and their prompt "
                         f"(got {0 if neg_images is None else len(neg_images)} images, neg_prompt={neg_prompt!r})")

    def mean_representation(images, concept_prompt):
        reps = extract_representations(pipe, images, layers, timestep, (STEERING_POOLING,), prompt=concept_prompt,
                                       seeds=seeds, batch_size=batch_size, progress=progress)
        return {layer: reps[layer][STEERING_POOLING].mean(axis=0) for layer in layers}   # [C] per layer

    vectors = mean_representation(pos_images, prompt)
    if rule == POS_MINUS_NEG:
        neg = mean_representation(neg_images, neg_prompt)
        vectors = {layer: vectors[layer] - neg[layer] for layer in layers}
    return {layer: v.astype(np.float32) for layer, v in vectors.items()}


# ----------------------------------------------------------------------------------------------------
# Adding it: the steerer
# ----------------------------------------------------------------------------------------------------
def _finite_alpha(alpha) -> float:
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a finite number, not {alpha!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"alpha must be a finite number, not {alpha!r}")
    return value


def _as_vector(name: str, vector) -> torch.Tensor:
    """A steering vector as a float32 CPU tensor [C]; refuses other shapes and non-finite entries."""
    v = vector.detach() if isinstance(vector, torch.Tensor) else torch.as_tensor(np.asarray(vector))
    if v.ndim != 1 or len(v) == 0:
        raise ValueError(f"the steering vector for {name!r} must have shape [C], not {tuple(v.shape)}")
    v = v.to(device="cpu", dtype=torch.float32)
    if not torch.isfinite(v).all():
        raise ValueError(f"the steering vector for {name!r} has non-finite entries")
    return v


class RepresentationSteerer:
    """Context manager: while open, the output of each module `name` of `unet` gets alpha * vectors[name] added
    (broadcast over space, cast to the output's dtype and device) at the sampling steps of `window`. A 3-D output
    is a transformer's [B, tokens, C] (e.g. a DiT's `ff.net.0`): the vector is added to every token.

    cfg=True: the UNet batch is [unconditional; conditional] (a pipeline with guidance_scale > 1) and only the
    conditional half is steered; the halves of the UNet's input must be equal, as the pipelines make them.
    cfg=False: the whole batch is steered.

    calls          UNet calls since the context was entered
    steered_steps  the step of each call that was steered, in order
    """

    def __init__(self, unet: nn.Module, vectors: Mapping[str, np.ndarray | torch.Tensor], alpha: float,
                 window: StepWindow, cfg: bool):
        if not isinstance(window, StepWindow):
            raise TypeError(f"window must be a StepWindow (e.g. StepWindow.last({NUM_INFERENCE_STEPS})), not {window!r}")
        if not vectors:
            raise ValueError("no steering vectors given")
        self.unet = unet
        self.modules = resolve_modules(unet, list(vectors))          # UnknownModuleError names the closest layers
        self.vectors = {name: _as_vector(name, v) for name, v in vectors.items()}
        self.alpha = _finite_alpha(alpha)
        self.window = window
        self.cfg = bool(cfg)
        self.calls = 0
        self.steered_steps: list[int] = []
        self._steer_now = False
        self._handles: list = []

    def _count_step(self, _unet, args, kwargs):
        sample = args[0] if args else kwargs["sample"]                # [B, 4, h, w] (2B with CFG)
        if self.cfg:
            half = len(sample) // 2
            if len(sample) % 2 or not torch.equal(sample[:half], sample[half:]):
                raise ValueError(f"cfg=True, but the UNet's input batch of {len(sample)} is not two equal halves "
                                 "[x; x]; with guidance_scale <= 1 there is no CFG batch: pass cfg=False")
        step = self.calls % self.window.num_inference_steps
        self.calls += 1
        self._steer_now = step in self.window
        if self._steer_now:
            self.steered_steps.append(step)

    def _add_vector(self, name: str):
        vector = self.vectors[name]

        def steer(_module, _inputs, output):
            if not isinstance(output, torch.Tensor) or output.ndim < 2:
                raise TypeError(f"{name!r} returns {type(output).__name__}, not a [B, C, ...] tensor to steer")
            channel_dim = 2 if output.ndim == 3 else 1         # a transformer's [B, tokens, C]; a UNet's [B, C, H, W]
            if output.shape[channel_dim] != len(vector):
                raise ValueError(f"the steering vector for {name!r} has {len(vector)} channels, but the module "
                                 f"outputs {output.shape[channel_dim]} (output shape {tuple(output.shape)})")
            if not self._steer_now:
                return None
            shape = [1] * output.ndim
            shape[channel_dim] = len(vector)
            shift = (self.alpha * vector).to(device=output.device, dtype=output.dtype).view(shape)   # [1, C, 1, 1]
            if not self.cfg:
                return output + shift                                                    # [B, C, H, W]
            half = len(output) // 2
            return torch.cat([output[:half], output[half:] + shift])                     # [2B, C, H, W]
        return steer

    def __enter__(self) -> "RepresentationSteerer":
        self.calls, self.steered_steps, self._steer_now = 0, [], False
        try:
            self._handles.append(self.unet.register_forward_pre_hook(self._count_step, with_kwargs=True))
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_hook(self._add_vector(name)))
        except BaseException:
            self._remove_hooks()
            raise
        return self

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __exit__(self, exc_type, *exc) -> None:
        self._remove_hooks()
        if exc_type is None and self.calls % self.window.num_inference_steps:
            warnings.warn(f"the UNet ran {self.calls} times, not a multiple of the window's "
                          f"{self.window.num_inference_steps} steps ({self.window}): was the pipeline run with "
                          "another num_inference_steps? Steps were counted modulo the window's length.",
                          stacklevel=2)
