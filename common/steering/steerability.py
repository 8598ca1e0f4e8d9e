"""How far representation steering moves a generation: the α sweeps of Fig 7, measured.

The paper shows that steering ages a generalized portrait smoothly with α while a memorized image does not
move, with 2 x 5 pictures and no number. Here each prompt of a group (generalized or
memorized), with several seeds, is generated at every α of the grid with `steering.RepresentationSteerer`,
and each output x_α is compared with the unsteered x_0 of the same prompt and seed:

- **pixel change**: mean |x_α - x_0| over pixels and channels, images on a [0, 1] scale (of the saved PNGs);
- **latent change**: root-mean-square distance of the VAE latents (posterior mean x scaling factor) of the
  two images, per latent entry;
- **movement along the concept axis**: the images' representations r at `TRAJECTORY_LAYER` (the trajectory
  figure's: `up_blocks.0.resnets.1.norm1`, spatial mean, empty prompt, t = 10, as the official figure), projected
  on the axis d = mean r(POS references) - mean r(NEG references):  <r(x_α) - r(x_0), d> / ‖d‖².
  0 = no movement, 1 = moved by the whole NEG-to-POS distance. This is the direction PC1 of the trajectory
  figure approximates, fixed by the two centroids so its sign and scale do not depend on the points plotted.

A group's curve is the mean over its images at each α; it is **monotone** if it never decreases with α.
The **steerability ratio** is the memorized group's pixel change at the largest α over the generalized
group's (the paper's claim: well below 1).

Defaults (prompts, seeds, α grid, guidance) are those of the official `SD_steering.ipynb`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from ..models.generate import GenerationConfig, generate_images, generation_folder
from ..plumbing.paths import GENERATION_CACHE
from ..models.representations import extract_representations, load_images, pipeline_resolution
from ..plumbing.results import array_fingerprint, config_key
from .steerer import STEERING_POOLING, STEERING_TIMESTEP, RepresentationSteerer, StepWindow

# The official task `age_old`: 50 references per side, one prompt each, different initial noise.
AGE_OLD_POS = ("A high-resolution front-facing portrait of an elderly woman, wrinkles, aged skin texture, gray hair, "
               "looking directly at the camera, natural lighting, highly detailed, realistic photography, 8k")
AGE_OLD_NEG = ("A high-resolution front-facing portrait of a young woman, smooth skin, youthful features, "
               "looking directly at the camera, natural lighting, highly detailed, realistic photography, 8k")
N_REF_PER_SIDE = 50
POS_SEED, NEG_SEED = 0, 1000             # reference i uses seed + i
REFERENCE_GUIDANCE = 7.5                 # CFG of the reference generations
STEERING_GUIDANCE = 3.5                  # CFG of the steered demo ("lowered for a cleaner demo")
ALPHAS = (0.0, 0.2, 0.3, 0.4, 0.5)

# The groups. First of each: the official demo prompt, drawn with the official seed (2025 / 100).
GEN_PROMPTS = (
    "A high-resolution front-facing portrait of a woman, looking directly at the camera, cinematic lighting, "
    "highly detailed skin texture, realistic photography, 8k",                      # official demo
    "A high-resolution front-facing portrait of a man, looking directly at the camera, cinematic lighting, "
    "highly detailed skin texture, realistic photography, 8k",                      # official alternative ("a man")
    "Emma Watson",                                                                   # official alternative
    "An image of an lion, high quality, 8k",                                         # official alternative (sic)
    "A photo of a smiling person in a park, natural light, realistic photography",   # ours
)
MEM_PROMPTS = (                            # Wen et al.'s memorized LAION captions, all verbatim (VM) in NeMo
    "Living in the Light with Ann Graham Lotz",                                      # official demo
    "Donna Tartt's <i>The Goldfinch</i> Scores Film Adaptation",                     # official alternative, paper Fig 7b
    "Emma Watson to play Belle in Disney's <i>Beauty and the Beast</i>",            # official alternative, paper Fig 7d
    "Aaron Paul to Play Luke Skywalker at LACMA Reading of <i>The Empire Strikes Back</i>",  # official alternative
    "Chris Messina In Talks to Star Alongside Ben Affleck in <i>Live By Night</i>",  # paper Fig 7b
)
GEN_SEED, MEM_SEED = 2025, 100           # prompt p, seed s of a group uses seed + p * seeds_per_prompt + s
SEEDS_PER_PROMPT = 3
TRAJECTORY_LAYER = "up_blocks.0.resnets.1.norm1"   # GroupNorm entering resnet 1: 2560 channels in SD v1.4


@dataclass(frozen=True)
class SteeringTask:
    """What to steer toward and whom: the reference prompts (POS builds v; POS and NEG define the concept
    axis), the generalized and memorized groups, and the α grid."""

    name: str
    pos_prompt: str
    neg_prompt: str
    gen_prompts: tuple
    mem_prompts: tuple
    alphas: tuple


OFFICIAL_TASK = SteeringTask("age_old", AGE_OLD_POS, AGE_OLD_NEG, GEN_PROMPTS, MEM_PROMPTS, ALPHAS)


# ----------------------------------------------------------------------------------------------------
# Generation: references and steered sweeps, cached
# ----------------------------------------------------------------------------------------------------
def generate_references(pipe, prompt: str, n: int, config: GenerationConfig,
                        root: str | os.PathLike = GENERATION_CACHE, batch_size: int = 4,
                        progress: bool = True) -> list[dict]:
    """n images of one prompt, image i seeded config.seed + i, cached in a folder of their own.

    The folder is keyed by the model, the generation config (seed, steps, guidance) and the prompt, so a
    cached reference set made for another prompt, seed or model is never reused.
    """
    if n < 1:
        raise ValueError(f"the reference set would be empty (n={n} images of {prompt!r})")
    folder = generation_folder(f"ref-{config_key({'prompt': prompt})}", config, root)
    return generate_images(pipe, [prompt] * n, folder, config, batch_size=batch_size, progress=progress)


def group_prompts(prompts: Sequence[str], seeds_per_prompt: int) -> list[str]:
    """Each prompt repeated `seeds_per_prompt` times, in order: with `generate_images`' seeding (seed + row)
    prompt p gets the seeds seed + p * seeds_per_prompt + (0, 1, ...)."""
    return [prompt for prompt in prompts for _ in range(seeds_per_prompt)]


def generate_steered(pipe, prompts: Sequence[str], vectors: Mapping[str, np.ndarray], alphas: Sequence[float],
                     window: StepWindow, config: GenerationConfig, group: str,
                     root: str | os.PathLike = GENERATION_CACHE, batch_size: int = 4,
                     progress: bool = True) -> dict[float, list[dict]]:
    """{α: manifest rows}: every prompt generated at every α, steered with α·v on `window` (conditional half
    only when config.guidance_scale > 1). Cached per α, keyed also by the vectors and the window."""
    if window.num_inference_steps != config.num_inference_steps:
        raise ValueError(f"the window is for {window.num_inference_steps} steps, the generation runs "
                         f"{config.num_inference_steps}")
    steering = {"window": window.steps, "vectors": {name: array_fingerprint(v) for name, v in vectors.items()}}
    rows = {}
    for alpha in alphas:
        folder = generation_folder(f"steer-{group}-{config_key({**steering, 'alpha': alpha})}", config, root)
        with RepresentationSteerer(pipe.unet, vectors, alpha, window, cfg=config.guidance_scale > 1):
            rows[alpha] = generate_images(pipe, prompts, folder, config, batch_size=batch_size, progress=progress)
    return rows


# ----------------------------------------------------------------------------------------------------
# The measures
# ----------------------------------------------------------------------------------------------------
def pixel_change(images: torch.Tensor, baseline: torch.Tensor) -> np.ndarray:
    """Mean |x - x_0| per image on a [0, 1] scale; images [M, 3, H, W] in [-1, 1] -> [M]."""
    return ((images - baseline).abs() / 2).flatten(1).mean(dim=1).numpy().astype(np.float64)


def latent_change(latents: torch.Tensor, baseline: torch.Tensor) -> np.ndarray:
    """Root-mean-square distance per latent entry, [M, 4, h, w] -> [M]."""
    return (latents - baseline).pow(2).flatten(1).mean(dim=1).sqrt().numpy().astype(np.float64)


def concept_projection(reps: np.ndarray, baseline: np.ndarray, pos_mean: np.ndarray, neg_mean: np.ndarray) -> np.ndarray:
    """<r - r_0, d> / ‖d‖² with d = pos_mean - neg_mean; reps [M, C] -> [M] (1 = the whole NEG-to-POS distance)."""
    axis = np.asarray(pos_mean, np.float64) - np.asarray(neg_mean, np.float64)          # [C]
    return (np.asarray(reps, np.float64) - np.asarray(baseline, np.float64)) @ axis / (axis @ axis)


def is_monotone(curve: Sequence[float]) -> bool:
    """True if the curve never decreases (each value >= the one before)."""
    return bool(np.all(np.diff(np.asarray(curve, dtype=np.float64)) >= 0))


@torch.no_grad()
def encode_latents(pipe, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """VAE posterior means x scaling factor, float32 on the CPU: [M, 3, H, W] in [-1, 1] -> [M, 4, h, w]."""
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device=pipe.device, dtype=pipe.vae.dtype)    # [B, 3, H, W]
        out.append((pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor).float().cpu())
    return torch.cat(out)


@dataclass
class GroupMeasures:
    """The measures of one group: arrays [len(alphas), M] (M = prompts x seeds), and the representations
    [len(alphas), M, C] at `TRAJECTORY_LAYER`."""

    alphas: list[float]
    prompts: list[str]
    pixel: np.ndarray
    latent: np.ndarray
    projection: np.ndarray
    reps: np.ndarray

    def summary(self) -> dict:
        """Mean curves over the group's images, whether each is monotone, and the curve of each prompt."""
        curves = {"pixel_mean_abs": self.pixel.mean(axis=1), "latent_rms": self.latent.mean(axis=1)}
        projection = self.projection.mean(axis=1)
        per_prompt = []
        for prompt in dict.fromkeys(self.prompts):                  # each prompt once, in order
            mine = np.array([p == prompt for p in self.prompts])   # [M]: this prompt's images (its seeds)
            per_prompt.append({"prompt": prompt, "n_images": int(mine.sum()),
                               "pixel_mean_abs_by_alpha": self.pixel[:, mine].mean(axis=1),
                               "projection_by_alpha": self.projection[:, mine].mean(axis=1)})
        return {
            "n_images": self.pixel.shape[1], "n_prompts": len(per_prompt),
            "change_by_alpha": curves, "projection_by_alpha": projection,
            "monotone": is_monotone(curves["pixel_mean_abs"]),
            "monotone_by_measure": {**{name: is_monotone(c) for name, c in curves.items()},
                                    "projection": is_monotone(projection)},
            "change_sd_by_alpha": {"pixel_mean_abs": self.pixel.std(axis=1), "latent_rms": self.latent.std(axis=1)},
            "per_prompt": per_prompt,
        }


