"""Stable Diffusion pipelines: the real one (hub id or local folder) and random-weight ones built offline.

`load_pipeline` follows the official `load_sd_pipe`: `StableDiffusionPipeline`, the
scheduler replaced by `DDIMScheduler.from_config`, safety checker off, fp16 on CUDA and fp32 on CPU. The
model is, in this order of precedence, the `model` argument, the environment variable `DGR_SD_MODEL`, or
`CompVis/stable-diffusion-v1-4` from the Hugging Face hub (downloaded once into the HF cache). When the
hub cannot be reached and nothing is cached, it fails within seconds and says how to point at a local
copy.

`build_random_pipeline` makes a `StableDiffusionPipeline` of the same architecture family from configs,
with random weights, entirely offline: `"tiny"` (seconds on a CPU; used by the tests and SMOKE runs) or
`"sd14"` (the SD v1.4 UNet and VAE at full size, with a small text encoder of the same width; used by the
slow tests and the speed benchmark). Random weights mean nothing about the paper; they exercise the code.

The CPU testbed (`testbeds/cpu_testbed.py`) is saved as an ordinary diffusers folder and loaded from it exactly like
a local copy of SD v1.4; the name "testbed" and the choice between SD and the testbed belong to `families`.

Everything downstream (generation, the representation recorder, the detector, the baseline) takes the
pipeline and module names, so SD v1.4, the CPU testbed and these random pipelines share one code path.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

from ..plumbing import notices
from ..plumbing.network import hf_offline, hub_reachable

SD14_HUB_ID = "CompVis/stable-diffusion-v1-4"
MODEL_ENV_VAR = "DGR_SD_MODEL"          # a hub id or a local folder, used when no model is passed
SD_ON_CPU_ENV_VAR = "DGR_SD_ON_CPU"     # "1": the SD notebooks' default run takes SD v1.4 without a GPU (hours)
RANDOM_MODELS = ("tiny", "sd14")        # names that build a random-weight pipeline instead of loading one

# The DDIM schedule of SD v1.x (its scheduler_config.json): scaled-linear betas, 1000 training steps.
SD_SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                           beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                           steps_offset=1)

# SD v1.4's unet/config.json and vae/config.json (the parts that differ from the diffusers defaults).
SD14_UNET_CONFIG = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8,
)
SD14_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)

# The tiny pipeline keeps SD's layout (UpBlock2D first, so `up_blocks.0.resnets.2` exists, at 8x8 as in
# SD v1.4) with 32/64 channels: 32x32 images -> 16x16x4 latents -> up_blocks.0 at 8x8 with 64 channels.
TINY_UNET_CONFIG = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32, attention_head_dim=8,
)
TINY_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=32,
    block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
)
TEXT_ENCODER_WIDTH = {"tiny": 32, "sd14": 768}  # must equal the UNet's cross_attention_dim


class PipelineUnavailableError(RuntimeError):
    """The requested model cannot be loaded here (offline and not cached, or a missing folder)."""


def offline_hint() -> str:
    return (
        f"Download it once on a machine with network access (`huggingface-cli download {SD14_HUB_ID} "
        f"--local-dir /path/to/sd-v1-4`) and point at the folder: MODEL='/path/to/sd-v1-4' in the notebook's "
        f"parameter cell, or `export {MODEL_ENV_VAR}=/path/to/sd-v1-4`. For a run without the weights use "
        f"MODEL='tiny' (random weights; checks the code, not the paper)."
    )


def resolve_model(model: str | os.PathLike | None = None) -> str:
    """`model`, else $DGR_SD_MODEL, else the SD v1.4 hub id."""
    return str(model) if model is not None else os.environ.get(MODEL_ENV_VAR) or SD14_HUB_ID


def stable_diffusion_missing_reason(timeout: float = 3.0) -> str | None:
    """None if the paper's default run can go here (SD v1.4 weights and a CUDA GPU), else what is missing."""
    missing = [reason for reason in (weights_missing_reason(timeout=timeout), gpu_missing_reason()) if reason]
    return "; ".join(missing) or None


def gpu_missing_reason() -> str | None:
    """None where SD v1.4 may run: a CUDA GPU, or $DGR_SD_ON_CPU=1 (a user who accepts CPU hours; the tests use it
    with a tiny pipeline folder to take the notebooks' default path)."""
    if torch.cuda.is_available() or os.environ.get(SD_ON_CPU_ENV_VAR) == "1":
        return None
    return f"needs a CUDA GPU (or {SD_ON_CPU_ENV_VAR}=1 to run on the CPU)"


def is_local(model: str) -> bool:
    return model.startswith((".", "/", "~")) or Path(model).expanduser().exists()


def _hub_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str)


