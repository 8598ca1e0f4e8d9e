"""The toy diffusion model of the official `ReLU_Diffusion.ipynb`: the tied ReLU DAE made time-conditioned,
trained as a variance-exploding (VE) x0-predictor over all noise levels, and its reverse-VE sampler.

    h = ReLU(W x_t)                                   the representation (before the time scaling)
    x̂0(x_t, σ) = (h ⊙ exp(MLP(log σ))) W + s·x_t       multiplicative per-unit time conditioning, tied decoder

with W = `encoder.weight` ∈ R^{p×d} (p = 256 hidden units), MLP: 1 → p → p with its last layer
zero-initialised (so exp(·) = 1 at the start), and s a learnable scalar skip (init 0). Training draws
σ log-uniformly on [0.02, 2], x_t = x0 + σε, and minimises MSE(x̂0, x0) (paper-notes §3).

`train_diffusion` computes the gradients by hand (no autograd graph) and hands them to the stock torch
optimizer; `reference_train_diffusion` is the official-style loop (a shuffled DataLoader, autograd), for
tests and benchmarks. Both draw the batch order, σ and ε from the global torch generator in the same order,
so for one seed they follow the same run up to float rounding.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import checkpoints
from .checkpoints import load_official_state, load_safetensors, save_safetensors
from .dae import OPTIMIZERS, make_optimizer
from .results import array_fingerprint


class DAECond(nn.Module):
    """x̂0(x_t, σ) = (ReLU(W x_t) ⊙ exp(MLP(log σ))) W + skip · x_t (the official `DAECond`)."""

    def __init__(self, d: int = 1024, hidden: int = 256):
        super().__init__()
        self.encoder = nn.Linear(d, hidden, bias=False)                       # W [p, d]
        nn.init.kaiming_uniform_(self.encoder.weight, a=0, mode="fan_in", nonlinearity="relu")
        self.time_mlp = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        nn.init.zeros_(self.time_mlp[2].weight)                                # initial scale exp(0) = 1
        nn.init.zeros_(self.time_mlp[2].bias)
        self.skip = nn.Parameter(torch.zeros(1))

    def represent(self, x_t: torch.Tensor) -> torch.Tensor:
        """h = ReLU(W x_t), [B, d] -> [B, p]: the representation, before the time scaling."""
        return F.relu(self.encoder(x_t))

    def time_scale(self, sigma: torch.Tensor) -> torch.Tensor:
        """exp(MLP(log σ)), [B, 1] -> [B, p]."""
        return torch.exp(self.time_mlp(torch.log(sigma)))

    def forward(self, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        h = self.represent(x_t) * self.time_scale(sigma.reshape(-1, 1))      # [B, p]
        return F.linear(h, self.encoder.weight.t()) + self.skip * x_t        # [B, d]


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiffusionTrainConfig:
    """One training run. Defaults are the official memorization run (paper-notes §3.3)."""

    optimizer: str = "rmsprop"
    lr: float = 1e-3
    weight_decay: float = 1e-2
    steps: int = 100_000
    batch_size: int | None = None    # None: full batch (all n, shuffled); else shuffled epochs, drop_last
    sigma_min: float = 0.02
    sigma_max: float = 2.0
    seed: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


MEM_CONFIG = DiffusionTrainConfig()                                            # n = 5
GEN_CONFIG = DiffusionTrainConfig(optimizer="adam", lr=5e-5, weight_decay=5e-4, steps=200_000, batch_size=256)


class _Batches:
    """The batch order of the official loop's `DataLoader(TensorDataset(x), batch_size, shuffle=True,
    drop_last=True)`, without its per-sample collation: each epoch draws the loader's base seed and the
    sampler's seed from the global generator, then a permutation from the sampler's own generator (what
    torch 2.x's `RandomSampler` does), and yields n // batch_size batches. batch_size None is the official
    Mem loop's full batch, `batch_size=len(dataset)`: every step one epoch, all n images in a new order.
    """

    def __init__(self, n: int, batch_size: int | None):
        self.n, self.B = n, n if batch_size is None else batch_size
        if self.B > n:
            raise ValueError(f"batch_size {batch_size} exceeds the {n} training images")
        self.perm, self.pos = None, 0

    def next(self) -> torch.Tensor:
        if self.perm is None or self.pos + self.B > self.n:
            torch.empty((), dtype=torch.int64).random_()                     # the loader iterator's base seed
            seed = int(torch.empty((), dtype=torch.int64).random_().item())   # RandomSampler's seed
            self.perm, self.pos = torch.randperm(self.n, generator=torch.Generator().manual_seed(seed)), 0
        idx = self.perm[self.pos : self.pos + self.B]
        self.pos += self.B
        return idx


def _sample_sigma(B: int, cfg: DiffusionTrainConfig, out: torch.Tensor | None = None) -> torch.Tensor:
    """σ log-uniform on [σ_min, σ_max], [B, 1]."""
    u = torch.rand(B, 1) if out is None else out.uniform_()
    lo, hi = math.log(cfg.sigma_min), math.log(cfg.sigma_max)
    return u.mul_(hi - lo).add_(lo).exp_()


# Dense fp32 `torch.mm` on CPU calls MKL's sgemm; oneDNN's kernels (`torch.ops.mkldnn`, the ones torch.compile
# uses for linear layers) compute the same IEEE fp32 products in another summation order. On this project's AMD
# CPUs (AVX-512) oneDNN is 2.2x faster for the trainer's 256x1024x256 products (0.30 vs 0.66 ms on 2 threads;
# MKL's rate is what an AVX2 code path would give). Without oneDNN, or off the CPU: plain `mm`.
_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for 2-D tensors ([m, k] x [k, n] -> [m, n]), through oneDNN's GEMM on CPU where torch has it."""
    if _ONEDNN_LINEAR and a.device.type == "cpu":
        return torch.ops.mkldnn._linear_pointwise(a, b.t(), None, "none", [], "")   # a (bᵀ)ᵀ
    return a @ b


@torch.no_grad()
def diffusion_grads(model: DAECond, x0: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor,
                    with_loss: bool = True, matmul_dtype: torch.dtype | None = None):
    """MSE(x̂0(x_t, σ), x0) and the gradients autograd would give, by hand.

    Returns (loss or None, {parameter name: gradient}). Five [B, d] x [d, p]-sized matmuls and three
    [B, p] x [p, p]-sized ones (through `matmul`); the elementwise work is done in place.
    `matmul_dtype=torch.bfloat16` runs the five big matmuls in bf16 (operands and results rounded to bf16,
    as CPU autocast does; everything else fp32).
    """
    W = model.encoder.weight                                     # [p, d]
    lin1, lin2 = model.time_mlp[0], model.time_mlp[2]
    # `low` gives a big matmul's operand (each cast once, though most are used twice); `.float()` brings a
    # result back (a no-op in fp32, where this is exactly the plain fp32 computation).
    low = (lambda t: t) if matmul_dtype is None else (lambda t: t.to(matmul_dtype))
    W_low, x_low = low(W), low(x_t)
    log_sigma = sigma.log()                                      # [B, 1]
    z1 = torch.addmm(lin1.bias, log_sigma, lin1.weight.t()).clamp_min_(0.0)   # [B, p] ReLU(Linear(log σ))
    scale = matmul(z1, lin2.weight.t()).add_(lin2.bias).exp_()  # [B, p] exp(MLP(log σ))
    h = matmul(x_low, W_low.t()).float().clamp_min_(0.0)        # [B, p] h = ReLU(W x_t)
    hs = h * scale                                               # [B, p]
    hs_low = low(hs)
    r = matmul(hs_low, W_low).float().add_(x_t, alpha=float(model.skip)).sub_(x0)   # [B, d] x̂0 − x0
    loss = r.pow(2).mean() if with_loss else None
    r.mul_(2.0 / r.numel())                                      # [B, d] ∂L/∂x̂0
    r_low = low(r)
    g_skip = torch.dot(r.reshape(-1), x_t.reshape(-1)).reshape(1)
    g_hs = matmul(r_low, W_low.t()).float()                      # [B, p]
    g_z2 = (g_hs * h).mul_(scale)                                # [B, p] through exp: ∂/∂z2 = ∂/∂s · s
    g_h = g_hs.mul_(scale).mul_(h > 0)                           # [B, p] through the ReLU (in place)
    g_W = matmul(hs_low.t(), r_low).float()                      # [p, d] decoder path
    g_W.add_(matmul(low(g_h).t(), x_low).float())                # [p, d] + encoder path
    g_z1 = matmul(g_z2, lin2.weight).mul_(z1 > 0)                # [B, p]
    grads = {
        "encoder.weight": g_W,
        "time_mlp.0.weight": g_z1.t() @ log_sigma,               # [p, 1]
        "time_mlp.0.bias": g_z1.sum(0),
        "time_mlp.2.weight": matmul(g_z2.t(), z1),               # [p, p]
        "time_mlp.2.bias": g_z2.sum(0),
        "skip": g_skip,
    }
    return loss, grads


def train_diffusion(model: DAECond, x_train: torch.Tensor, cfg: DiffusionTrainConfig, progress: bool = True,
                    log_every: int = 500, matmul_dtype: torch.dtype | None = None) -> dict:
    """Train `model` in place; returns {"loss_steps", "losses", "train_seconds"}.

    Faithful to the official-style loop (same objective, optimizer, batch order, σ and ε draws: the same run
    up to float rounding), faster: batches gathered with one `index_select` instead of a DataLoader's
    per-sample collation, hand gradients instead of an autograd graph, oneDNN GEMMs (`matmul`), preallocated
    buffers filled in place, and torch's fused Adam kernel. `matmul_dtype=torch.bfloat16`: the optional bf16 mode
    (see `diffusion_grads`).
    """
    from tqdm.auto import trange

    torch.manual_seed(cfg.seed)
    x_train = torch.as_tensor(x_train, dtype=torch.float32).contiguous()
    n, d = x_train.shape
    batches = _Batches(n, cfg.batch_size)
    B = batches.B
    opt = make_optimizer(model, cfg, fused=True)
    params = dict(model.named_parameters())
    x0 = torch.empty(B, d)
    sigma, noise, x_t = torch.empty(B, 1), torch.empty(B, d), torch.empty(B, d)
    loss_steps, losses, t0 = [], [], time.perf_counter()
    for step in trange(cfg.steps, disable=not progress, desc=f"{cfg.optimizer} n={n}", mininterval=2):
        torch.index_select(x_train, 0, batches.next(), out=x0)   # [B, d]
        _sample_sigma(B, cfg, out=sigma)                         # [B, 1]
        noise.normal_()                                          # [B, d] ε, the draws of randn_like
        torch.addcmul(x0, sigma, noise, out=x_t)                 # [B, d] x_t = x0 + σε
        logged = (step + 1) % log_every == 0
        loss, grads = diffusion_grads(model, x0, x_t, sigma, with_loss=logged, matmul_dtype=matmul_dtype)
        for name, g in grads.items():
            params[name].grad = g
        opt.step()
        if logged:
            loss_steps.append(step + 1)
            losses.append(float(loss))
    return {"loss_steps": loss_steps, "losses": losses, "train_seconds": time.perf_counter() - t0}


def reference_train_diffusion(model: DAECond, x_train: torch.Tensor, cfg: DiffusionTrainConfig,
                              progress: bool = False) -> dict:
    """The official-style loop: a shuffled `DataLoader` (drop_last), autograd, `randn_like`, the default
    optimizer. `cfg.batch_size` None: the full batch through the same shuffled loader, as the official Mem loop."""
    from torch.utils.data import DataLoader, TensorDataset
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    x_train = torch.as_tensor(x_train, dtype=torch.float32)
    opt, loss_fn = make_optimizer(model, cfg), nn.MSELoss()
    loader = DataLoader(TensorDataset(x_train), batch_size=cfg.batch_size or len(x_train), shuffle=True,
                        drop_last=True)
    epochs = iter(lambda: loader, None)
    t0, step, bar = time.perf_counter(), 0, tqdm(total=cfg.steps, disable=not progress)
    for epoch in epochs:
        for (x0,) in epoch:
            sigma = _sample_sigma(len(x0), cfg)
            x_t = x0 + sigma * torch.randn_like(x0)
            loss = loss_fn(model(x_t, sigma), x0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            bar.update()
            if step == cfg.steps:
                bar.close()
                return {"train_seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------
def sigma_schedule(sigma_max: float = 2.0, sigma_min: float = 0.02, steps: int = 60) -> np.ndarray:
    """`geomspace(σ_max, σ_min, steps)` followed by σ = 0: `steps` reverse steps (paper-notes §3.4)."""
    if steps < 1:
        raise ValueError(f"the sampler needs at least one step, got steps={steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    return np.append(np.geomspace(sigma_max, sigma_min, steps), 0.0)


@torch.no_grad()
def ve_sample(model: DAECond, n: int, steps: int = 60, sigma_max: float = 2.0, sigma_min: float = 0.02,
              seed: int = 0, keep_every: int | None = None, d: int = 1024) -> tuple[torch.Tensor, list]:
    """Reverse-VE ancestral sampling (the official `ve_sample_traj`), [n, d] in [−1, 1].

    Start x = σ_max·N(0, I). Each step: score = (x̂0 − x)/σ² (Tweedie; paper Eq. 2 with the code's sign),
    δ = σ² − σ_next², x ← x + δ·score + sqrt(δ)·z (no noise when σ_next = 0), then clamp to [−1, 1].
    With `keep_every`, also returns [(σ, x)] every `keep_every` steps and the final x0.
    """
    sigmas = sigma_schedule(sigma_max, sigma_min, steps)
    g = torch.Generator().manual_seed(seed)
    x = sigma_max * torch.randn(n, d, generator=g)                       # [n, d]
    trajectory = []
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        if keep_every and i % keep_every == 0:
            trajectory.append((float(s), x.clone()))
        x0_hat = model(x, torch.full((n, 1), float(s)))                   # [n, d]
        delta = s**2 - s_next**2
        x = x + delta * (x0_hat - x) / s**2
        if s_next > 0:
            x = x + math.sqrt(delta) * torch.randn(n, d, generator=g)
        x = x.clamp_(-1.0, 1.0)
    if keep_every:
        trajectory.append((0.0, x.clone()))
    return x, trajectory


# ----------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------
def save_model(model: DAECond, path, metadata: dict | None = None) -> None:
    """safetensors state dict, written atomically, with JSON metadata."""
    save_safetensors(model.state_dict(), path, metadata)


def load_model(path, d: int = 1024, hidden: int = 256) -> tuple[DAECond, dict]:
    """Load our safetensors checkpoint, or an official `Diffusion_sample_*.pth` state dict (read with
    `weights_only=True`). A checkpoint whose shapes differ from (d, hidden) is refused with both shapes."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state, meta = load_safetensors(path)
    else:
        state, meta = load_official_state(path), {"official_checkpoint": str(path)}
    model = DAECond(d, hidden)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        raise ValueError(f"{path}: checkpoint shapes {found} do not match the config (d={d}, hidden={hidden}): "
                         f"{expected}")
    model.load_state_dict(state)
    return model, meta


def train_or_load(x_train, cfg: DiffusionTrainConfig, hidden: int = 256, name: str = "relu_diffusion",
                  cache_dir=None, progress: bool = True, matmul_dtype: str | None = None) -> tuple[DAECond, dict]:
    """Train a `DAECond` on `x_train`, or load it from the checkpoint cache (`checkpoints.train_or_load`:
    keyed by the model shape, the config, the training data's bytes and, when not fp32, the matmul dtype)."""
    x_train = torch.as_tensor(x_train, dtype=torch.float32)
    d = x_train.shape[1]
    key = {"model": {"d": d, "hidden": hidden}, "train": cfg.to_dict(), "data": array_fingerprint(x_train),
           "trainer": "train_diffusion/v2"}
    if matmul_dtype is not None:                 # the fp32 key stays as before, so its checkpoints are reused
        key["matmul_dtype"] = matmul_dtype

    def train():
        torch.manual_seed(cfg.seed)
        model = DAECond(d, hidden)
        dtype = None if matmul_dtype is None else getattr(torch, matmul_dtype)
        return model, {**train_diffusion(model, x_train, cfg, progress=progress, matmul_dtype=dtype),
                       "matmul_dtype": matmul_dtype or "float32"}

    return checkpoints.train_or_load(name, key, train, lambda path: load_model(path, d, hidden), save_model,
                                     cache_dir)


__all__ = ["DAECond", "DiffusionTrainConfig", "MEM_CONFIG", "GEN_CONFIG", "train_diffusion",
           "reference_train_diffusion", "diffusion_grads", "matmul", "sigma_schedule", "ve_sample", "save_model",
           "load_model", "train_or_load", "OPTIMIZERS"]
