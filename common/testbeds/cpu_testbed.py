"""The CPU testbed: a small text-to-image latent diffusion model of Stable Diffusion's layout, trained here on
captioned scenes with duplicated pairs (`scenes.py`), so the application notebooks run and are measured
without SD v1.4 or a GPU.

    ensure_testbed()  ->  .cache/testbed/cpu-testbed-<config key>/   (trained once, then reused)
    pipelines.load_pipeline(that folder)  -- the same call that loads SD v1.4 from a local folder

The folder is an ordinary diffusers `StableDiffusionPipeline` (model_index.json, unet/, vae/, text_encoder/,
tokenizer/, scheduler/) plus `testbed.json`: the data config, the captions of each set, the training log.

Model (SD v1.4's classes, scaled down; 16x16 RGB images):
    AutoencoderKL          16x16x3 -> 8x8x4 latents (one downsampling), trained first on reconstruction
                           (+ a tiny KL term); scaling_factor = 1 / std of the latents, as SD's 0.18215
    CLIPTextModel          width 64, 2 layers, a word-level CLIP tokenizer (one token per caption word)
    UNet2DConditionModel   SD's block layout at two levels: down (CrossAttnDown, Down), mid (cross-attention),
                           up (Up, CrossAttnUp): `up_blocks.0.resnets.0/1/2` run at the lowest resolution,
                           4x4 (SD v1.4: 8x8), `up_blocks.1.resnets.0/1/2` at 8x8, so the paper's layer names
                           work unchanged; 4.4 M parameters
Training (the UNet and text encoder jointly): ε-prediction MSE on SD's DDPM schedule (scaled-linear
betas, 1,000 steps), AdamW with a linear warm-up, 10% of captions dropped to "" (for classifier-free
guidance and the empty-prompt detector), batches drawn uniformly from the training rows, so a pair
duplicated D times is seen D times as often.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..plumbing.paths import REPO_CACHE
from ..plumbing.results import config_key
from .cpu_testbed_truth import (COPY_THRESHOLD, KIND_CRITERIA, KIND_SETS, copy_report,  # noqa: F401 (this API)
                                criterion_false_copy_rate, kind_ground_truth, kind_prompts, template_false_copy_rate,
                                template_report)
from .scenes import CAPTION_WORDS, TITLE_WORDS, TestbedData, TestbedDataConfig, build_testbed_data, to_model_space
from .training import INFO_NAME, fit, folder_ready, recorded_data_config, thin, write_folder_atomically
from .training import read_info  # noqa: F401  (part of this module's API: testbed.read_info)

TESTBED_LABEL = "cpu-testbed"           # the model label in titles and results JSON
TESTBED_CACHE = REPO_CACHE / "testbed"
TRAINER_VERSION = 3                     # bump when the training code changes what it produces
MAX_TOKENS = 16                         # <start> + the longest caption (12 words) + <end>, padded

VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=16,
                  block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2)
# SD v1.4's block layout at two levels (cross-attention where SD has it, none in up_blocks.0); one attention
# head: CPU attention kernels are slow on small per-head widths.
UNET_CONFIG = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(64, 128),
                   down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64, attention_head_dim=1)
TEXT_CONFIG = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)


@dataclass(frozen=True)
class TestbedConfig:
    __test__ = False                    # not a pytest test class
    data: TestbedDataConfig = TestbedDataConfig()
    vae_steps: int = 1000
    vae_batch: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    steps: int = 4000                   # UNet + text encoder
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    caption_dropout: float = 0.1
    seed: int = 0

    def to_dict(self) -> dict:
        return {**asdict(self), "unet": UNET_CONFIG, "vae": VAE_CONFIG, "text": TEXT_CONFIG,
                "trainer_version": TRAINER_VERSION}


# SMOKE: seconds on a CPU, for CI; it trains every part but learns nothing.
SMOKE_CONFIG = TestbedConfig(data=TestbedDataConfig(n_pool=48, n_memorized=4, duplication=3, dose_duplications=(1, 2),
                                                    dose_pairs=2, n_controls=4, n_template=2, template_variants=2,
                                                    template_duplication=4, n_ordinary=2, ordinary_duplications=(3,),
                                                    ordinary_shared=1),
                             vae_steps=2, vae_batch=8, steps=3, batch_size=8, warmup=1)


# ----------------------------------------------------------------------------------------------------
# The tokenizer: CLIP's BPE with one merge chain per word
# ----------------------------------------------------------------------------------------------------
def build_word_tokenizer(words=CAPTION_WORDS + TITLE_WORDS, max_length: int = MAX_TOKENS):
    """A `CLIPTokenizer` in which each of `words` is one token; anything else falls back to characters.

    CLIP's BPE merges adjacent symbol pairs in rank order. Each word gets the chain of merges that builds it
    left to right (k, ko, kol, kolo</w>); chains of longer words rank first, so a shorter word's merges (e.g.
    "an") cannot fire inside a longer one ("orange", "triangle") first. Checked: every word is one token.
    """
    from transformers import CLIPTokenizer

    from ..models.pipelines import _byte_level_alphabet

    alphabet = _byte_level_alphabet()
    vocab = [*alphabet, *(c + "</w>" for c in alphabet)]
    merges = []
    for word in sorted(set(words), key=lambda w: (-len(w), w)):
        symbols = [*word[:-1], word[-1] + "</w>"]
        prefix = symbols[0]
        for symbol in symbols[1:]:
            merges.append(f"{prefix} {symbol}")
            prefix += symbol
            vocab.append(prefix)
    vocab = list(dict.fromkeys([*vocab, "<|startoftext|>", "<|endoftext|>"]))
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
        tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=max_length)
    split = [w for w in words if len(tokenizer(w, add_special_tokens=False).input_ids) != 1]
    if split:
        raise AssertionError(f"the word tokenizer splits {split}")
    return tokenizer


# ----------------------------------------------------------------------------------------------------
# The models
# ----------------------------------------------------------------------------------------------------
def build_models(tokenizer, seed: int):
    """(vae, text_encoder, unet) with fresh weights, seeded."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **TEXT_CONFIG))
    unet = UNet2DConditionModel(**UNET_CONFIG)
    return vae, text_encoder, unet