def measure_group(pipe, rows_by_alpha: Mapping[float, list[dict]], pos_mean: np.ndarray, neg_mean: np.ndarray,
                  batch_size: int = 16, progress: bool = True) -> GroupMeasures:
    """Each α's images against the α = 0 images of the same rows (needs α = 0 among the keys).

    `pos_mean`, `neg_mean`: the reference centroids at `TRAJECTORY_LAYER` (empty prompt, t = 10, spatial mean).
    Every image of row i is re-encoded with the same extraction seed, so the noise of the comparison is shared.
    """
    alphas = sorted(rows_by_alpha)
    if 0.0 not in rows_by_alpha:
        raise ValueError(f"the sweep needs alpha = 0 as the baseline; got alphas {alphas}")
    resolution = pipeline_resolution(pipe)
    pixel, latent, reps = [], [], []
    for alpha in alphas:
        images = load_images([row["path"] for row in rows_by_alpha[alpha]], resolution)   # [M, 3, H, W]
        latents = encode_latents(pipe, images, batch_size)                                 # [M, 4, h, w]
        features = extract_representations(pipe, images, [TRAJECTORY_LAYER], STEERING_TIMESTEP, (STEERING_POOLING,),
                                           batch_size=batch_size, progress=progress)
        pixel.append(images)
        latent.append(latents)
        reps.append(features[TRAJECTORY_LAYER][STEERING_POOLING])                          # [M, C]
    base = alphas.index(0.0)
    return GroupMeasures(
        alphas=alphas, prompts=[row["prompt"] for row in rows_by_alpha[0.0]],
        pixel=np.stack([pixel_change(x, pixel[base]) for x in pixel]),                     # [A, M]
        latent=np.stack([latent_change(z, latent[base]) for z in latent]),                 # [A, M]
        projection=np.stack([concept_projection(r, reps[base], pos_mean, neg_mean) for r in reps]),  # [A, M]
        reps=np.stack(reps),                                                               # [A, M, C]
    )


