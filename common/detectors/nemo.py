"""Hintersdorf et al. (NeurIPS 2024), NeMo: two memorization signals of their official code
(ml-research/localizing_memorization_in_diffusion_models: `utils/activation_detection.py`,
`1_compute_activations_statistics.py`, `2_compute_pairwise_ssim.py`, `3_detect_memorized_neurons.py`).

**Activation z-scores** ("nemo", no UNet pass). The value projections `attn2.to_v` of the cross-attention in the
down path and the middle block (SD v1.4: the first transformer block of `down_blocks[0..2].attentions[0..1]`
and of `mid_block.attentions[0]`, 7 layers, 5,760 neurons; `value_layers` finds them in any UNet). A prompt's
activation of a neuron is `to_v(text_embedding).abs().mean(tokens)` over the padded tokens — a function of the
prompt only. Against reference statistics (per-neuron mean μ and unbiased std σ over prompts that are not
memorized):

    z = |a − μ| / σ          a neuron is out of distribution at z > θ = 5 (their initial selection)

NeMo defines no single detection score. Ours is **max z over all neurons** (continuous, so the AUROC does not
tie); `statistic="count"` gives the number of neurons over θ instead.

**Memorization strength** ("nemo-ssim", `compute_noise_diff` + `calculate_max_pairwise_ssim`). For 10 seeds of
x_T, one conditional UNet pass (no guidance) at the second timestep of the 50-step DDIM schedule (t = 961; their
loop runs the first timestep too but never steps the latents, so x_T itself goes in); noise_diff = ε̂(x_T, c) − x_T,
min-max normalised per sample and channel; multi-scale SSIM (torchmetrics, kernel 11 with σ = 1.5, betas
(0.33, 0.33, 0.33)) between every pair of seeds (`torch.combinations`, all pairs in one call); score = the largest.
torchmetrics accepts 3 scales at kernel 11 only for latents of ≥ 44 px (side // (scales − 1)² > kernel − 1; SD
v1.4: 64). On smaller latents (the CPU testbed's 8×8) `ssim_settings` shrinks the Gaussian window to 3 px
(σ = 1.5·3/11, the same width-to-σ ratio) and keeps as many scales as then fit (8 px: 2, betas (0.5, 0.5)), and
says so.

Two choices, both visible in `NEMO_SSIM.options` and `ssim_recipe(...)` (for a results file):

    data_range   None (default, their code's): no data_range is passed to torchmetrics, which then takes
                 max(range of the first inputs, range of the second) over the whole pooled batch of pairs, at
                 every scale: 1.0 at full resolution (each map is min-max normalised) and less after each 2×2
                 average pooling (≈ 0.65 and 0.32–0.35 at the 2nd and 3rd scale on tiny random models), which
                 lowers the contrast constants and the scores (to ≈ 0.5–0.6 of the data_range=1.0 value there).
                 A score also depends on the other pairs pooled with it (all pairs of the prompt's seeds, as theirs).
                 Their threshold 0.428 (mean + 1 std of non-memorized prompts' pairwise SSIM, their README) is on
                 this scale (though their `2_compute_pairwise_ssim.py` calibrates it with guidance_scale=7, its
                 two CFG halves swapped — ε_c + 7(ε_u − ε_c) — while their detection runs without guidance).
                 1.0: a fixed range at every scale (this module's former default; kept as an option).
    seeds        "per-image" (default): x_T of generation k of a prompt is drawn from its own generator seeded
                 `generate.repeat_seeds(image seed, 10)[k]`, so k = 0 is the scored image's own x_T and a score
                 does not depend on the other prompts. "official": their `prepare_diffusion_inputs` —
                 one randn(10, C, h, w) after seeding with 1, the same 10 x_T for every prompt.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..models.generate import NUM_INFERENCE_STEPS, repeat_seeds
from ..plumbing.paths import REPO_CACHE
from .base import (Detector, Samples, batches, check_choice, check_positive, check_seeds, seeded_initial_noise,
                   shared_initial_noise)

THETA = 5.0
STATISTICS_URL = ("https://raw.githubusercontent.com/ml-research/localizing_memorization_in_diffusion_models/"
                  "HEAD/statistics/statistics_additional_laion_prompts_v1_4.pt")
STATISTICS_CACHE = REPO_CACHE / "nemo"
SSIM_SEEDS = 10           # x_T samples per prompt
SSIM_STEP_INDEX = 1       # their early_stopping = 1: the second DDIM timestep (t = 961 of 50 steps)
OFFICIAL_SSIM = (11, 1.5, (0.33, 0.33, 0.33))   # Gaussian window size, its σ, betas (one per scale)
SSIM_DATA_RANGES = (None, 1.0)      # None: inferred by torchmetrics from the pooled pairs at every scale (theirs)
SSIM_DATA_RANGE = None              # the default: their code's
SSIM_SEED_SCHEMES = ("per-image", "official")
SSIM_SEED_SCHEME = "per-image"      # the default: each image's own seed and its repeats
OFFICIAL_NOISE_SEED = 1             # their `--seed` default: x_T = randn(10, C, h, w) after manual_seed(1)
THEIR_SSIM_THRESHOLD = 0.428        # their `--pairwise_ssim_threshold`: meaningful with data_range=None only


# ----------------------------------------------------------------------------------------------------
# Activation z-scores
# ----------------------------------------------------------------------------------------------------
def value_layers(unet) -> list[str]:
    """Names of the cross-attention value projections of the down path and the middle block, in module order
    (SD v1.4: the 7 layers of NeMo; up-blocks are not used)."""
    names = [name for name, _ in unet.named_modules()
             if name.endswith("attn2.to_v") and name.startswith(("down_blocks.", "mid_block."))]
    if not names:
        raise ValueError("the UNet has no cross-attention (attn2.to_v) in its down or middle blocks")
    return names


@dataclass(frozen=True)
class NemoStatistics:
    """Per-neuron mean and std of the activations of reference (non-memorized) prompts, one array per layer."""

    mean: tuple[np.ndarray, ...]
    std: tuple[np.ndarray, ...]
    source: str

    @property
    def widths(self) -> list[int]:
        return [len(m) for m in self.mean]

    @property
    def cache_key(self) -> str:
        """A hash of the values (not of `source`): a cached score names the statistics it was computed with."""
        from ..plumbing.results import array_fingerprint

        return "nemo-statistics-" + array_fingerprint(np.concatenate([*self.mean, *self.std]))


@torch.no_grad()
def prompt_activations(pipe, prompts: Sequence[str], layers: Sequence[str] | None = None,
                       batch_size: int = 64) -> list[np.ndarray]:
    """`to_v(text_embedding).abs().mean(tokens)` of each prompt at each layer: a list of [N, width] arrays."""
    modules = dict(pipe.unet.named_modules())
    layers = value_layers(pipe.unet) if layers is None else list(layers)
    out = [[] for _ in layers]
    for part in batches(len(prompts), batch_size):
        embedding, _ = pipe.encode_prompt(list(prompts[part]), pipe.device, num_images_per_prompt=1,
                                          do_classifier_free_guidance=False)        # [B, tokens, width]
        embedding = embedding.to(pipe.unet.dtype)
        for values, name in zip(out, layers):
            values.append(modules[name](embedding).abs().mean(dim=1).float().cpu().numpy())   # [B, width_l]
    return [np.concatenate(v).astype(np.float64) for v in out]


def reference_statistics(pipe, prompts: Sequence[str], batch_size: int = 64) -> NemoStatistics:
    """NeMo's statistics computed here: mean and unbiased std over `prompts` (calibration prompts that are
    never evaluated), as their `1_compute_activations_statistics.py`."""
    if len(prompts) < 2:
        raise ValueError(f"reference statistics need at least 2 prompts, got {len(prompts)}")
    acts = prompt_activations(pipe, prompts, batch_size=batch_size)
    return NemoStatistics(tuple(a.mean(axis=0) for a in acts), tuple(a.std(axis=0, ddof=1) for a in acts),
                          f"{len(prompts)} calibration prompts")


def read_statistics(path: str | os.PathLike) -> NemoStatistics:
    """NeMo's statistics file: a tuple (means, stds) of two lists of per-layer float tensors, read with
    `weights_only=True`. A file that does not read as one (truncated, another file) is a `ValueError` naming it."""
    import pickle
    import zipfile

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError) as err:
        raise ValueError(f"{path}: not a readable torch file ({type(err).__name__}: {str(err).splitlines()[0]})") from err
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and len(data[0]) == len(data[1])):
        raise ValueError(f"{path}: expected (means, stds), two lists of per-layer tensors; got {type(data).__name__}")
    means, stds = ([t.double().numpy() for t in part] for part in data)
    if [len(m) for m in means] != [len(s) for s in stds]:
        raise ValueError(f"{path}: mean widths {[len(m) for m in means]} differ from std widths {[len(s) for s in stds]}")
    return NemoStatistics(tuple(means), tuple(stds), str(path))


def load_statistics(source: str | os.PathLike | None = None, cache_dir: str | os.PathLike = STATISTICS_CACHE,
                    timeout: float = 5.0) -> NemoStatistics:
    """NeMo's released SD v1.4 statistics (50,000 LAION prompts): `source` (a local copy), else downloaded once
    from their repository into `cache_dir`. A cached download that does not read is moved aside and downloaded
    again, saying so; offline, the error names the file and where to get it."""
    from ..plumbing.faults import move_aside
    from ..plumbing.network import DownloadUnavailableError, download_cached

    if source is not None:
        return read_statistics(source)
    cached = Path(cache_dir) / Path(STATISTICS_URL).name
    for attempt in range(2):
        try:
            return read_statistics(download_cached(STATISTICS_URL, cached, timeout))
        except DownloadUnavailableError as err:
            raise FileNotFoundError(f"NeMo's reference statistics: {err}. Pass a local copy of "
                                    f"{cached.name} (from {STATISTICS_URL}).") from err
        except ValueError as err:
            if attempt:
                raise
            aside = move_aside(cached)
            print(f"the cached NeMo statistics are unreadable ({err}); moved to {aside.name if aside else '?'}, "
                  "downloading them again")


def z_scores(activations: Sequence[np.ndarray], statistics: NemoStatistics) -> np.ndarray:
    """|a − μ| / σ of every neuron, the layers side by side: [N, total neurons]."""
    widths = [a.shape[1] for a in activations]
    if widths != statistics.widths:
        raise ValueError(f"reference statistics have layer widths {statistics.widths} ({statistics.source}); "
                         f"the model's value layers have {widths}")
    return np.concatenate([np.abs(a - m) / s for a, m, s in zip(activations, statistics.mean, statistics.std)], axis=1)


def nemo_activation_score(pipe, samples: Samples, statistics: NemoStatistics | None = None, statistic: str = "max",
                          theta: float = THETA, batch_size: int = 64) -> np.ndarray:
    """max z over all neurons (statistic="max"), or the number of neurons with z > theta ("count")."""
    if statistics is None:
        raise ValueError("NeMo needs reference statistics: nemo.reference_statistics(pipe, calibration_prompts), "
                         "or nemo.load_statistics() for SD v1.4")
    if statistic not in ("max", "count"):
        raise ValueError(f"statistic must be 'max' or 'count', got {statistic!r}")
    z = z_scores(prompt_activations(pipe, samples.prompts, batch_size=batch_size), statistics)    # [N, neurons]
    return z.max(axis=1) if statistic == "max" else (z > theta).sum(axis=1).astype(np.float64)


# ----------------------------------------------------------------------------------------------------
# Memorization strength: pairwise SSIM of first-step noise differences
# ----------------------------------------------------------------------------------------------------
def _msssim_fits(side: int, kernel: int, scales: int) -> bool:
    """torchmetrics' size check of multi-scale SSIM."""
    return side // max(1, scales - 1) ** 2 > kernel - 1


