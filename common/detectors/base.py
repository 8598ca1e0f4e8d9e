"""What every memorization detector of Table 1 shares: its input (`Samples`), its shape (`Detector`), and the
paper's numbers it is compared with.

    scores = detector.score(pipe, samples)      # float64 [N]; higher = more likely memorized

A method is one function `score_fn(pipe, samples, **options) -> [N]` wrapped in a `Detector` that names it,
says whether it reads the prompts, and fixes the options of a variant (Wen et al.'s notebook setting, NeMo's
SSIM route, LID with the caption, ...). Adding a method is one module with one `Detector` and one line in
`detectors/__init__.py`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class Samples:
    """The generations to score, with what produced them.

    images   [N, 3, H, W] in [-1, 1]: the generated images (what the prompt-free methods read)
    prompts  the prompt of each image, or None when the prompts are unknown (only prompt-free methods run)
    seeds    the generation seed of each image (its x_T is drawn from `torch.Generator().manual_seed(seed)`);
             methods that re-run sampling start from it, so they score the very generation of the image
    """

    images: torch.Tensor
    prompts: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None

    def __post_init__(self):
        n = len(self.images)
        if self.images.ndim != 4 or n == 0:
            raise ValueError(f"images must be a non-empty [N, 3, H, W] batch, got shape {tuple(self.images.shape)}")
        for name in ("prompts", "seeds"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
                if len(value) != n:
                    raise ValueError(f"{len(value)} {name} for {n} images: need one per image")

    def __len__(self) -> int:
        return len(self.images)


PROMPT_FREE: list[str] = []             # the names of the prompt-free detectors, in the order they were made


@dataclass(frozen=True)
class Detector:
    """One row of Table 1: `score_fn(pipe, samples, **options)` with this variant's options fixed."""

    name: str                            # registry key, e.g. "wen-4x50"
    label: str                           # the row's text in tables and legends
    paper_row: str                       # the paper's row it reproduces: a key of PAPER_TABLE1
    needs_prompt: bool
    score_fn: Callable[..., np.ndarray]
    options: dict = field(default_factory=dict)
    description: str = ""
    # Part of the score cache key (scores.py): set (or changed) when a default changes what a score means, so
    # scores cached under the old default are not reused. Empty: the key is as it always was.
    cache_version: str = ""

    def __post_init__(self):
        if self.prompt_free and self.name not in PROMPT_FREE:
            PROMPT_FREE.append(self.name)

    @property
    def prompt_free(self) -> bool:
        return not self.needs_prompt

    def score(self, pipe, samples: Samples, **options) -> np.ndarray:
        if self.needs_prompt and samples.prompts is None:
            raise ValueError(f"detector {self.name!r} needs the prompts of the samples (samples.prompts is None); "
                             "prompt-free detectors: " + ", ".join(PROMPT_FREE))
        scores = np.asarray(self.score_fn(pipe, samples, **{**self.options, **options}), dtype=np.float64)
        if scores.shape != (len(samples),):
            raise AssertionError(f"{self.name}: {scores.shape} scores for {len(samples)} samples")
        return scores


def check_seeds(samples: Samples, method: str) -> tuple[int, ...]:
    if samples.seeds is None:
        raise ValueError(f"{method} re-runs sampling from each image's initial noise: samples.seeds is None")
    return samples.seeds


def check_positive(value, name: str, minimum: int = 1) -> int:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_choice(value, choices, name: str):
    """`value` if it is one of `choices`, else a ValueError naming the option and its choices."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def batches(n: int, size: int) -> Sequence[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def seeded_initial_noise(seeds: Sequence[int], shape: tuple[int, ...]) -> torch.Tensor:
    """x_T of each seed, [N, *shape], each drawn from its own CPU generator — what the stock pipeline draws for
    `generator=generate.seeded_generators(seeds)` (DDIM's init_noise_sigma is 1), whatever the batch."""
    return torch.cat([torch.randn((1, *shape), generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds])


def shared_initial_noise(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The official scripts' x_T of one prompt: one randn(n, *shape) after `torch.manual_seed(seed)` (here on a
    private CPU generator), [n, *shape], the same n tensors for every prompt (NeMo's and Jeon et al.'s
    `set_seed` before each prompt). On CUDA their draw comes from the GPU's generator: another tensor."""
    return torch.randn((n, *shape), generator=torch.Generator("cpu").manual_seed(int(seed)))


# The paper's Table 1 (ICLR camera-ready):
# AUROC, TPR@1%FPR, seconds per sample; None where not applicable or not published.
PAPER_TABLE1 = {
    "carlini": {"laion": (0.498, 0.020, 3.724)},
    "wen": {"laion": (0.986, 0.961, 0.134)},
    "nemo": {"laion": (0.957, 0.500, 0.009)},
    "lid": {"laion": (0.956, 0.915, 0.545), "imagenet": (0.971, None, None), "cifar10": (0.713, None, None)},
    "std": {"laion": (0.987, 0.961, 0.067), "imagenet": (0.995, None, 0.015), "cifar10": (0.998, None, 0.020)},
}
# Since the paper: detectors published after it, each with its own paper's SD v1.4 numbers on its own 500 + 500
# prompts (AUROC, TPR@1%FPR, seconds per prompt; None where not published), per row of this repo's Table 1.
#   sharpness    Jeon et al. (ICML 2025), Table 1, "Ours", steps 1, n = 1 / n = 4 (no timing published)
#   anisotropy   Asthana & Belagiannis (ICLR 2026), main detection table, n = 1 / n = 4; 1.10 s per 10 prompts
#                (n = 1); read from summaries of the paper, its own text was not reachable here
SINCE_PAPER = {
    "sharpness": (0.987, 0.908, None), "sharpness-4": (0.998, 0.982, None),
    "anisotropy": (0.994, 0.935, 0.110), "anisotropy-4": (0.999, 0.984, None),
}
SINCE_PAPER_NAMES = {"sharpness": "Jeon et al. 2025 (sharpness)",
                     "anisotropy": "Asthana & Belagiannis 2026 (anisotropy)"}
PAPER_ROW_NAMES = {"carlini": "Carlini et al. 2023", "wen": "Wen et al. 2024", "nemo": "Hintersdorf et al. 2024 (NeMo)",
                   "lid": "Ross et al. 2025 (LID)", "std": "The paper (std of reps)"}
TABLE1_COLUMNS = {"laion": "LAION (SD v1.4)", "imagenet": "ImageNet (DiT)", "cifar10": "CIFAR10 (EDM)"}
