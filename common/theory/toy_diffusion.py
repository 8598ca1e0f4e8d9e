"""The toy diffusion model of the official `ReLU_Diffusion.ipynb`: the tied ReLU DAE made time-conditioned,
trained as a variance-exploding (VE) x0-predictor over all noise levels, and its reverse-VE sampler.

    h = ReLU(W x_t)                                   the representation (before the time scaling)
    x̂0(x_t, σ) = (h ⊙ exp(MLP(log σ))) W + s·x_t       multiplicative per-unit time conditioning, tied decoder

with W = `encoder.weight` ∈ R^{p×d} (p = 256 hidden units), MLP: 1 → p → p with its last layer
zero-initialised (so exp(·) = 1 at the start), and s a learnable scalar skip (init 0). Training draws
σ log-uniformly on [0.02, 2], x_t = x0 + σε, and minimises MSE(x̂0, x0).

`train_diffusion` computes the gradients by hand (no autograd graph) and hands them to the stock torch
optimizer. It follows the official training cell's random stream: the seed is set once, before the model is
built (`build_model`), and the batch order, σ and ε are drawn in the official loop's order, so for one seed it is
the official run up to float rounding (tested against `common.theory.official`, the cell as written, with both on the
same GEMM: `GEMM`, MKL's by default).
`train_diffusion_seeds` trains several seeds at once, each on its own stream, as one batched run.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..plumbing import checkpoints

from . import stats
from ..plumbing.checkpoints import load_official_state, load_safetensors, save_safetensors
from ..plumbing.denormals import flushed_denormals
from ..plumbing.notices import progress_range
from .dae import OPTIMIZERS, make_optimizer
from ..plumbing.results import array_fingerprint


class DAECond(nn.Module):
    """x̂0(x_t, σ) = (ReLU(W x_t) ⊙ exp(MLP(log σ))) W + skip · x_t (the official `DAECond`).

    Built as the official class is — encoder, then the 0-dim `skip`, then the time MLP, and only then the encoder
    re-initialised (kaiming uniform) and the MLP's last layer zeroed — so one `torch.manual_seed` gives the official
    model's initial weights, and `state_dict()` has the official keys and shapes. The forward takes σ (the
    official one takes log σ).
    """

    def __init__(self, d: int = 1024, hidden: int = 256):
        super().__init__()
        self.encoder = nn.Linear(d, hidden, bias=False)                       # W [p, d]
        self.skip = nn.Parameter(torch.tensor(0.0))                            # s, a scalar
        self.time_mlp = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        nn.init.kaiming_uniform_(self.encoder.weight, a=0, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.time_mlp[2].weight)                                # initial scale exp(0) = 1
        nn.init.zeros_(self.time_mlp[2].bias)

    def represent(self, x_t: torch.Tensor) -> torch.Tensor:
        """h = ReLU(W x_t), [B, d] -> [B, p]: the representation, before the time scaling."""
        return F.relu(self.encoder(x_t))

    def time_scale(self, sigma: torch.Tensor) -> torch.Tensor:
        """exp(MLP(log σ)), [B, 1] -> [B, p]."""
        return torch.exp(self.time_mlp(torch.log(sigma)))

    def forward(self, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        h = self.represent(x_t) * self.time_scale(sigma.reshape(-1, 1))      # [B, p]
        return F.linear(h, self.encoder.weight.t()) + self.skip * x_t        # [B, d]


def build_model(seed: int, d: int = 1024, hidden: int = 256) -> DAECond:
    """`torch.manual_seed(seed)`, then the model: the official cells' order. Training that follows on the
    global generator continues the same random stream, as the official loop does."""
    torch.manual_seed(seed)
    return DAECond(d, hidden)


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiffusionTrainConfig:
    """One training run. Defaults are the official memorization run."""

    optimizer: str = "rmsprop"
    lr: float = 1e-3
    weight_decay: float = 1e-2
    steps: int = 100_000
    batch_size: int | None = None    # None: full batch (all n, shuffled); else shuffled epochs, drop_last
    sigma_min: float = 0.02
    sigma_max: float = 2.0
    seed: int = 1                    # set once, before the model is built (`build_model`)

    def to_dict(self) -> dict:
        return asdict(self)


MEM_CONFIG = DiffusionTrainConfig()                                            # n = 5
GEN_CONFIG = DiffusionTrainConfig(optimizer="adam", lr=5e-5, weight_decay=5e-4, steps=200_000, batch_size=256)


class _Batches:
    """The batch order of the official loop's `DataLoader(TensorDataset(x), batch_size, shuffle=True,
    drop_last=True)`, without its per-sample collation: each epoch draws the loader's base seed and the
    sampler's seed from `generator` (None: the global one), then a permutation from the sampler's own generator
    (what torch 2.x's `RandomSampler` does), and yields n // batch_size batches. batch_size None is the official
    Mem loop's full batch, `batch_size=len(dataset)`: every step one epoch, all n images in a new order.
    """

    def __init__(self, n: int, batch_size: int | None, generator: torch.Generator | None = None):
        self.n, self.B, self.generator = n, n if batch_size is None else batch_size, generator
        if self.B > n:
            raise ValueError(f"batch_size {batch_size} exceeds the {n} training images")
        self.perm, self.pos = None, 0

    def next(self) -> torch.Tensor:
        if self.perm is None or self.pos + self.B > self.n:
            g = self.generator
            torch.empty((), dtype=torch.int64).random_(generator=g)                        # the loader's base seed
            seed = int(torch.empty((), dtype=torch.int64).random_(generator=g).item())    # RandomSampler's seed
            self.perm, self.pos = torch.randperm(self.n, generator=torch.Generator().manual_seed(seed)), 0
        idx = self.perm[self.pos : self.pos + self.B]
        self.pos += self.B
        return idx


def _sample_sigma(B: int, cfg: DiffusionTrainConfig, out: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """σ = exp(log σ_min + u (log σ_max − log σ_min)), u ~ U[0, 1): log-uniform on [σ_min, σ_max], [B, 1], computed
    in float32 from the same draws as the official `sample_sigmas` (`torch.rand(B)`)."""
    u = torch.rand(B, 1, generator=generator) if out is None else out.uniform_(generator=generator)
    lo, hi = torch.log(torch.tensor(cfg.sigma_min)), torch.log(torch.tensor(cfg.sigma_max))
    return u.mul_(hi - lo).add_(lo).exp_()


# The CPU GEMM behind `matmul`: a module-level switch, "mkl" (the default) or "onednn". Both compute IEEE fp32
# products, in different summation orders, so the two give runs that differ in the last bits, and the Mem run's
# RMSprop grows that into visibly different weights (benchmarks/kernel_divergence.py measures how far); so does
# the same kernel on another CPU. The choice fixes the kernel, not the bits: it makes runs comparable on one machine.
#   "mkl"     `a @ b`, torch's default CPU GEMM: MKL's sgemm for fp32 in x86 builds. The official cell's
#             `nn.Linear` runs on it too, so with "mkl" ours and the official cell use the same GEMM library.
#   "onednn"  oneDNN's GEMM (`torch.ops.mkldnn._linear_pointwise`, the kernel torch.compile uses for linear layers),
#             for 2-D fp32 products, and for bf16 operands where oneDNN has bf16 kernels (it refuses them elsewhere).
# Chosen explicitly, never from the CPU: an earlier auto-switch took oneDNN wherever torch dispatched AVX-512 kernels,
# from one measurement on an AMD AVX-512 CPU (0.30 vs 0.66 ms for the trainer's 256x1024x256 product, 2 threads).
# On an Intel AVX-512 CPU a user measured the opposite: oneDNN 0.86x torch.mm for that product (0.757 vs 0.651 ms),
# and the Mem trainer fell to 0.70x the official cell (4.46 vs 3.14 ms/step); on an AVX2-only AMD CPU MKL is faster
# too (0.86 vs 1.09 ms). Set it with the environment variable DGR_TOY_GEMM=onednn (read at import), `set_gemm`, or
# `with use_gemm("onednn"): ...`. The stacked seed ensemble's 3-D products always go to `torch.bmm`.
GEMMS = ("mkl", "onednn")
DEFAULT_GEMM = "mkl"
_ONEDNN_LINEAR = (torch.backends.mkldnn.is_available()               # this torch build has oneDNN's linear kernel
                  and hasattr(torch.ops.mkldnn, "_linear_pointwise"))
_ONEDNN_BF16 = _ONEDNN_LINEAR and torch.ops.mkldnn._is_mkldnn_bf16_supported()   # ... and bf16 kernels on this CPU


def _checked_gemm(name: str, source: str) -> str:
    if name not in GEMMS:
        raise ValueError(f"{source}: unknown GEMM {name!r}; choose one of {list(GEMMS)}")
    if name == "onednn" and not _ONEDNN_LINEAR:
        raise RuntimeError(f"{source}: GEMM 'onednn' asked for, but this torch build has no oneDNN linear kernel "
                           "(torch.ops.mkldnn._linear_pointwise)")
    return name


GEMM = _checked_gemm(os.environ.get("DGR_TOY_GEMM") or DEFAULT_GEMM, "DGR_TOY_GEMM")


def set_gemm(name: str) -> str:
    """Make `matmul` (and so the trainer) use GEMM `name` ("mkl" or "onednn") from now on; returns the previous one."""
    global GEMM
    previous, GEMM = GEMM, _checked_gemm(name, "set_gemm")
    return previous


@contextmanager
def use_gemm(name: str):
    """`with use_gemm("onednn"): ...`: GEMM `name` inside the block, the previous one after it."""
    previous = set_gemm(name)
    try:
        yield name
    finally:
        set_gemm(previous)


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for [m, k] x [k, n] -> [m, n] on the GEMM chosen by `GEMM` (above): "mkl" is `a @ b`; "onednn" takes
    oneDNN's GEMM for 2-D CPU products in fp32, and in bf16 where oneDNN has bf16 kernels. Batched
    [S, m, k] x [S, k, n] -> [S, m, n] products go to `torch.bmm` either way (S separate oneDNN products measured
    slower: the S weight-sized operands no longer stay in cache either way)."""
    if (GEMM == "onednn" and a.dim() == 2 and a.device.type == "cpu"
            and (a.dtype == torch.float32 or (a.dtype == torch.bfloat16 and _ONEDNN_BF16))):
        return torch.ops.mkldnn._linear_pointwise(a, b.t(), None, "none", [], "")   # a (bᵀ)ᵀ
    return a @ b


@torch.no_grad()
def diffusion_grads(params: dict[str, torch.Tensor], x0: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor,
                    with_loss: bool = True, matmul_dtype: torch.dtype | None = None):
    """MSE(x̂0(x_t, σ), x0) and the gradients autograd would give, by hand.

    `params` is a `DAECond`'s `dict(named_parameters())`, or the same tensors stacked over S models (a leading
    axis on every tensor, and on x0 [S, B, d], x_t, σ [S, B, 1]): each model's loss is its own batch's mean.
    Returns (loss or None, {parameter name: gradient}). Five [B, d] x [d, p]-sized matmuls and three
    [B, p] x [p, p]-sized ones (through `matmul`); the elementwise work is done in place.
    `matmul_dtype=torch.bfloat16` runs the five big matmuls in bf16 (operands and results rounded to bf16,
    as CPU autocast does; everything else fp32).
    """
    W = params["encoder.weight"]                                 # [(S,) p, d]
    w1, b1 = params["time_mlp.0.weight"], params["time_mlp.0.bias"]   # [(S,) p, 1], [(S,) p]
    w2, b2 = params["time_mlp.2.weight"], params["time_mlp.2.bias"]   # [(S,) p, p], [(S,) p]
    skip = params["skip"]                                        # [(S,)]
    # `low` gives a big matmul's operand (each cast once, though most are used twice); `.float()` brings a
    # result back (a no-op in fp32, where this is exactly the plain fp32 computation).
    low = (lambda t: t) if matmul_dtype is None else (lambda t: t.to(matmul_dtype))
    W_low, x_low = low(W), low(x_t)
    log_sigma = sigma.log()                                      # [(S,) B, 1]
    z1 = torch.addcmul(b1.unsqueeze(-2), log_sigma, w1.mT).clamp_min_(0.0)     # [(S,) B, p] ReLU(Linear(log σ))
    scale = matmul(z1, w2.mT).add_(b2.unsqueeze(-2)).exp_()      # [(S,) B, p] exp(MLP(log σ))
    h = matmul(x_low, W_low.mT).float().clamp_min_(0.0)         # [(S,) B, p] h = ReLU(W x_t)
    hs = h * scale                                               # [(S,) B, p]
    hs_low = low(hs)
    r = matmul(hs_low, W_low).float()                            # [(S,) B, d] x̂0 without the skip
    r.addcmul_(skip[..., None, None], x_t).sub_(x0)              # [(S,) B, d] x̂0 − x0
    loss = r.pow(2).mean((-2, -1)) if with_loss else None
    r.mul_(2.0 / (r.shape[-2] * r.shape[-1]))                    # [(S,) B, d] ∂L/∂x̂0
    r_low = low(r)
    g_skip = (r * x_t).sum((-2, -1))                             # [(S,)]
    g_hs = matmul(r_low, W_low.mT).float()                       # [(S,) B, p]
    g_z2 = (g_hs * h).mul_(scale)                                # [(S,) B, p] through exp: ∂/∂z2 = ∂/∂s · s
    g_h = g_hs.mul_(scale).mul_(h > 0)                           # [(S,) B, p] through the ReLU (in place)
    # ∂L/∂W = hsᵀ r (decoder path) + g_hᵀ x_t (encoder path), as one product over the stacked rows: the [p, d]
    # result is written once (the step is bound by passes over the weight-sized tensors, not by flops)
    g_W = matmul(torch.cat([hs_low, low(g_h)], dim=-2).mT, torch.cat([r_low, x_low], dim=-2)).float()   # [(S,) p, d]
    g_z1 = matmul(g_z2, w2).mul_(z1 > 0)                         # [(S,) B, p]
    grads = {
        "encoder.weight": g_W,
        "skip": g_skip,
        "time_mlp.0.weight": g_z1.mT @ log_sigma,                # [(S,) p, 1]
        "time_mlp.0.bias": g_z1.sum(-2),
        "time_mlp.2.weight": matmul(g_z2.mT, z1),                # [(S,) p, p]
        "time_mlp.2.bias": g_z2.sum(-2),
    }
    return loss, grads


def train_diffusion(model: DAECond, x_train: torch.Tensor, cfg: DiffusionTrainConfig, progress: bool = True,
                    log_every: int = 500, matmul_dtype: torch.dtype | None = None,
                    generator: torch.Generator | None = None) -> dict:
    """Train `model` in place; returns {"loss_steps", "losses", "train_seconds"}.

    The random draws come from `generator`, by default the global one *as it is*: no seed is set here, so
    `build_model(cfg.seed)` followed by this call continues the seed's stream exactly as the official cell does
    (its batch order, σ and ε draws; the same run up to float rounding). Faster than the official loop: batches
    gathered with one `index_select` instead of a DataLoader's per-sample collation, hand gradients instead of an
    autograd graph, preallocated buffers filled in place, and torch's fused Adam kernel. Its products run on the
    GEMM `GEMM` selects (`matmul`; by default the official cell's own, MKL's).
    `matmul_dtype=torch.bfloat16`: the optional bf16 mode (see `diffusion_grads`).
    """
    return _train([model], x_train, cfg, [generator], progress, log_every, matmul_dtype)


def train_diffusion_seeds(x_train: torch.Tensor, cfg: DiffusionTrainConfig, seeds, d: int = 1024,
                          hidden: int = 256, progress: bool = True, log_every: int = 500,
                          matmul_dtype: torch.dtype | None = None) -> tuple[list[DAECond], dict]:
    """One run per seed of `seeds`, all trained together: [model per seed], log (losses per step and seed).

    Each seed's model is built as `build_model(seed)` builds it and keeps that seed's random stream in its own
    generator (the global generator's state right after the build), so every model is the one its single-seed
    run gives, up to float rounding. The models' weights are stacked along a leading seed axis, so each matmul
    is one batched product for all seeds; each seed's Parameters are views into the stacked tensors, handed to
    the stock optimizer. The global generator's state is left as it was.
    """
    models, generators = [], []
    with torch.random.fork_rng(devices=[]):
        for seed in seeds:
            models.append(build_model(seed, d, hidden))
            generators.append(torch.Generator().manual_seed(0))
            generators[-1].set_state(torch.get_rng_state())       # the seed's stream, after the init's draws
    log = _train(models, x_train, cfg, generators, progress, log_every, matmul_dtype)
    return models, log


def _train(models: list[DAECond], x_train, cfg: DiffusionTrainConfig, generators: list, progress: bool,
           log_every: int, matmul_dtype) -> dict:
    """The loop behind `train_diffusion` (S = 1, 2-D tensors) and `train_diffusion_seeds` (S models stacked),
    run with subnormals flushed to zero on every thread (`flushed_denormals`).

    Why: weight decay drives the unused units' weights towards zero; once they are subnormal, an Intel CPU takes a
    microcode path for every product with them, a matmul over 100 times slower (`benchmarks/denormal_speed.py`),
    and the Gen run would slow more than tenfold after its first ~13,000 steps. AMD CPUs pay far less. The flush changes
    only those values, zero at float32's precision next to the weights that matter."""
    with flushed_denormals():
        return _train_loop(models, x_train, cfg, generators, progress, log_every, matmul_dtype)


def _train_loop(models: list[DAECond], x_train, cfg: DiffusionTrainConfig, generators: list, progress: bool,
                log_every: int, matmul_dtype) -> dict:
    S = len(models)
    x_train = torch.as_tensor(x_train, dtype=torch.float32).contiguous()
    n, d = x_train.shape
    batches = [_Batches(n, cfg.batch_size, g) for g in generators]
    B = batches[0].B
    if S == 1:
        params = dict(models[0].named_parameters())
        per_seed = [params]
    else:   # stacked weights [S, ...]; seed s's Parameters are views into them, so the optimizer updates them in place
        names = [name for name, _ in models[0].named_parameters()]
        params = {name: torch.stack([m.get_parameter(name).detach() for m in models]) for name in names}
        per_seed = [{name: nn.Parameter(t[s]) for name, t in params.items()} for s in range(S)]
    opt = make_optimizer([p for ps in per_seed for p in ps.values()], cfg, fused=True)
    x0, noise, x_t = torch.empty(S, B, d), torch.empty(S, B, d), torch.empty(S, B, d)
    sigma, idx = torch.empty(S, B, 1), torch.empty(S, B, dtype=torch.int64)
    drawn = (lambda t: t[0]) if S == 1 else (lambda t: t)     # what the gradients see: [B, ...] or [S, B, ...]
    loss_steps, losses, t0 = [], [], time.perf_counter()
    for step in progress_range(cfg.steps, f"{cfg.optimizer} n={n} x{S}", progress):
        for s, (batch, g) in enumerate(zip(batches, generators)):   # each seed's draws, in the official order:
            idx[s] = batch.next()                                    # the loader's batch,
            _sample_sigma(B, cfg, out=sigma[s], generator=g)         # σ (`sample_sigmas`),
            noise[s].normal_(generator=g)                            # ε (`randn_like(x0)`)
        torch.index_select(x_train, 0, idx.view(-1), out=x0.view(S * B, d))      # [S, B, d]
        torch.addcmul(x0, sigma, noise, out=x_t)                                  # [S, B, d] x_t = x0 + σε
        logged = (step + 1) % log_every == 0
        loss, grads = diffusion_grads(params, drawn(x0), drawn(x_t), drawn(sigma), with_loss=logged,
                                      matmul_dtype=matmul_dtype)
        for s, ps in enumerate(per_seed):
            for name, g in grads.items():
                ps[name].grad = g if S == 1 else g[s]
        opt.step()
        if logged:
            loss_steps.append(step + 1)
            losses.append(float(loss) if S == 1 else loss.tolist())
    if S > 1:
        with torch.no_grad():
            for s, model in enumerate(models):
                for name, stacked in params.items():
                    model.get_parameter(name).copy_(stacked[s])
    return {"loss_steps": loss_steps, "losses": losses, "train_seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------
def sigma_schedule(sigma_max: float = 2.0, sigma_min: float = 0.02, steps: int = 60) -> np.ndarray:
    """`geomspace(σ_max, σ_min, steps)` followed by σ = 0: `steps` reverse steps (the official sampler's)."""
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
# What a memorizing run ended with
# ----------------------------------------------------------------------------------------------------
def mem_run_state(model: DAECond, x_train, live_norm: float = 0.1, face_cos: float = 0.9,
                  ghost_cos: float = 0.95) -> dict:
    """Classify a model trained on n images as a *clean* memorizing run or a *ghost* run.

    Cor 3.2's memorizing minimizer has n live units, each a copy of one training image; a run may also keep a
    few small strays, or split one image over two units. A ghost run (ReLU_Diffusion.ipynb) ends with a group of
    units that store no training image and all point one shared way (pairwise cosine ≥ 0.95, measured 0.95–1.0);
    the model's gain along that direction is far above 1, so sampling runs along it. The rule:

        clean  ⇔  live units (row norm > `live_norm`) ≤ 2n  and  no three live units that store no training image
                  (largest cosine with one < `face_cos`) have pairwise cosines ≥ `ghost_cos`

    Returns {"live_units", "face_units", "ghost_group" (the largest number of such units aligned with one of
    them), "clean", "state"}: state "clean", "ghost" (such a group of three exists) or "extra units" (more than
    2n live units, no ghost group: e.g. a run stopped before the dead units decayed).
    """
    W = model.encoder.weight.detach().numpy()                           # [p, d]
    rows = W[np.linalg.norm(W, axis=1) > live_norm]                     # [m, d] live units
    face = (stats.cosine_matrix(rows, x_train).max(axis=1) >= face_cos) if len(rows) else np.zeros(0, bool)
    other = rows[~face]                                                  # live units that store no image
    aligned = (stats.cosine_matrix(other, other) >= ghost_cos) & ~np.eye(len(other), dtype=bool)
    A = aligned.astype(np.int64)
    has_triangle = np.trace(A @ A @ A) > 0                               # three units, pairwise aligned
    return {"live_units": len(rows), "face_units": int(face.sum()),
            "ghost_group": int(A.sum(axis=1).max()) + 1 if len(other) else 0,
            "clean": bool(len(rows) <= 2 * len(x_train) and not has_triangle),
            "state": "ghost" if has_triangle else "extra units" if len(rows) > 2 * len(x_train) else "clean"}


@torch.no_grad()
def gain_along_live_units(model: DAECond, sigma: float, live_norm: float = 0.1) -> np.ndarray:
    """g(σ) = ‖w‖² exp(MLP(log σ)) + s for each live unit (row norm > `live_norm`): the model's gain along a
    stored direction w/‖w‖ when that unit alone responds to it, x̂0(c·w/‖w‖, σ) = g(σ) · c·w/‖w‖. A gain ≤ 1
    never grows the sampler's small projection on a stored face back to the face's norm. Returns [live]."""
    W = model.encoder.weight.detach()                                    # [p, d]
    live = W.norm(dim=1) > live_norm
    scale = model.time_scale(torch.full((1, 1), float(sigma)))[0, live]  # [live]
    return (W[live].norm(dim=1) ** 2 * scale).numpy() + float(model.skip)


# ----------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------
def save_model(model: DAECond, path, metadata: dict | None = None) -> None:
    """safetensors state dict, written atomically, with JSON metadata."""
    save_safetensors(model.state_dict(), path, metadata)


def load_model(path, d: int = 1024, hidden: int = 256) -> tuple[DAECond, dict]:
    """Load our safetensors checkpoint, or an official `Diffusion_sample_*.pth` state dict (read with
    `weights_only=True`): the official `DAECond`'s keys and shapes, which ours shares. A checkpoint whose keys or
    shapes differ from a (d, hidden) model is refused with both lists. Our checkpoints from before the scalar
    `skip` (shape [1]) still load."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state, meta = load_safetensors(path)
    else:
        state, meta = load_official_state(path), {"official_checkpoint": str(path)}
    if "skip" in state and state["skip"].shape == (1,):
        state["skip"] = state["skip"].reshape(())
    model = DAECond(d, hidden)
    checkpoints.check_state_shapes(path, state, model, f"a DAECond with d={d}, hidden={hidden}")
    model.load_state_dict(state)
    return model, meta


def _cache_key(x_train: torch.Tensor, cfg: DiffusionTrainConfig, hidden: int, matmul_dtype: str | None,
               gemm: str = DEFAULT_GEMM) -> dict:
    """Everything that determines a trained model's weights (`checkpoints.train_or_load`), up to the CPU's own
    rounding: the GEMM enters the key only when it is not the default, as the dtype only when it is not fp32."""
    key = {"model": {"d": x_train.shape[1], "hidden": hidden}, "train": cfg.to_dict(),
           "data": array_fingerprint(x_train),
           "trainer": "train_diffusion/v5"}        # v3: the official random stream (seed once, official init
    #                                order); v5: subnormals flushed to zero on every thread while training
    if matmul_dtype is not None:                   # the fp32 key has no dtype entry
        key["matmul_dtype"] = matmul_dtype
    if gemm != DEFAULT_GEMM:                       # the default GEMM's key has no gemm entry
        key["gemm"] = gemm
    return key


def train_or_load(x_train, cfg: DiffusionTrainConfig, hidden: int = 256, name: str = "relu_diffusion",
                  cache_dir=None, progress: bool = True, matmul_dtype: str | None = None) -> tuple[DAECond, dict]:
    """Train a `DAECond` on `x_train`, or load it from the checkpoint cache (`checkpoints.train_or_load`:
    keyed by the model shape, the config, the training data's bytes, the matmul dtype when not fp32 and the GEMM
    (`GEMM`, at the call) when not the default)."""
    x_train = torch.as_tensor(x_train, dtype=torch.float32)
    d, gemm = x_train.shape[1], GEMM

    def train():
        model = build_model(cfg.seed, d, hidden)
        dtype = None if matmul_dtype is None else getattr(torch, matmul_dtype)
        with use_gemm(gemm):
            log = train_diffusion(model, x_train, cfg, progress=progress, matmul_dtype=dtype)
        return model, {**log, "matmul_dtype": matmul_dtype or "float32", "gemm": gemm}

    return checkpoints.train_or_load(name, _cache_key(x_train, cfg, hidden, matmul_dtype, gemm), train,
                                     lambda path: load_model(path, d, hidden), save_model, cache_dir)


def train_or_load_seeds(x_train, cfg: DiffusionTrainConfig, seeds, hidden: int = 256, name: str = "relu_diffusion",
                        cache_dir=None, progress: bool = True) -> tuple[list[DAECond], list[dict]]:
    """The models of `train_diffusion_seeds` (one per seed, `cfg.seed` ignored), from the checkpoint cache when
    every seed's file is there, else trained together and cached one file per seed. A seed's key is its single
    run's key plus the seed set it was trained with (the float rounding of a batched run is not a single run's);
    it has no GEMM entry: the stacked products are `torch.bmm` whatever `GEMM` says.
    Returns ([model per seed], [info per seed]); each info's "train_seconds" is the whole joint run's."""
    x_train = torch.as_tensor(x_train, dtype=torch.float32)
    d, seeds = x_train.shape[1], [int(s) for s in seeds]
    paths = [checkpoints.cache_path(name, {**_cache_key(x_train, replace(cfg, seed=s), hidden, None),
                                           "trained_with_seeds": seeds}, cache_dir) for s in seeds]
    if all(path.exists() for path in paths):
        loaded = [load_model(path, d, hidden) for path in paths]
        print(f"{name}: loaded {len(seeds)} cached checkpoints of seeds {seeds} "
              f"(trained together in {loaded[0][1]['train_seconds']:.0f} s)")
        return [m for m, _ in loaded], [{**meta, "cached": True, "checkpoint": str(p)}
                                        for (_, meta), p in zip(loaded, paths)]
    models, log = train_diffusion_seeds(x_train, cfg, seeds, d, hidden, progress=progress)
    infos = []
    for s, (seed, model, path) in enumerate(zip(seeds, models, paths)):
        meta = {"train_seconds": log["train_seconds"], "trained_with_seeds": seeds, "seed": seed,
                "loss_steps": log["loss_steps"], "losses": [step_losses[s] for step_losses in log["losses"]]}
        save_model(model, path, meta)
        infos.append({**meta, "cached": False, "checkpoint": str(path)})
    return models, infos


__all__ = ["DAECond", "build_model", "DiffusionTrainConfig", "MEM_CONFIG", "GEN_CONFIG", "train_diffusion",
           "train_diffusion_seeds", "diffusion_grads", "matmul", "GEMMS", "DEFAULT_GEMM", "set_gemm", "use_gemm",
           "sigma_schedule", "ve_sample", "save_model", "load_model", "train_or_load", "train_or_load_seeds",
           "mem_run_state", "gain_along_live_units", "OPTIMIZERS"]
