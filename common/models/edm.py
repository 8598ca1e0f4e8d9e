"""EDM (Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space of Diffusion-Based Generative Models")
around a stock diffusers `UNet2DModel`: the denoiser D(x; σ), its training loss, and its Heun sampler.

diffusers has EDM's schedulers but no EDM network; as NVlabs/edm's `EDMPrecond` wraps its own UNet, `EDMDenoiser`
wraps a `UNet2DModel` F with the preconditioning of the paper's Table 1 (σ_data = 0.5):

    D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ))                                     (eq. 7)
    c_skip = σ_data² / (σ² + σ_data²)     c_out = σ σ_data / sqrt(σ² + σ_data²)
    c_in   = 1 / sqrt(σ² + σ_data²)       c_noise = ¼ ln σ

Training (§5): ln σ ~ N(P_mean = −1.2, P_std = 1.2), loss λ(σ) ‖D(y + n; σ) − y‖² with n ~ N(0, σ² I) and
λ(σ) = (σ² + σ_data²) / (σ σ_data)², which makes the effective target of F unit-variance at every σ.
Sampling (Algorithm 1, deterministic): Heun's 2nd-order method on the probability-flow ODE dx/dσ = (x − D(x; σ))/σ,
on the steps σ_i = (σ_max^{1/ρ} + i/(N−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, ρ = 7, σ_N = 0 (eq. 5); CIFAR10: N = 18
(35 network evaluations), σ_min = 0.002, σ_max = 80. Images live in [-1, 1], as in EDM.

On disk a denoiser is an ordinary folder: `unet/` (the UNet's `save_pretrained`) and `edm.json` (σ_data), so
`EDMDenoiser.from_pretrained(folder)` restores it and `UNet2DModel.from_pretrained(folder / "unet")` reads the
network alone.

A public unconditional diffusers model (e.g. google/ddpm-cifar10-32: ε-prediction on DDPM's discrete linear β) is
the same D(x; σ) in other coordinates (EDM Appendix C.1, "VP"): with ᾱ_t = Π(1 − β_s) and σ(t) = sqrt((1 − ᾱ_t)/ᾱ_t),
the VE point x_σ = x_0 + σ n is the VP point x_t = x_σ / sqrt(1 + σ²), and

    D(x_σ; σ) = x_σ − σ ε̂(x_σ / sqrt(1 + σ²), t(σ))                                              (VP → VE)

with t(σ) interpolated in ln σ between the schedule's integer steps (k-diffusion's `sigma_to_t`). `VPDenoiser`
does this, so the detectors, the sampler and the Jacobian run on it unchanged; `load_denoiser` takes either kind.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

SIGMA_DATA = 0.5
P_MEAN, P_STD = -1.2, 1.2             # the log-normal training distribution of σ
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
NUM_STEPS = 18                        # EDM's CIFAR10 setting: 18 steps, 35 network evaluations
CONFIG_NAME = "edm.json"


class EDMDenoiser(nn.Module):
    """D(x; σ) of eq. 7 around a `UNet2DModel` (EDM's `EDMPrecond`)."""

    sigma_min, sigma_max = SIGMA_MIN, SIGMA_MAX      # the noise range it was trained on (EDM's sampling range)

    def __init__(self, unet: nn.Module, sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.unet = unet
        self.sigma_data = float(sigma_data)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """x [B, C, H, W], σ a scalar or [B] -> D(x; σ) [B, C, H, W]."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        sigma = sigma.expand(len(x)) if sigma.numel() == 1 else sigma                   # [B]
        s = sigma.reshape(-1, 1, 1, 1)                                                   # [B, 1, 1, 1]
        c_skip = self.sigma_data**2 / (s**2 + self.sigma_data**2)
        c_out = s * self.sigma_data / (s**2 + self.sigma_data**2).sqrt()
        c_in = 1 / (s**2 + self.sigma_data**2).sqrt()
        c_noise = sigma.log() / 4                                                        # [B]
        F_x = self.unet((c_in * x).to(self.dtype), c_noise.to(self.dtype)).sample.float()
        return c_skip * x + c_out * F_x

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c = self.unet.config
        return (c.in_channels, c.sample_size, c.sample_size)

    def save_pretrained(self, folder) -> None:
        folder = Path(folder)
        self.unet.save_pretrained(folder / "unet")
        (folder / CONFIG_NAME).write_text(json.dumps({"class": "EDMDenoiser", "sigma_data": self.sigma_data}))

    @classmethod
    def from_pretrained(cls, folder, device=None, dtype=None) -> "EDMDenoiser":
        from diffusers import UNet2DModel

        folder = Path(folder)
        if not (folder / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{folder} is not an EDM denoiser folder (no {CONFIG_NAME}): train one with "
                                    "common.testbeds.edm_testbed.ensure_edm_testbed(), or point at a folder it wrote")
        config = json.loads((folder / CONFIG_NAME).read_text())
        unet = UNet2DModel.from_pretrained(folder / "unet")
        model = cls(unet, config["sigma_data"]).eval()
        return model.to(device=device or "cpu", dtype=dtype or torch.float32)


def is_edm_folder(model) -> bool:
    return model is not None and (Path(str(model)).expanduser() / CONFIG_NAME).is_file()


# ----------------------------------------------------------------------------------------------------
# A discrete-time ε-prediction model (DDPM) as a VE denoiser
# ----------------------------------------------------------------------------------------------------
DDPM_CIFAR10_HUB_ID = "google/ddpm-cifar10-32"
# Its UNet config as published with the weights (config.json; the DDPM paper's CIFAR10 net, 35.7 M parameters):
# ch_mult (1, 2, 2, 2), attention at 16x16, so up_blocks.0 runs at 4x4. Tests build it with random weights.
DDPM_CIFAR10_UNET_CONFIG = dict(
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), act_fn="silu", attention_head_dim=None,
    center_input_sample=False, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, mid_block_scale_factor=1,
    norm_eps=1e-6, norm_num_groups=32, time_embedding_type="positional")
DDPM_SCHEDULE = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


class VPDenoiser(EDMDenoiser):
    """D(x; σ) = x − σ ε̂(x / sqrt(1 + σ²), t(σ)) for an ε-prediction `UNet2DModel` on a discrete schedule."""

    def __init__(self, unet: nn.Module, alphas_cumprod: torch.Tensor):
        super().__init__(unet)
        alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.register_buffer("log_sigmas", (((1 - alphas_cumprod) / alphas_cumprod).sqrt().log()).float())  # [T]
        self.sigma_min, self.sigma_max = float(self.log_sigmas[0].exp()), float(self.log_sigmas[-1].exp())

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """The fractional timestep whose σ(t), interpolated linearly in ln σ, is `sigma`: [B] float32."""
        log_sigma = sigma.float().log().clamp(self.log_sigmas[0], self.log_sigmas[-1])
        upper = torch.searchsorted(self.log_sigmas, log_sigma).clamp(1, len(self.log_sigmas) - 1)    # [B]
        lo, hi = self.log_sigmas[upper - 1], self.log_sigmas[upper]
        return (upper - 1).float() + (log_sigma - lo) / (hi - lo)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        sigma = sigma.expand(len(x)) if sigma.numel() == 1 else sigma                   # [B]
        s = sigma.reshape(-1, 1, 1, 1)
        x_t = x / (1 + s**2).sqrt()                                                      # the VP point
        eps = self.unet(x_t.to(self.dtype), self.sigma_to_t(sigma).to(self.dtype)).sample.float()
        return x - s * eps

    def save_pretrained(self, folder) -> None:
        raise NotImplementedError("a VPDenoiser is a view of a diffusers model folder: save the UNet and scheduler")


def load_denoiser(model, device=None, dtype=None) -> EDMDenoiser:
    """An EDM testbed folder (`edm.json`), or a diffusers unconditional ε-prediction model: a hub id such as
    DDPM_CIFAR10_HUB_ID (HF cache, or the network), or a local folder in DDPMPipeline's layout (`unet/`,
    `scheduler/`) or a bare UNet folder (`config.json` and `scheduler_config.json` side by side)."""
    from diffusers import DDPMScheduler, UNet2DModel

    path = Path(str(model)).expanduser()
    if is_edm_folder(path):
        return EDMDenoiser.from_pretrained(path, device, dtype)
    folder = path if path.is_dir() else _hub_snapshot(str(model))
    unet_dir = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
    scheduler_dir = folder / "scheduler" if (folder / "scheduler").is_dir() else folder
    if not (unet_dir / "config.json").is_file() or not (scheduler_dir / "scheduler_config.json").is_file():
        raise FileNotFoundError(f"{folder} holds neither an EDM denoiser ({CONFIG_NAME}) nor a diffusers UNet2DModel "
                                "with its scheduler (unet/ + scheduler/, or config.json + scheduler_config.json)")
    scheduler = DDPMScheduler.from_pretrained(scheduler_dir)
    if scheduler.config.prediction_type != "epsilon":
        raise ValueError(f"{folder}: prediction_type {scheduler.config.prediction_type!r}; only ε-prediction is mapped")
    unet = UNet2DModel.from_pretrained(unet_dir)
    if unet.config.out_channels != unet.config.in_channels:
        raise ValueError(f"{folder}: out_channels {unet.config.out_channels} != in_channels (a learned-variance model?)")
    return VPDenoiser(unet, scheduler.alphas_cumprod).eval().to(device=device or "cpu", dtype=dtype or torch.float32)


def _hub_snapshot(repo_id: str) -> Path:
    """The local snapshot of a hub repo: from the HF cache, else downloaded; offline and uncached, a clear error."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        pass
    try:
        return Path(snapshot_download(repo_id))
    except Exception as error:
        raise FileNotFoundError(
            f"{repo_id!r} is neither a local folder nor in the Hugging Face cache, and downloading it failed "
            f"({type(error).__name__}). On a machine with network access run `huggingface-cli download {repo_id} "
            f"--local-dir /path/to/folder` and pass that folder.") from error


# ----------------------------------------------------------------------------------------------------
# Training loss (§5, Table 1 "Training")
# ----------------------------------------------------------------------------------------------------
def edm_loss(denoiser: EDMDenoiser, y: torch.Tensor, generator: torch.Generator | None = None,
             p_mean: float = P_MEAN, p_std: float = P_STD) -> torch.Tensor:
    """λ(σ) ‖D(y + n; σ) − y‖² per image, mean over pixels: [B]. y [B, C, H, W] clean images in [-1, 1]."""
    ln_sigma = p_mean + p_std * torch.randn(len(y), generator=generator)                # [B] ln σ ~ N(P_mean, P_std²)
    sigma = ln_sigma.exp().to(y.device)
    s = sigma.reshape(-1, 1, 1, 1)
    weight = (s**2 + denoiser.sigma_data**2) / (s * denoiser.sigma_data) ** 2           # λ(σ)
    n = torch.randn(y.shape, generator=generator).to(y.device) * s
    return (weight * (denoiser(y + n, sigma) - y) ** 2).flatten(1).mean(dim=1)


# ----------------------------------------------------------------------------------------------------
# Sampling (Algorithm 1)
# ----------------------------------------------------------------------------------------------------
def karras_sigmas(num_steps: int = NUM_STEPS, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                  rho: float = RHO) -> torch.Tensor:
    """σ_0 > ... > σ_{N−1} of eq. 5, then σ_N = 0: float64 [N + 1]."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    i = torch.arange(num_steps, dtype=torch.float64)
    ramp = i / max(num_steps - 1, 1)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def heun_sample(denoiser: EDMDenoiser, x_T: torch.Tensor, num_steps: int = NUM_STEPS, sigma_min: float = SIGMA_MIN,
                sigma_max: float = SIGMA_MAX, rho: float = RHO) -> torch.Tensor:
    """Algorithm 1 from x_T ~ N(0, I) (scaled by σ_0 here): [B, C, H, W] in about [-1, 1]. The σ range is cut to
    the denoiser's own (a VP model's starts at σ(t=0) ≈ 0.01), as EDM's `edm_sampler` does."""
    sigma_min = max(sigma_min, getattr(denoiser, "sigma_min", sigma_min))
    sigma_max = min(sigma_max, getattr(denoiser, "sigma_max", sigma_max))
    sigmas = karras_sigmas(num_steps, sigma_min, sigma_max, rho)
    x = x_T.double() * sigmas[0]
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        d = (x - denoiser(x.float(), float(sigma)).double()) / sigma                     # dx/dσ at σ_i
        x_next = x + (sigma_next - sigma) * d                                            # Euler step
        if sigma_next > 0:                                                                # 2nd-order correction
            d_next = (x_next - denoiser(x_next.float(), float(sigma_next)).double()) / sigma_next
            x_next = x + (sigma_next - sigma) * (d + d_next) / 2
        x = x_next
    return x.float()