def ssim_settings(side: int) -> tuple[int, float, tuple[float, ...]]:
    """(window size, σ, betas) of the multi-scale SSIM on side x side latents: NeMo's when torchmetrics accepts
    them, else a 3-px window with σ scaled alike and the most scales (≤ 3) that fit."""
    kernel, sigma, betas = OFFICIAL_SSIM
    if _msssim_fits(side, kernel, len(betas)):
        return OFFICIAL_SSIM
    kernel, sigma = 3, sigma * 3 / 11
    scales = max([s for s in (1, 2, 3) if _msssim_fits(side, kernel, s)], default=0)
    if not scales:
        raise ValueError(f"{side}x{side} latents are too small for SSIM with a 3-px window")
    return kernel, sigma, tuple([1.0 / scales] * scales)


def check_data_range(data_range) -> float | None:
    if data_range is not None and (isinstance(data_range, bool) or not isinstance(data_range, (int, float))
                                   or not data_range > 0):
        raise ValueError(f"data_range must be None (inferred per scale, their code's) or a positive number, "
                         f"got {data_range!r}")
    return None if data_range is None else float(data_range)


def official_initial_noise(n_seeds: int, shape: tuple[int, ...], seed: int = OFFICIAL_NOISE_SEED) -> torch.Tensor:
    """Their x_T of one prompt (`prepare_diffusion_inputs`): [n_seeds, *shape], the same for every prompt."""
    return shared_initial_noise(n_seeds, shape, seed)