def steerability_ratio(mem: GroupMeasures, gen: GroupMeasures, measure: str = "pixel",
                       alpha: float | None = None) -> float | None:
    """The memorized group's mean change at `alpha` (default: the largest) over the generalized group's (None if the
    latter is 0)."""
    if mem.alphas != gen.alphas:
        raise ValueError(f"the groups were swept over different alphas: {mem.alphas} vs {gen.alphas}")
    if alpha is not None and alpha not in mem.alphas:
        raise ValueError(f"alpha {alpha} was not swept; alphas: {mem.alphas}")
    at = -1 if alpha is None else mem.alphas.index(alpha)
    mem_change, gen_change = getattr(mem, measure)[at].mean(), getattr(gen, measure)[at].mean()
    return None if gen_change == 0 else float(mem_change / gen_change)


def steerability_ratios(mem: GroupMeasures, gen: GroupMeasures, alpha: float | None = None,
                        measures: Sequence[str] = ("pixel", "latent", "projection")) -> dict[str, float | None]:
    """`steerability_ratio` at one α for each measure: {measure: Mem change / Gen change}."""
    return {measure: steerability_ratio(mem, gen, measure, alpha) for measure in measures}


def pixel_ratio_by_alpha(mem: GroupMeasures, gen: GroupMeasures) -> dict[float, float | None]:
    """The pixel-change steerability ratio at every swept α > 0: {α: Mem change / Gen change}."""
    return {alpha: steerability_ratio(mem, gen, "pixel", alpha) for alpha in mem.alphas if alpha > 0}