def train_vae(vae, images: torch.Tensor, config: TestbedConfig, generator: torch.Generator, progress: bool) -> dict:
    """Reconstruction MSE + kl_weight * KL on batches of distinct images ([M, 3, 16, 16] in [-1, 1])."""
    def batch_loss(step):
        x = images[torch.randint(len(images), (config.vae_batch,), generator=generator)]      # [B, 3, 16, 16]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        return F.mse_loss(vae.decode(z).sample, x) + config.kl_weight * posterior.kl().mean()

    vae.train()
    losses = fit(vae.parameters(), batch_loss, config.vae_steps, config.vae_lr, desc="VAE", progress=progress)
    vae.eval()
    return {"vae_loss": losses}


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and stds of `images`: [M, 4, 8, 8] each (unscaled)."""
    means, stds = [], []
    for start in range(0, len(images), batch):
        posterior = vae.encode(images[start:start + batch]).latent_dist
        means.append(posterior.mean), stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


def train_denoiser(unet, text_encoder, tokenizer, scheduler, latent_mean, latent_std, caption_ids, rows,
                   config: TestbedConfig, generator: torch.Generator, progress: bool) -> dict:
    """ε-prediction on SD's noise schedule; the UNet and the text encoder trained jointly.

    latent_mean/std: [M, 4, 8, 8] scaled posterior of each distinct image; caption_ids: [M, MAX_TOKENS];
    rows: [N] image index of every training example (duplicates repeated).
    """
    empty_ids = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    T = scheduler.config.num_train_timesteps

    def batch_loss(step):
        idx = rows[torch.randint(len(rows), (config.batch_size,), generator=generator)]     # [B] image indices
        z0 = latent_mean[idx] + latent_std[idx] * torch.randn(latent_mean[idx].shape, generator=generator)  # [B, 4, 8, 8]
        drop = torch.rand(len(idx), generator=generator) < config.caption_dropout                     # [B]
        ids = torch.where(drop[:, None], empty_ids, caption_ids[idx])                                # [B, L]
        noise = torch.randn(z0.shape, generator=generator)
        t = torch.randint(T, (len(idx),), generator=generator)                                       # [B]
        z_t = scheduler.add_noise(z0, noise, t)
        context = text_encoder(ids)[0]                                                               # [B, L, 64]
        return F.mse_loss(unet(z_t, t, encoder_hidden_states=context).sample, noise)

    unet.train(), text_encoder.train()
    losses = fit([*unet.parameters(), *text_encoder.parameters()], batch_loss, config.steps, config.lr,
                 weight_decay=1e-2, warmup=config.warmup, clip_norm=1.0, desc="UNet + text encoder", progress=progress)
    unet.eval(), text_encoder.eval()
    return {"unet_loss": losses}


# ----------------------------------------------------------------------------------------------------
# Train once, cache, load
# ----------------------------------------------------------------------------------------------------
def testbed_folder(config: TestbedConfig = TestbedConfig(), root=None) -> Path:
    return Path(root or TESTBED_CACHE) / f"{TESTBED_LABEL}-{config_key(config.to_dict())}"


def is_testbed(model) -> bool:
    """Whether `model` (a name or folder) is a CPU-testbed pipeline folder."""
    return model is not None and (Path(str(model)).expanduser() / INFO_NAME).is_file()


def train_testbed(config: TestbedConfig, folder, progress: bool = True) -> dict:
    """Build the data, train the VAE then the UNet and text encoder, save the pipeline folder. Returns the info."""
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionPipeline

    from ..models.pipelines import SD_SCHEDULER_CONFIG

    t_start = time.perf_counter()
    data = build_testbed_data(config.data)
    tokenizer = build_word_tokenizer()
    vae, text_encoder, unet = build_models(tokenizer, config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    images = torch.from_numpy(to_model_space(data.images[data.trained_unique]))                # [M', 3, 16, 16]

    t0 = time.perf_counter()
    log = train_vae(vae, images, config, generator, progress)
    vae_seconds = time.perf_counter() - t0

    all_images = torch.from_numpy(to_model_space(data.images))                                 # [M, 3, 16, 16]
    mean, std = encode_latents(vae, all_images)
    scaling = 1.0 / float(mean[data.trained_unique].std())
    vae.register_to_config(scaling_factor=scaling)
    with torch.no_grad():
        recon = torch.cat([vae.decode(mean[i:i + 256]).sample for i in range(0, len(mean), 256)]).clamp(-1, 1)
    mse = ((recon - all_images) ** 2).mean(dim=(1, 2, 3)) / 4.0                                # on the [0, 1] scale
    recon_psnr = float((10 * torch.log10(1.0 / mse.clamp_min(1e-12))).mean())

    caption_ids = tokenizer(data.captions, padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids                    # [M, L]
    scheduler = DDPMScheduler(**{k: v for k, v in SD_SCHEDULER_CONFIG.items() if k != "set_alpha_to_one"})
    t0 = time.perf_counter()
    log |= train_denoiser(unet, text_encoder, tokenizer, scheduler, mean * scaling, std * scaling, caption_ids,
                          torch.from_numpy(data.train_rows), config, generator, progress)
    unet_seconds = time.perf_counter() - t0

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(**SD_SCHEDULER_CONFIG), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    info = {
        "label": TESTBED_LABEL, "config": config.to_dict(),
        "train_seconds": time.perf_counter() - t_start, "vae_seconds": vae_seconds, "unet_seconds": unet_seconds,
        "torch_threads": torch.get_num_threads(), "reconstruction_psnr_db": recon_psnr, "scaling_factor": scaling,
        "n_train_rows": int(len(data.train_rows)), "n_distinct_train_images": int(len(data.trained_unique)),
        "parameters": {"unet": sum(p.numel() for p in unet.parameters()),
                       "text_encoder": sum(p.numel() for p in text_encoder.parameters()),
                       "vae": sum(p.numel() for p in vae.parameters())},
        "loss_curves": {k: thin(v) for k, v in log.items()},
    }
    write_folder_atomically(folder, pipe.save_pretrained, info)
    return info


def ensure_testbed(config: TestbedConfig = TestbedConfig(), progress: bool = True, root=None) -> Path:
    """The trained testbed's pipeline folder for `config`: trained here on first use (≈ 15 min on 2 cores at
    the default size, seconds at SMOKE size), then loaded from the cache; a damaged cached folder (a truncated
    weights file) is moved aside and trained again."""
    folder = testbed_folder(config, root)
    if folder_ready(folder):
        return folder
    print(f"training the CPU testbed into {folder} (once; cached afterwards)")
    info = train_testbed(config, folder, progress)
    print(f"trained in {info['train_seconds']:.0f} s (VAE {info['vae_seconds']:.0f} s, UNet {info['unet_seconds']:.0f} s)")
    return folder


def load_data(folder) -> TestbedData:
    """The data set a testbed folder was trained on (rebuilt from its config: deterministic)."""
    return build_testbed_data(recorded_data_config(TestbedDataConfig, folder))


# ----------------------------------------------------------------------------------------------------
# The testbed's prompt sets for the application notebooks
# ----------------------------------------------------------------------------------------------------
def prompt_records(folder):
    """(memorized, generalizing) `PromptRecord`s, all of them: the memorized titles (index = the image they name;
    type "VM": exact duplicated pairs, verbatim by construction, measured in CPU_testbed.ipynb) and the held-out
    captions."""
    from ..models.prompts import PromptRecord

    data = load_data(folder)
    return ([PromptRecord(data.captions[i], index=int(i), type="VM") for i in data.indices("memorized")],
            [PromptRecord(c) for c in data.held_out_captions])


def detection_prompts(folder, n_mem: int, n_gen: int):
    """The first n_mem memorized titles and n_gen held-out captions (`prompt_records`), saying so when fewer exist."""
    mem, gen = prompt_records(folder)
    if n_mem > len(mem) or n_gen > len(gen):
        print(f"the CPU testbed has {len(mem)} memorized and {len(gen)} held-out captions: using all "
              f"(asked for {n_mem} + {n_gen})")
    return mem[:n_mem], gen[:n_gen]


N_CALIBRATION = 1000       # NeMo's reference statistics on the testbed: this many distinct pool captions


def calibration_prompts(folder, n: int = N_CALIBRATION) -> list[str]:
    """The first `n` distinct training-pool captions that are never an evaluated prompt (memorized, dose and
    template titles, ordinary captions, which pool scenes can carry too, held-out captions) — what NeMo's reference statistics are computed from on the testbed
    (SD v1.4 has NeMo's released statistics of 50,000 LAION prompts instead)."""
    data = load_data(folder)
    evaluated = {data.captions[i] for kind in ("memorized", "dose", "template", "ordinary") for i in data.indices(kind)}
    pool = [c for c in dict.fromkeys(data.captions[i] for i in data.indices("pool")) if c not in evaluated][:n]
    if set(pool) & (evaluated | set(data.held_out_captions)):
        raise AssertionError("a calibration caption is also an evaluated prompt")
    return pool


STEERING_CONCEPT = ("dark background", ("circle", "red", "square", "blue", "black"), ("circle", "red", "square", "blue", "white"))
# The official grid (the paper's panel), extended: on the testbed the edit at α ≤ 0.5 is hard to see by eye, so the
# sweep goes on until the generalized edit is plain; the ratio is reported at every α
STEERING_ALPHAS = (0.0, 0.2, 0.3, 0.4, 0.5, 1.0, 2.0, 4.0)


def steering_prompts(folder) -> dict:
    """The testbed's steering task: POS/NEG reference captions differing only in the background (black vs
    white), five held-out captions on a gray background (generalizing) and the first five memorized titles."""
    from .scenes import caption

    data = load_data(folder)
    name, pos, neg = STEERING_CONCEPT
    return {"name": name, "pos_prompt": caption(*pos), "neg_prompt": caption(*neg),
            "gen_prompts": tuple([c for c in data.held_out_captions if c.endswith("gray background")][:5]),
            "mem_prompts": tuple(data.captions[i] for i in data.indices("memorized")[:5]),
            "alphas": STEERING_ALPHAS}