@torch.no_grad()
def noise_differences(pipe, prompts: Sequence[str], seeds: Sequence[Sequence[int]] | None = None,
                      num_inference_steps: int = NUM_INFERENCE_STEPS, step_index: int = SSIM_STEP_INDEX,
                      batch_size: int = 32, initial_noise: torch.Tensor | None = None) -> torch.Tensor:
    """ε̂(x_T, t, c) − x_T, min-max normalised per sample and channel: [N, S, 4, h, w] for S seeds per prompt.
    t = the `step_index`-th timestep of the DDIM schedule; one conditional UNet pass, no guidance.
    x_T: from each seed of `seeds` (one row of S seeds per prompt), or `initial_noise` [S, 4, h, w], the same S
    x_T for every prompt (`official_initial_noise`)."""
    if (seeds is None) == (initial_noise is None):
        raise ValueError("noise_differences needs either seeds (one row per prompt) or initial_noise, not both")
    pipe.scheduler.set_timesteps(num_inference_steps)
    t = pipe.scheduler.timesteps[step_index]
    side = pipe.unet.config.sample_size
    shape = (pipe.unet.config.in_channels, side, side)
    if initial_noise is not None:
        if tuple(initial_noise.shape[1:]) != shape:
            raise ValueError(f"initial_noise has shape {tuple(initial_noise.shape)}; the UNet takes [S, *{shape}]")
        n_seeds = len(initial_noise)
        runs = [(p, k) for p in prompts for k in range(n_seeds)]
    else:
        n_seeds = len(seeds[0])
        runs = [(p, s) for p, row in zip(prompts, seeds) for s in row]
    out = []
    for part in batches(len(runs), batch_size):
        batch = runs[part]
        if initial_noise is not None:
            x_T = initial_noise[[k for _, k in batch]].float()
        else:
            x_T = seeded_initial_noise([s for _, s in batch], shape)
        x_T = (x_T * pipe.scheduler.init_noise_sigma).to(pipe.device)                          # [B, 4, h, w]
        embedding, _ = pipe.encode_prompt([p for p, _ in batch], pipe.device, 1, False)
        eps = pipe.unet(pipe.scheduler.scale_model_input(x_T, t).to(pipe.unet.dtype), t,
                        encoder_hidden_states=embedding.to(pipe.unet.dtype)).sample.float()   # [B, 4, h, w]
        diff = eps - x_T.float()
        low, high = diff.amin(dim=(2, 3), keepdim=True), diff.amax(dim=(2, 3), keepdim=True)
        out.append(((diff - low) / (high - low)).cpu())
    return torch.cat(out).reshape(len(prompts), n_seeds, *shape)