def reference_representations(pipe, reference_sets: Mapping[str, torch.Tensor],
                              batch_size: int = 16) -> dict[str, np.ndarray]:
    """{side: float32 [N, C]}: each reference set's representation at `TRAJECTORY_LAYER` (empty prompt, t = 10,
    spatial mean, image i with extraction seed i) — the points of the trajectory figure and, through their
    centroids, the NEG → POS axis of `measure_group`. reference_sets: {side: images [N, 3, H, W] in [-1, 1]}."""
    return {side: extract_representations(pipe, images, [TRAJECTORY_LAYER], STEERING_TIMESTEP, (STEERING_POOLING,),
                                          batch_size=batch_size, progress=False)[TRAJECTORY_LAYER][STEERING_POOLING]
            for side, images in reference_sets.items()}


@dataclass(frozen=True)
class TrajectoryPCA:
    """The plane of the official steering-trajectory figure (`laion_rep_traj.png`): the first two principal
    components of the jointly centred [POS references; NEG references; steered path] (PCA by SVD).

    center [C], components [2, C] (unit rows), explained [2]: the fraction of the variance each explains."""

    center: np.ndarray
    components: np.ndarray
    explained: np.ndarray

    @classmethod
    def fit(cls, *point_sets: np.ndarray) -> "TrajectoryPCA":
        """PCA of the stacked point sets, each [n_i, C]."""
        points = np.concatenate([np.asarray(p, np.float64) for p in point_sets])           # [sum n_i, C]
        center = points.mean(axis=0)                                                        # [C]
        _, singular_values, components = np.linalg.svd(points - center, full_matrices=False)
        explained = singular_values[:2] ** 2 / (singular_values ** 2).sum()
        return cls(center, components[:2], explained)

    def project(self, points: np.ndarray) -> np.ndarray:
        """[n, C] -> [n, 2]: coordinates on PC1 and PC2 (points outside the fit too)."""
        return (np.asarray(points, np.float64) - self.center) @ self.components.T
