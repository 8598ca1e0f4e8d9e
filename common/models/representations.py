"""UNet representations of images, and the paper's prompt-free memorization score.

The detector of paper §4.1 / official `extract_one`, batched:

    image [-1, 1] --VAE encode--> latent_dist.sample() x scaling_factor           [B, 4, h, w]
             --scheduler.add_noise at t = 10 (fresh Gaussian noise)-->  x_t        [B, 4, h, w]
             --one UNet pass with the empty-prompt embedding-->  hooked activation [B, C, H, W]
             --spatial max over H x W-->  representation h                         [B, C]
    score = population std of h (`stats.rep_std`; large = spiky = memorized)

For SD v1.4 at the paper's layer `up_blocks.0.resnets.2.nonlinearity` (the last of the three calls of that
SiLU, see `hooks.py`) h has 1280 dimensions (8x8 before pooling). Every image draws its VAE sample and its
noise from its own generator, `torch.Generator("cpu").manual_seed(seeds[i])`, so its score does not depend
on the batch it is in (the official code draws both from the global RNG, seeded once per run: §9.7).
Layer, timestep, pooling and prompt are parameters; the defaults are the paper's detection setting.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .generate import seeded_generators
from .hooks import RepresentationRecorder

DETECTION_LAYER = "up_blocks.0.resnets.2.nonlinearity"
# The official notebook's HOOK_NAMES: the three resnets of the lowest-resolution up-block and the first of the next.
HOOKED_LAYERS = (
    "up_blocks.0.resnets.0.nonlinearity",
    "up_blocks.0.resnets.1.nonlinearity",
    "up_blocks.0.resnets.2.nonlinearity",
    "up_blocks.1.resnets.0.nonlinearity",
)
DETECTION_TIMESTEP = 10          # the official SD code uses t = 10 (the paper's figure: t = 50)
SWEEP_TIMESTEPS = (10, 50, 100)
DETECTION_POOLING = "spatial_max"
POOLINGS = ("spatial_max", "spatial_mean")
EXTRACTION_SEED = 0              # image i draws its VAE sample and noise with seed EXTRACTION_SEED + i


def pool(features: torch.Tensor, pooling: str) -> torch.Tensor:
    """[B, C, H, W] -> [B, C] by the max or the mean over the spatial positions (official `_pool_feat`);
    [B, C] passes through."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
    if features.ndim == 2:
        return features
    flat = features.flatten(2)                                   # [B, C, H*W]
    return flat.amax(dim=2) if pooling == "spatial_max" else flat.mean(dim=2)


def load_images(paths: Sequence[str | os.PathLike], size: int) -> torch.Tensor:
    """RGB images -> [N, 3, size, size] float32 in [-1, 1]. Images of another size are resized (bicubic, as
    PIL's default in the official `.resize`) and that is said once, with the count."""
    arrays, resized = [], 0
    for path in paths:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (size, size):
                image, resized = image.resize((size, size), Image.BICUBIC), resized + 1
            arrays.append(np.asarray(image, dtype=np.float32))
    if resized:
        print(f"resized {resized} of {len(arrays)} images to {size}x{size} (the pipeline's resolution)")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)   # [N, 3, H, W] in [0, 255]
    return images / 127.5 - 1.0