def pairwise_ssim(diffs: torch.Tensor, settings: tuple = OFFICIAL_SSIM,
                  data_range: float | None = SSIM_DATA_RANGE) -> torch.Tensor:
    """Multi-scale SSIM of every pair (i < j, `torch.combinations` order) of the S noise differences of one prompt
    ([S, C, h, w]), in one torchmetrics call as their code makes it: [S(S−1)/2]. settings: (Gaussian window size,
    σ, betas); torchmetrics sizes the window from σ (int(3.5σ + 0.5)·2 + 1). data_range None: torchmetrics infers
    it from the pooled batch of pairs at every scale (theirs); a number: fixed at every scale."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    kernel, sigma, betas = settings
    pairs = torch.combinations(torch.arange(len(diffs)), r=2)                            # [S(S-1)/2, 2]
    return multiscale_structural_similarity_index_measure(
        diffs[pairs[:, 0]], diffs[pairs[:, 1]], reduction="none", kernel_size=kernel, sigma=sigma, betas=betas,
        data_range=check_data_range(data_range))


def max_pairwise_ssim(diffs: torch.Tensor, settings: tuple = OFFICIAL_SSIM,
                      data_range: float | None = SSIM_DATA_RANGE) -> float:
    """The largest multi-scale SSIM between two of the S noise differences of one prompt ([S, C, h, w])."""
    return float(pairwise_ssim(diffs, settings, data_range).max())


def ssim_recipe(seeds: str = SSIM_SEED_SCHEME, data_range: float | None = SSIM_DATA_RANGE, n_seeds: int = SSIM_SEEDS,
                side: int | None = None, settings: tuple | None = None) -> dict:
    """What a nemo-ssim score was computed with, in words and numbers (for a results file): the seed scheme,
    the data range, the number of seeds and, given the latent side, the MS-SSIM window and betas."""
    recipe = {"seeds": check_choice(seeds, SSIM_SEED_SCHEMES, "seeds"),
              "x_T": ("each image's seed and its repeats (generate.repeat_seeds), one generator per x_T"
                      if seeds == "per-image" else
                      f"their prepare_diffusion_inputs: one randn({n_seeds}, C, h, w) after seeding with "
                      f"{OFFICIAL_NOISE_SEED}, the same for every prompt"),
              "n_seeds": int(n_seeds), "data_range": check_data_range(data_range),
              "data_range_means": ("inferred by torchmetrics from the pooled pairs at every scale (their code's)"
                                   if data_range is None else f"fixed at {float(data_range)} at every scale")}
    if settings is None and side is not None:
        settings = ssim_settings(side)
    if settings is not None:
        recipe.update(kernel_size=settings[0], sigma=settings[1], betas=list(settings[2]),
                      official_window=tuple(settings) == OFFICIAL_SSIM)
    return recipe


def nemo_ssim_score(pipe, samples: Samples, n_seeds: int = SSIM_SEEDS, num_inference_steps: int = NUM_INFERENCE_STEPS,
                    settings: tuple | None = None, batch_size: int = 32, data_range: float | None = SSIM_DATA_RANGE,
                    seeds: str = SSIM_SEED_SCHEME) -> np.ndarray:
    """NeMo's memorization strength of each prompt: max pairwise MS-SSIM over `n_seeds` noise differences.
    seeds: "per-image" (the image's generation seed and its repeats, `generate.repeat_seeds`) or "official"
    (their one randn(n_seeds, ...) after seed 1, the same for every prompt; samples.seeds is then not read).
    data_range: None (inferred per scale, their code's) or a fixed range such as 1.0."""
    n_seeds = check_positive(n_seeds, "n_seeds", minimum=2)
    check_choice(seeds, SSIM_SEED_SCHEMES, "seeds")
    check_data_range(data_range)
    side = pipe.unet.config.sample_size
    if settings is None:
        settings = ssim_settings(side)
        if settings != OFFICIAL_SSIM:
            warnings.warn(f"NeMo SSIM: {side}x{side} latents are too small for their MS-SSIM (window 11, 3 scales); "
                          f"using window {settings[0]}, σ {settings[1]:.2f}, {len(settings[2])} scale(s)")
    if seeds == "official":
        noise = official_initial_noise(n_seeds, (pipe.unet.config.in_channels, side, side))
        diffs = noise_differences(pipe, samples.prompts, None, num_inference_steps, batch_size=batch_size,
                                  initial_noise=noise)
    else:
        rows = [repeat_seeds(s, n_seeds) for s in check_seeds(samples, "NeMo's SSIM score")]
        diffs = noise_differences(pipe, samples.prompts, rows, num_inference_steps, batch_size=batch_size)
    return np.array([max_pairwise_ssim(d, settings, data_range) for d in diffs])


NEMO = Detector("nemo", "NeMo, max activation z", "nemo", needs_prompt=True, score_fn=nemo_activation_score,
                description="max over the attn2.to_v neurons of the down and middle blocks of |a − μ| / σ")
NEMO_SSIM = Detector("nemo-ssim", "NeMo, memorization strength (SSIM)", "nemo", needs_prompt=True,
                     score_fn=nemo_ssim_score,
                     options={"seeds": SSIM_SEED_SCHEME, "data_range": SSIM_DATA_RANGE},
                     description=f"max pairwise MS-SSIM of first-step noise differences over {SSIM_SEEDS} seeds; "
                                 f"x_T from each image's seed and its repeats (seeds={SSIM_SEED_SCHEME!r}); MS-SSIM "
                                 "data range inferred per scale as their code (data_range=None)",
                     cache_version="ssim-data-range-inferred")