def weights_missing_reason(model: str | os.PathLike | None = None, timeout: float = 3.0) -> str | None:
    """None if `load_pipeline(model)` can find the weights (a local folder, the HF cache, or a reachable hub),
    else one line saying what is missing. Fast and offline-safe (at most `timeout` seconds)."""
    model = resolve_model(model)
    if model in RANDOM_MODELS:
        return None
    if is_local(model):
        folder = Path(model).expanduser()
        return None if (folder / "model_index.json").is_file() else f"{folder} is not a diffusers pipeline folder (no model_index.json)"
    if _hub_cached(model) or hub_reachable(timeout):
        return None
    why = "HF_HUB_OFFLINE is set" if hf_offline() else "the Hugging Face hub is not reachable"
    return f"needs the {model} weights (not in the HF cache and {why}); set {MODEL_ENV_VAR}=/path/to/folder"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(device: str, dtype: torch.dtype | str | None = None) -> torch.dtype:
    """fp16 on CUDA and fp32 on CPU unless told otherwise; fp16 on CPU is refused with a warning (fp32)."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is None:
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    if dtype == torch.float16 and not str(device).startswith("cuda"):
        warnings.warn("fp16 was requested on the CPU, where half-precision convolutions are slow or "
                      "unsupported; using fp32", stacklevel=3)
        return torch.float32
    return dtype


def load_pipeline(model: str | os.PathLike | None = None, device: str | None = None,
                  dtype: torch.dtype | str | None = None, seed: int = 0, timeout: float = 3.0):
    """A `StableDiffusionPipeline` with a DDIM scheduler and no safety checker, on `device` in `dtype`.

    model: a hub id or a local diffusers folder (see the module docstring for the default; the CPU testbed's is one),
    or one of `RANDOM_MODELS` for a random-weight pipeline built from config (seeded with `seed`).
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    model = resolve_model(model)
    device = device or default_device()
    dtype = resolve_dtype(device, dtype)
    if model in RANDOM_MODELS:
        pipe = build_random_pipeline(model, seed=seed)       # built in fp32
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
    else:
        missing = weights_missing_reason(model, timeout)
        if missing:
            raise PipelineUnavailableError(f"{missing}. {offline_hint()}")
        local = is_local(model)
        offline = local or _hub_cached(model)               # a local or cached model never touches the network
        with notices.quiet_loading() if offline else contextlib.nullcontext():   # no bars reading local files
            pipe = StableDiffusionPipeline.from_pretrained(
                str(Path(model).expanduser()) if local else model, dtype=dtype, safety_checker=None,
                requires_safety_checker=False, local_files_only=offline,
            )
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


# ----------------------------------------------------------------------------------------------------
# Random-weight pipelines, built offline
# ----------------------------------------------------------------------------------------------------
def _byte_level_alphabet() -> list[str]:
    """The 256 characters GPT-2/CLIP byte-level BPE uses for the bytes 0-255 (`bytes_to_unicode`): printable
    bytes stand for themselves, the others are shifted to 256, 257, ... in byte order."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    shifted = iter(range(256, 512))
    return [chr(byte if byte in printable else next(shifted)) for byte in range(256)]


def build_character_tokenizer(max_length: int = 77):
    """A `CLIPTokenizer` whose vocabulary is the 256 byte-level characters (each also with CLIP's word-end
    marker `</w>`) plus the start/end tokens, and no merges: every prompt tokenizes character by character.

    Written to files and read back with `from_pretrained`: in transformers 5, `CLIPTokenizer(vocab_file=...,
    merges_file=...)` silently builds a 3-token vocabulary instead.
    """
    from transformers import CLIPTokenizer

    alphabet = _byte_level_alphabet()
    tokens = [*alphabet, *(c + "</w>" for c in alphabet), "<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer.from_pretrained(folder, model_max_length=max_length)


def build_random_pipeline(size: str = "tiny", seed: int = 0):
    """A `StableDiffusionPipeline` with random weights (seeded), built from configs, no file or network.

    size="tiny": `TINY_*_CONFIG`, 32x32 images. size="sd14": SD v1.4's UNet and VAE architectures at full size
    (512x512 images, 64x64 latents) with a 2-layer text encoder of SD's width 768.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if size not in RANDOM_MODELS:
        raise ValueError(f"unknown random pipeline {size!r}; choose one of {RANDOM_MODELS}")
    unet_config, vae_config = (TINY_UNET_CONFIG, TINY_VAE_CONFIG) if size == "tiny" else (SD14_UNET_CONFIG, SD14_VAE_CONFIG)
    width = TEXT_ENCODER_WIDTH[size]
    tokenizer = build_character_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_config)
    vae = AutoencoderKL(**vae_config)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    return StableDiffusionPipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(),
        scheduler=DDIMScheduler(**SD_SCHEDULER_CONFIG), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
