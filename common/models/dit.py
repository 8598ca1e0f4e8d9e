"""A class-conditional latent DiT (Peebles & Xie 2023) from diffusers' parts: the model a researcher has — e.g.
facebook/DiT-XL-2-256 — or the one `testbeds/dit_testbed.py` trains here, behind one object.

    model = DiTModel.from_pretrained(folder)        # transformer/, vae/, scheduler/ (DiTPipeline's layout)
    images = sample(model, labels, seeds)           # DDIM with classifier-free guidance, our own loop
    eps = model.eps(z_t, t, labels)                 # ε-prediction (the learned-σ half dropped)

DiT's diffusion (its `create_diffusion`): ε-prediction on the linear β schedule 1e-4 … 0.02 over 1,000 steps,
z_t = sqrt(ᾱ_t) z_0 + sqrt(1 − ᾱ_t) ε on VAE latents × `scaling_factor`. Class labels 0 … K−1; the null label of
classifier-free guidance is K (= `num_embeds_ada_norm`): diffusers' `LabelEmbedding` keeps a (K+1)-th row for it and,
in train mode, replaces each label by it with probability 0.1 (DiT's class dropout, drawn from torch's global
generator). Guidance: ε = ε_∅ + w (ε_c − ε_∅), w = 4 (DiT's `sample.py` default). A released DiT predicts a
learned σ too (`out_channels` = 2 × 4): its first half is ε.

Why our own sampling loop: `DiTPipeline` hard-codes the null class 1000, so a model with K ≠ 1000 classes needs
its own; and its CFG batch is [conditional; unconditional], while the steerer (`steering/steerer.py`) steers the second
half of diffusers' SD order [unconditional; conditional] — this loop uses the SD order.

The representation of the paper's detector on a transformer: the MLP hidden of one block,
`transformer_blocks.{i}.ff.net.0` (diffusers' `GELU` module: Linear then tanh-GELU, [B, tokens, 4 · width]; DiT-L:
p = 4,096 as in the project blog's ImageNet figure), pooled over tokens.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

NUM_TRAIN_TIMESTEPS = 1000
DIT_SCHEDULE = dict(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
GUIDANCE_SCALE = 4.0
NUM_INFERENCE_STEPS = 50
CONFIG_NAME = "dit.json"
FF_LAYER = "transformer_blocks.{}.ff.net.0"
# facebook/DiT-XL-2-256's transformer (its transformer/config.json; diffusers' defaults): 28 blocks of width
# 16 x 72 = 1152, patch 2 on 32x32x4 latents (256 tokens), learned σ, 1,000 classes. Tests build it from config.
DIT_XL_2_256_CONFIG = dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
                           sample_size=32, patch_size=2, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
                           norm_type="ada_norm_zero", norm_elementwise_affine=False)


def ff_layer(block: int) -> str:
    """The MLP hidden of transformer block `block` (post-GELU, [B, tokens, 4 · width])."""
    return FF_LAYER.format(block)


def default_block(num_layers: int) -> int:
    """The detector's block, fixed before any result: the first block past the middle of the network. In SD v1.4's
    UNet the detector's `up_blocks.0` is the first stage after the bottleneck (the middle of the computation); a
    DiT has no bottleneck, so its middle by depth stands in (DiT-XL: block 14 of 28; the testbed's 6: block 3)."""
    return num_layers // 2


class DiTModel(nn.Module):
    """A `DiTTransformer2DModel`, its VAE and its noise schedule: what the detectors and the sampler need."""

    def __init__(self, transformer: nn.Module, vae: nn.Module, scheduler_config: dict | None = None):
        super().__init__()
        from diffusers import DDIMScheduler

        self.transformer, self.vae = transformer, vae
        config = {**DIT_SCHEDULE, **(scheduler_config or {})}
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        self.scheduler = DDIMScheduler.from_config({**config, "clip_sample": False, "set_alpha_to_one": False,
                                                    "prediction_type": "epsilon"})
        self.register_buffer("alphas_cumprod", self.scheduler.alphas_cumprod.float(), persistent=False)   # [T]

    @property
    def num_classes(self) -> int:
        return int(self.transformer.config.num_embeds_ada_norm)

    @property
    def null_label(self) -> int:
        return self.num_classes

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        c = self.transformer.config
        return (c.in_channels, c.sample_size, c.sample_size)

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def num_layers(self) -> int:
        return int(self.transformer.config.num_layers)

    def labels(self, labels: Sequence[int] | torch.Tensor | int | None, n: int) -> torch.Tensor:
        """Labels as a LongTensor [n]; None means the null label (unconditional, prompt-free)."""
        if labels is None:
            labels = self.null_label
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        labels = labels.expand(n) if labels.numel() == 1 else labels
        if len(labels) != n or labels.min() < 0 or labels.max() > self.null_label:
            raise ValueError(f"need {n} labels in 0 … {self.null_label} (null), got {labels.tolist()[:8]}…")
        return labels.to(self.device)

    def eps(self, z_t: torch.Tensor, t: torch.Tensor | int, labels: torch.Tensor) -> torch.Tensor:
        """ε̂(z_t, t, label): [B, 4, h, w] (a learned-σ model's second half dropped)."""
        t = torch.as_tensor(t, device=z_t.device).reshape(-1).expand(len(z_t))
        out = self.transformer(z_t, timestep=t, class_labels=labels).sample                  # [B, 4 or 8, h, w]
        return out[:, : z_t.shape[1]]

    def noisy(self, z_0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """z_t = sqrt(ᾱ_t) z_0 + sqrt(1 − ᾱ_t) ε."""
        abar = self.alphas_cumprod[int(t)]
        return abar.sqrt() * z_0 + (1 - abar).sqrt() * noise

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Images [N, 3, H, W] in [-1, 1] -> VAE posterior means × scaling_factor: [N, 4, h, w]."""
        out = [self.vae.encode(images[i:i + batch_size].to(self.device)).latent_dist.mean
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Latents × scaling_factor -> images [N, 3, H, W] clamped to [-1, 1]."""
        out = [self.vae.decode(latents[i:i + batch_size] / self.vae.config.scaling_factor).sample
               for i in range(0, len(latents), batch_size)]
        return torch.cat(out).clamp(-1, 1)

    def save_pretrained(self, folder) -> None:
        folder = Path(folder)
        self.transformer.save_pretrained(folder / "transformer")
        self.vae.save_pretrained(folder / "vae")
        self.scheduler.save_pretrained(folder / "scheduler")
        (folder / CONFIG_NAME).write_text(json.dumps({"class": "DiTModel", "num_classes": self.num_classes}))

    @classmethod
    def from_pretrained(cls, folder, device=None) -> "DiTModel":
        """A folder in DiTPipeline's layout (transformer/, vae/, scheduler/): ours or e.g. facebook/DiT-XL-2-256."""
        from diffusers import AutoencoderKL, DiTTransformer2DModel

        folder = Path(folder).expanduser()
        missing = [p for p in ("transformer", "vae", "scheduler") if not (folder / p).is_dir()]
        if missing:
            raise FileNotFoundError(f"{folder} is not a DiT folder (no {', '.join(missing)}/): train the testbed "
                                    "with common.testbeds.dit_testbed.ensure_dit_testbed(), or download a DiTPipeline folder "
                                    "elsewhere (`huggingface-cli download facebook/DiT-XL-2-256 --local-dir …`)")
        scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        model = cls(DiTTransformer2DModel.from_pretrained(folder / "transformer"),
                    AutoencoderKL.from_pretrained(folder / "vae"), scheduler_config)
        return model.eval().to(device or "cpu")


def is_dit_folder(model) -> bool:
    return model is not None and (Path(str(model)).expanduser() / "transformer" / "config.json").is_file()


def initial_noise(seeds: Sequence[int], shape: tuple[int, ...]) -> torch.Tensor:
    """z_T of each sample from its own seed (a sample does not depend on its batch): [N, *shape]."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def sample_latents(model: DiTModel, labels: torch.Tensor, z_T: torch.Tensor, num_steps: int = NUM_INFERENCE_STEPS,
                   guidance_scale: float = GUIDANCE_SCALE) -> torch.Tensor:
    """Deterministic DDIM (η = 0) from z_T with classifier-free guidance; the batch the transformer sees is
    [unconditional; conditional] (SD's order). guidance_scale ≤ 1: the conditional model alone. [B, 4, h, w]."""
    scheduler = model.scheduler
    scheduler.set_timesteps(num_steps)
    z, cfg = z_T.to(model.device), guidance_scale > 1
    null = torch.full_like(labels, model.null_label)
    for t in scheduler.timesteps:
        if cfg:
            eps_uncond, eps_cond = model.eps(torch.cat([z, z]), t, torch.cat([null, labels])).chunk(2)
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        else:
            eps = model.eps(z, t, labels)
        z = scheduler.step(eps, t, z).prev_sample
    return z


def sample(model: DiTModel, labels: Sequence[int], seeds: Sequence[int], num_steps: int = NUM_INFERENCE_STEPS,
           guidance_scale: float = GUIDANCE_SCALE, batch_size: int = 125, progress: bool = False) -> torch.Tensor:
    """One image per (label, seed): [N, 3, H, W] in [-1, 1]."""
    from tqdm.auto import tqdm

    labels, seeds = list(labels), list(seeds)
    if len(labels) != len(seeds):
        raise ValueError(f"{len(labels)} labels for {len(seeds)} seeds: need one per sample")
    out = []
    for start in tqdm(range(0, len(seeds), batch_size), desc="DiT DDIM sampling", disable=not progress):
        part = slice(start, start + batch_size)
        z_T = initial_noise(seeds[part], model.latent_shape)
        z = sample_latents(model, model.labels(labels[part], len(z_T)), z_T, num_steps, guidance_scale)
        out.append(model.decode(z).cpu())
    return torch.cat(out)