def initial_noise(seeds: Sequence[int], shape: tuple[int, ...]) -> torch.Tensor:
    """x_T of each sample from its own seed (so a sample does not depend on its batch): [N, *shape]."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def generate(denoiser: EDMDenoiser, seeds: Sequence[int], num_steps: int = NUM_STEPS, batch_size: int = 128,
             progress: bool = False) -> torch.Tensor:
    """One sample per seed: [N, C, H, W], clamped to [-1, 1]."""
    from tqdm.auto import tqdm

    seeds = list(seeds)
    out = []
    for start in tqdm(range(0, len(seeds), batch_size), desc="EDM Heun sampling", disable=not progress):
        x_T = initial_noise(seeds[start:start + batch_size], denoiser.image_shape).to(denoiser.device)
        out.append(heun_sample(denoiser, x_T, num_steps).clamp(-1, 1).cpu())
    return torch.cat(out)


def noise_level_check(sigma: float, denoiser: EDMDenoiser | None = None) -> float:
    """σ as a float, or a clear error when it is outside the model's noise range [σ_min, σ_max] (EDM's when no
    denoiser is given)."""
    sigma = float(sigma)
    sigma_min, sigma_max = (denoiser.sigma_min, denoiser.sigma_max) if denoiser is not None else (SIGMA_MIN, SIGMA_MAX)
    if not (sigma_min <= sigma <= sigma_max) or math.isnan(sigma):
        name = "EDM" if denoiser is None or type(denoiser) is EDMDenoiser else type(denoiser).__name__
        raise ValueError(f"σ = {sigma} is outside the {name} model's noise range [{sigma_min:.4g}, {sigma_max:.4g}]")
    return sigma