def pipeline_resolution(pipe) -> int:
    """The image side the pipeline generates by default: UNet sample size x VAE scale factor (512 for SD v1.4)."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def encode_prompt(pipe, prompt: str, batch: int) -> torch.Tensor:
    """The text embedding of `prompt`, repeated for a batch: [batch, tokens, width] (stock `encode_prompt`)."""
    embedding, _ = pipe.encode_prompt(prompt, pipe.device, num_images_per_prompt=1, do_classifier_free_guidance=False)
    return embedding.expand(batch, -1, -1)


@torch.no_grad()
def extract_representations(pipe, images: torch.Tensor, layers: Sequence[str] = (DETECTION_LAYER,),
                            timestep: int = DETECTION_TIMESTEP, poolings: Sequence[str] = (DETECTION_POOLING,),
                            prompt: str = "", seeds: Sequence[int] | None = None, batch_size: int = 16,
                            progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """Pooled representations of `images` ([N, 3, H, W] in [-1, 1]) at `layers`, one UNet pass per image.

    Returns reps[layer][pooling] -> float32 array [N, C]. `seeds[i]` seeds image i's VAE sample and noise
    (default EXTRACTION_SEED + i). The hooked layers are recorded in the same pass, so a sweep over layers
    and poolings costs one pass per timestep.
    """
    from tqdm.auto import tqdm

    if isinstance(layers, str):
        layers = [layers]
    if isinstance(poolings, str):
        poolings = [poolings]
    for pooling in poolings:
        pool(torch.zeros(1, 1), pooling)                          # fail early on an unknown pooling name
    n = len(images)
    if n == 0:
        raise ValueError("no images to extract representations from")
    seeds = list(range(EXTRACTION_SEED, EXTRACTION_SEED + n)) if seeds is None else list(seeds)
    device, vae_dtype, unet_dtype = pipe.device, pipe.vae.dtype, pipe.unet.dtype
    empty = encode_prompt(pipe, prompt, batch_size).to(unet_dtype)   # [B, 77, width]
    out = {layer: {pooling: [] for pooling in poolings} for layer in layers}
    recorder = RepresentationRecorder(pipe.unet, layers)
    for start in tqdm(range(0, n, batch_size), desc=f"extracting t={timestep}", disable=not progress):
        x = images[start:start + batch_size].to(device=device, dtype=vae_dtype)        # [B, 3, H, W]
        generators = seeded_generators(seeds[start:start + len(x)])
        latents = pipe.vae.encode(x).latent_dist.sample(generators) * pipe.vae.config.scaling_factor  # [B, 4, h, w]
        noise = torch.cat([torch.randn(latents[:1].shape, generator=g, dtype=torch.float32) for g in generators])
        t = torch.full((len(x),), timestep, device=device, dtype=torch.long)              # [B]
        noisy = pipe.scheduler.add_noise(latents.float(), noise.to(device), t).to(unet_dtype)  # [B, 4, h, w]
        with recorder:
            pipe.unet(noisy, t, encoder_hidden_states=empty[:len(x)], return_dict=False)
        for layer in layers:
            features = recorder.outputs[layer].float()                                   # [B, C, H, W]
            for pooling in poolings:
                out[layer][pooling].append(pool(features, pooling).cpu().numpy())        # [B, C]
    return {layer: {p: np.concatenate(v) for p, v in by_pool.items()} for layer, by_pool in out.items()}


# ----------------------------------------------------------------------------------------------------
# Unconditional pixel-space models: EDM (`edm.EDMDenoiser`)
# ----------------------------------------------------------------------------------------------------
EDM_DETECTION_SIGMA = 0.17       # the paper's real-model figures: σ ≈ 0.17 (fixed before looking at any result)
EDM_SWEEP_SIGMAS = (0.05, 0.17, 0.5)
EDM_HOOKED_LAYERS = HOOKED_LAYERS  # UNet2DModel has the same names: up_blocks.0 is the lowest resolution


def extract_edm_representations(denoiser, images: torch.Tensor, layers: Sequence[str] = (DETECTION_LAYER,),
                                sigma: float = EDM_DETECTION_SIGMA, poolings: Sequence[str] = (DETECTION_POOLING,),
                                seeds: Sequence[int] | None = None, batch_size: int = 64,
                                progress: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """The same representation on an EDM denoiser, which has no VAE and no prompt:

        image x [-1, 1] --x + σ n (n from the image's seed)--> one pass of D(·; σ) --> hooked activation --> pool

    Returns reps[layer][pooling] -> float32 [N, C]."""
    from .edm import noise_level_check

    sigma = noise_level_check(sigma, denoiser)
    layers, poolings = ([layers] if isinstance(layers, str) else list(layers),
                        [poolings] if isinstance(poolings, str) else list(poolings))
    for pooling in poolings:
        pool(torch.zeros(1, 1), pooling)
    n = len(images)
    if n == 0:
        raise ValueError("no images to extract representations from")
    seeds = list(range(EXTRACTION_SEED, EXTRACTION_SEED + n)) if seeds is None else list(seeds)
    out = {layer: {pooling: [] for pooling in poolings} for layer in layers}
    recorder = RepresentationRecorder(denoiser.unet, layers)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            x = images[start:start + batch_size].float()                                        # [B, 3, H, W]
            noise = torch.cat([torch.randn(x[:1].shape, generator=g) for g in seeded_generators(seeds[start:start + len(x)])])
            with recorder:
                denoiser((x + sigma * noise).to(denoiser.device), sigma)
            for layer in layers:
                features = recorder.outputs[layer].float()                                       # [B, C, h, w]
                for pooling in poolings:
                    out[layer][pooling].append(pool(features, pooling).cpu().numpy())            # [B, C]
    return {layer: {p: np.concatenate(v) for p, v in by_pool.items()} for layer, by_pool in out.items()}


# ----------------------------------------------------------------------------------------------------
# Class-conditional latent transformers: DiT (`dit.DiTModel`)
# ----------------------------------------------------------------------------------------------------
DIT_DETECTION_TIMESTEP = 50      # the paper's real-model figures: t = 50, σ = sqrt((1 − ᾱ)/ᾱ) ≈ 0.18 on DiT's β
DIT_SWEEP_TIMESTEPS = (10, 50, 100)


def extract_dit_representations(model, images: torch.Tensor, layers: Sequence[str] | None = None,
                                timestep: int = DIT_DETECTION_TIMESTEP, poolings: Sequence[str] = (DETECTION_POOLING,),
                                labels=None, seeds: Sequence[int] | None = None,
                                batch_size: int = 64) -> dict[str, dict[str, np.ndarray]]:
    """The same representation on a DiT, whose activations are tokens, not feature maps:

        image [-1, 1] --VAE posterior mean x scaling_factor--> z_0 --sqrt(ᾱ_t) z_0 + sqrt(1 − ᾱ_t) n (n from the
        image's seed)--> one transformer pass with `labels` (None: the null label — prompt-free)
        --> hooked MLP hidden [B, tokens, C] --> max ("spatial_max") or mean over the tokens --> [B, C]

    layers: default the MLP hidden of `dit.default_block` (fixed before any result). Returns reps[layer][pooling]
    -> float32 [N, C]."""
    from .dit import default_block, ff_layer

    layers = [ff_layer(default_block(model.num_layers))] if layers is None else (
        [layers] if isinstance(layers, str) else list(layers))
    poolings = [poolings] if isinstance(poolings, str) else list(poolings)
    for pooling in poolings:
        pool(torch.zeros(1, 1), pooling)
    if not 0 <= int(timestep) < len(model.alphas_cumprod):
        raise ValueError(f"timestep {timestep} is outside the DiT's schedule 0 … {len(model.alphas_cumprod) - 1}")
    n = len(images)
    if n == 0:
        raise ValueError("no images to extract representations from")
    labels = model.labels(labels, n)
    seeds = list(range(EXTRACTION_SEED, EXTRACTION_SEED + n)) if seeds is None else list(seeds)
    out = {layer: {pooling: [] for pooling in poolings} for layer in layers}
    recorder = RepresentationRecorder(model.transformer, layers)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            z_0 = model.encode(images[start:start + batch_size].float())                         # [B, 4, h, w]
            noise = torch.cat([torch.randn(z_0[:1].shape, generator=g)
                               for g in seeded_generators(seeds[start:start + len(z_0)])]).to(z_0.device)
            with recorder:
                model.eps(model.noisy(z_0, timestep, noise), int(timestep), labels[start:start + len(z_0)])
            for layer in layers:
                tokens = recorder.outputs[layer].float()                                          # [B, N, C]
                for pooling in poolings:
                    out[layer][pooling].append(pool(tokens.transpose(1, 2), pooling).cpu().numpy())   # [B, C]
    return {layer: {p: np.concatenate(v) for p, v in by_pool.items()} for layer, by_pool in out.items()}
