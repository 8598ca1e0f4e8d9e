"""Carlini et al. (USENIX Security 2023), "Extracting training data from diffusion models": a prompt whose
generations collapse onto one image is memorized. No official code is public; the recipe is their paper's, as
reimplemented (e.g. LeakPro):

    N generations of the prompt (the generation settings of the other methods: DDIM 50, CFG 7.5)
    tiled L2 between two images in [0, 1]: cut each into a 4 x 4 grid of tiles; per tile the root of the mean
        squared difference; the distance is the largest over the tiles (one differing tile keeps them apart)
    a graph with an edge where the distance ≤ τ; memorized when its largest clique has ≥ 10 members

Their paper drew 500 generations per prompt; how the detection paper turned this into a continuous score and
how many generations it drew are unknown (its 3.7 s per sample points to a few). Ours: **score = the size of
the largest clique** (ties are frequent; AUROC counts them one half), N = 10 by default — the fewest with which
the "clique ≥ 10" verdict can fire — and τ = 0.1. Generation k of the image with seed s uses seed s + k·10⁶
(`generate.repeat_seeds`; k = 0 is the scored image itself, regenerated, so the time counts all N).
"""
from __future__ import annotations

import numpy as np
import torch

from ..models.generate import GUIDANCE_SCALE, NUM_INFERENCE_STEPS, repeat_seeds, seeded_generators
from .base import Detector, Samples, batches, check_positive, check_seeds

N_GENERATIONS = 10
TAU = 0.1
GRID = 4
VERDICT_CLIQUE = 10


def tiled_l2(a: torch.Tensor, b: torch.Tensor, grid: int = GRID) -> torch.Tensor:
    """Tiled L2 distance between every image of a ([Na, C, H, W], values in [0, 1]) and of b: [Na, Nb]."""
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"image shapes differ: {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}")
    c, h, w = a.shape[1:]
    if h % grid or w % grid:
        raise ValueError(f"{h}x{w} images do not split into a {grid}x{grid} grid of tiles")

    def tiles(x):                                                    # [N, grid*grid, C*th*tw]
        x = x.reshape(len(x), c, grid, h // grid, grid, w // grid).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(len(x), grid * grid, -1).double()

    ta, tb = tiles(a), tiles(b)
    diff = ta[:, None] - tb[None]                                    # [Na, Nb, tiles, C*th*tw]
    return diff.pow(2).mean(dim=3).sqrt().amax(dim=2)                # [Na, Nb]


def largest_clique(distances: np.ndarray, tau: float = TAU) -> int:
    """Size of the largest set of images that are pairwise within `tau` (networkx's exact maximum clique)."""
    import networkx as nx

    distances = np.asarray(distances)
    n = len(distances)
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from((i, j) for i in range(n) for j in range(i + 1, n) if distances[i, j] <= tau)
    clique, _ = nx.max_weight_clique(graph, weight=None)
    return len(clique)


@torch.no_grad()
def generate_repeats(pipe, prompts, seeds, n: int, num_inference_steps: int = NUM_INFERENCE_STEPS,
                     guidance_scale: float = GUIDANCE_SCALE, batch_size: int = 16) -> torch.Tensor:
    """n generations of every prompt, in memory: [N, n, 3, H, W] in [0, 1]."""
    runs = [(p, s) for p, seed in zip(prompts, seeds) for s in repeat_seeds(seed, n)]
    images = []
    for part in batches(len(runs), batch_size):
        batch = runs[part]
        images.append(pipe([p for p, _ in batch], num_inference_steps=num_inference_steps,
                           guidance_scale=guidance_scale, generator=seeded_generators([s for _, s in batch]),
                           output_type="pt").images.float().cpu())               # [B, 3, H, W] in [0, 1]
    images = torch.cat(images)
    return images.reshape(len(prompts), n, *images.shape[1:])


def carlini_score(pipe, samples: Samples, n_generations: int = N_GENERATIONS, tau: float = TAU, grid: int = GRID,
                  num_inference_steps: int = NUM_INFERENCE_STEPS, guidance_scale: float = GUIDANCE_SCALE,
                  batch_size: int = 16) -> np.ndarray:
    """The largest clique among `n_generations` generations of each prompt. Verdict: `memorized_verdict`."""
    n_generations = check_positive(n_generations, "n_generations", minimum=2)
    images = generate_repeats(pipe, samples.prompts, check_seeds(samples, "Carlini et al."), n_generations,
                              num_inference_steps, guidance_scale, batch_size)    # [N, n, 3, H, W]
    return np.array([largest_clique(tiled_l2(g, g, grid).numpy(), tau) for g in images], dtype=np.float64)


def memorized_verdict(scores: np.ndarray, clique: int = VERDICT_CLIQUE) -> np.ndarray:
    """Carlini et al.'s call: memorized when the largest clique has at least `clique` generations."""
    return np.asarray(scores) >= clique


CARLINI = Detector("carlini", "Carlini et al., largest clique", "carlini", needs_prompt=True,
                   score_fn=carlini_score,
                   description="largest clique at tiled L2 ≤ τ (4 x 4 tiles) among N generations of the prompt (default 10, τ 0.1)")
