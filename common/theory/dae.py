"""The two-layer ReLU denoising autoencoder of the paper and its trainer.

    f(x) = W₂ h(x),   h(x) = ReLU(W₁ᵀ x),   W₁, W₂ ∈ R^{d×p},  no bias          (paper Eq. 5)

trained at one noise level σ on the clean-target objective

    (1/n) Σᵢ E_ε ‖f(xᵢ + σε) − xᵢ‖² + λ (‖W₁‖²_F + ‖W₂‖²_F)                     (paper Eq. 6)

In code W₁ᵀ is `encoder.weight` [p, d] and the tie W₂ = W₁ is made in one of two ways:

    tie="alias"  the official notebook's: `decoder.weight = nn.Parameter(encoder.weight.t())`, a second
                 Parameter over the *same storage*. The optimizer holds two parameters, each with its own
                 gradient (from the decoder path or the encoder path alone), its own Adam/RMSprop state and
                 its own weight decay; both updates land in the same memory. Default, to reproduce the paper.
    tie="clean"  one Parameter W used twice (`F.linear(h, W.t())`); autograd sums both paths' gradients,
                 the optimizer keeps one state and applies weight decay once.

`train_dae` computes the same gradients as autograd by hand (five matmuls, no graph) and hands them to the
stock torch optimizer. It follows the official training cell's random stream: the seed is set once, before the
model is built (`build_dae`), and the batch indices and the noise are drawn from the global torch generator in
the official loop's order, so for one seed it is the official run up to float rounding (tested against
`common.theory.official`, the cell as written).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..plumbing import checkpoints
from ..plumbing.checkpoints import load_official_state, load_safetensors, save_safetensors
from ..plumbing.notices import progress_range
from ..plumbing.results import array_fingerprint


class TiedDAE(nn.Module):
    """f(x) = W ReLU(Wᵀx) with W = encoder.weightᵀ ∈ R^{d×p} (paper Eq. 5, tied as in Thm 3.1)."""

    def __init__(self, d: int = 1024, p: int = 100, tie: str = "alias"):
        super().__init__()
        if tie not in ("alias", "clean"):
            raise ValueError(f"unknown tie {tie!r}; choose 'alias' (official) or 'clean'")
        self.tie = tie
        self.encoder = nn.Linear(d, p, bias=False)  # weight [p, d] = W₁ᵀ
        if tie == "alias":
            # Built like the official notebook (same RNG draws), then re-pointed at the encoder's storage.
            self.decoder = nn.Linear(p, d, bias=False)
            self.decoder.weight = nn.Parameter(self.encoder.weight.t())  # [d, p], a view: W₂ ≡ W₁

    @property
    def W(self) -> torch.Tensor:
        """W ∈ R^{d×p}: column j is hidden unit j's weight vector (the paper's notation)."""
        return self.encoder.weight.t()

    def represent(self, x: torch.Tensor) -> torch.Tensor:
        """h(x) = ReLU(Wᵀx): the representation, [B, d] -> [B, p]."""
        return F.relu(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.represent(x)                                  # [B, p]
        if self.tie == "alias":
            return self.decoder(h)                             # [B, d]
        return F.linear(h, self.encoder.weight.t())            # [B, d]


def build_dae(seed: int, d: int = 1024, p: int = 100, tie: str = "alias") -> TiedDAE:
    """`torch.manual_seed(seed)`, then the model: the official cells' order. Training that follows on the global
    generator continues the same random stream, as the official loop does."""
    torch.manual_seed(seed)
    return TiedDAE(d=d, p=p, tie=tie)


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DAETrainConfig:
    """One training run. Defaults are the paper's memorization run."""

    optimizer: str = "rmsprop"       # "rmsprop" | "adam" | "adamw" | "sgd"
    lr: float = 1e-3
    weight_decay: float = 1e-2
    steps: int = 50_000
    batch_size: int | None = None    # None: full batch; else drawn with replacement (torch.randint)
    sigma: float = 0.2
    seed: int = 1                    # set once, before the model is built (`build_dae`)

    def to_dict(self) -> dict:
        return asdict(self)


MEM_CONFIG = DAETrainConfig()  # n = 5
GEN_CONFIG = DAETrainConfig(optimizer="adam", lr=1e-4, weight_decay=1e-4, batch_size=256)  # n = 10,000

OPTIMIZERS = {"rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
              "sgd": torch.optim.SGD}


FUSED_ON_CPU = {"adam", "adamw", "sgd"}  # torch ships fused CPU kernels for these (RMSprop has none)


def make_optimizer(params, cfg: DAETrainConfig, fused: bool = False) -> torch.optim.Optimizer:
    """The stock torch optimizer of `cfg` over `params` (e.g. `model.parameters()`). `fused=True` picks torch's
    fused kernel where one exists: the same update rule, one pass over each parameter instead of several (10x
    faster for Adam on 100x1024 weights)."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
    kwargs = {"fused": True} if fused and cfg.optimizer in FUSED_ON_CPU else {}
    return OPTIMIZERS[cfg.optimizer](params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)


def effective_lambda(cfg: DAETrainConfig, d: int, tie: str = "alias") -> float:
    """The paper's λ (Eq. 6) that a PyTorch run optimizes.

    `nn.MSELoss()` averages over the d pixels, so the run minimises Eq. 6 divided by d. PyTorch's
    weight_decay w adds w·θ to each parameter's gradient, i.e. (w/2)‖θ‖² to the loss, once per Parameter:
      alias tie: (w/2)(‖W₁‖² + ‖W₂‖²) ⇒ λ/d = w/2 ⇒ λ = d·w/2
      clean tie: (w/2)‖W‖² = λ(‖W₁‖² + ‖W₂‖²)/d with W₁ = W₂ = W ⇒ λ = d·w/4
    Adaptive optimizers rescale steps but keep the stationary points, so λ is the same for RMSprop/Adam.
    (For AdamW the decay is decoupled and this identity does not hold.)
    """
    return d * cfg.weight_decay / (2.0 if tie == "alias" else 4.0)


def predicted_column_norms(x: np.ndarray, n_lambda: float, sigma: float) -> np.ndarray:
    """Cor 3.2: the memorizing minimizer stores rᵢxᵢ with ‖rᵢxᵢ‖ = sqrt((‖xᵢ‖² − nλ) / (‖xᵢ‖² + σ²))."""
    sq = (np.asarray(x, dtype=np.float64) ** 2).sum(axis=1)
    return np.sqrt((sq - n_lambda) / (sq + sigma**2))


@torch.no_grad()
def tied_dae_grads(E: torch.Tensor, x: torch.Tensor, x_noisy: torch.Tensor, with_loss: bool = True):
    """The gradients autograd gives for MSE(f(x̃), x), f(y) = Eᵀ ReLU(E y), by hand (five matmuls).

    Returns (loss or None, grad through the encoder path [p, d], grad through the decoder path [p, d]).
    """
    a = x_noisy @ E.t()                                      # [B, p] pre-activations Wᵀx̃
    h = a.clamp_min_(0.0)                                    # [B, p] h = ReLU(a), in place: a>0 ⇔ h>0
    r = torch.addmm(x, h, E, alpha=1.0, beta=-1.0)           # [B, d] f(x̃) − x
    loss = r.pow(2).mean() if with_loss else None
    r.mul_(2.0 / r.numel())                                  # [B, d] ∂L/∂f
    grad_dec = h.t() @ r                                     # [p, d] ∂L/∂W₂ (transposed)
    g_h = (r @ E.t()).mul_(h > 0)                            # [B, p] ∂L/∂a through the ReLU
    grad_enc = g_h.t() @ x_noisy                             # [p, d] ∂L/∂W₁ᵀ
    return loss, grad_enc, grad_dec


def train_dae(model: TiedDAE, x_train: torch.Tensor, cfg: DAETrainConfig, progress: bool = True,
              log_every: int = 100, callback: Callable[[int, TiedDAE], None] | None = None,
              callback_every: int | None = None) -> dict:
    """Train `model` in place on `x_train` [n, d].

    Returns {"loss_steps": [...], "losses": [...], "train_seconds": float}: the training loss sampled every
    `log_every` steps (computing it every step would cost ~3% of the run).

    `callback(step, model)`, if given, runs after every `callback_every`-th step (e.g. to measure the weights
    during training). The global torch RNG state is saved and restored around it, so a callback that draws
    random numbers does not change the run; its time is not counted in `train_seconds`.

    The draws come from the global generator *as it is*: no seed is set here, so `build_dae(cfg.seed)` followed
    by this call continues the seed's stream exactly as the official cell does (same objective, optimizer, batch
    and noise draws: the same run up to float rounding). Faster than the official loop: no autograd graph,
    gradients by five matmuls, preallocated buffers filled in place, and torch's fused optimizer kernel where one
    exists.
    """

    x_train = torch.as_tensor(x_train, dtype=torch.float32).contiguous()
    n = len(x_train)
    E = model.encoder.weight                                  # [p, d], shared by both aliases
    opt = make_optimizer(model.parameters(), cfg, fused=True)
    params = list(model.parameters())                         # [encoder, decoder] or [encoder]
    B = n if cfg.batch_size is None else cfg.batch_size
    noise, x_noisy = torch.empty(B, x_train.shape[1]), torch.empty(B, x_train.shape[1])
    x = x_train if cfg.batch_size is None else torch.empty(B, x_train.shape[1])
    loss_steps, losses, t0, callback_seconds = [], [], time.perf_counter(), 0.0
    for step in progress_range(cfg.steps, f"{cfg.optimizer} n={n}", progress):
        if cfg.batch_size is not None:
            torch.index_select(x_train, 0, torch.randint(0, n, (B,)), out=x)  # [B, d], with replacement
        noise.normal_()                                       # fresh ε each step, the draws of randn_like
        torch.add(x, noise, alpha=cfg.sigma, out=x_noisy)     # [B, d] x̃ = x + σε
        logged = (step + 1) % log_every == 0
        loss, grad_enc, grad_dec = tied_dae_grads(E.detach(), x, x_noisy, with_loss=logged)
        if model.tie == "alias":
            params[0].grad, params[1].grad = grad_enc, grad_dec.t()
        else:
            params[0].grad = grad_enc.add_(grad_dec)
        opt.step()
        if logged:
            loss_steps.append(step + 1)
            losses.append(float(loss))
        if callback is not None and (step + 1) % (callback_every or cfg.steps) == 0:
            t_cb, rng_state = time.perf_counter(), torch.get_rng_state()
            with torch.no_grad():
                callback(step + 1, model)
            torch.set_rng_state(rng_state)
            callback_seconds += time.perf_counter() - t_cb
    return {"loss_steps": loss_steps, "losses": losses, "train_seconds": time.perf_counter() - t0 - callback_seconds}


# ----------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------
def save_dae(model: TiedDAE, path, metadata: dict | None = None) -> None:
    """Save W₁ᵀ (the one tensor of either tie) to safetensors, atomically, with the tie and `metadata`."""
    save_safetensors({"encoder.weight": model.encoder.weight}, path, {"tie": model.tie, **(metadata or {})})


def load_dae(path, tie: str | None = None) -> tuple[TiedDAE, dict]:
    """Load a checkpoint written by `save_dae` (.safetensors) or an official `DAE_sample_*.pth`: the state dict
    of the official `DAE`, whose layers sit in `nn.Sequential`s — `encoder.0.weight` [p, d] and
    `decoder.0.weight` [d, p] = encoder.0.weightᵀ — read with `weights_only=True`. Also accepted: the same
    without the Sequential (`encoder.weight`, `decoder.weight`). Any other keys, an untied decoder or shapes
    that do not fit are refused, naming what was expected and found. Returns (model, metadata)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state, meta = load_safetensors(path)
        tie = tie or meta.pop("tie", "alias")
        meta.pop("tie", None)
    else:
        raw, meta, tie = load_official_state(path), {"official_checkpoint": str(path)}, tie or "alias"
        state = {k.replace("encoder.0.", "encoder.").replace("decoder.0.", "decoder."): v for k, v in raw.items()}
        if set(state) != {"encoder.weight", "decoder.weight"}:
            raise KeyError(f"{path}: expected the official DAE's keys ['decoder.0.weight', 'encoder.0.weight'], "
                           f"found {sorted(raw)}")
        enc, dec = state["encoder.weight"], state.pop("decoder.weight")
        if dec.shape != enc.t().shape or not torch.allclose(dec, enc.t(), atol=1e-6):
            raise ValueError(f"{path}: decoder weight {tuple(dec.shape)} is not the encoder weight "
                             f"{tuple(enc.shape)} transposed; this is not a tied DAE")
    weight = state["encoder.weight"]
    model = TiedDAE(d=weight.shape[1], p=weight.shape[0], tie=tie)
    with torch.no_grad():
        model.encoder.weight.copy_(weight)
    return model, meta


def train_or_load(x_train, cfg: DAETrainConfig, p: int, tie: str = "alias", name: str = "dae",
                  cache_dir=None, progress: bool = True) -> tuple[TiedDAE, dict]:
    """Train a `TiedDAE` on `x_train` with `cfg`, or load it from the checkpoint cache
    (`checkpoints.train_or_load`: keyed by the model shape and tie, the config and the data's bytes).
    Returns (model, info) with info = {"train_seconds", "cached", "checkpoint", "loss_steps", "losses"}."""
    x_train = torch.as_tensor(x_train, dtype=torch.float32)
    key = {"model": {"d": x_train.shape[1], "p": p, "tie": tie}, "train": cfg.to_dict(),
           "data": array_fingerprint(x_train), "trainer": "train_dae/v2"}   # v2: seed once, before the build

    def train():
        model = build_dae(cfg.seed, d=x_train.shape[1], p=p, tie=tie)
        return model, train_dae(model, x_train, cfg, progress=progress)

    return checkpoints.train_or_load(name, key, train, load_dae, save_dae, cache_dir)


def live_units(model: TiedDAE, threshold: float = 0.1) -> np.ndarray:
    """Indices of hidden units whose weight column has norm > threshold, sorted by norm (largest first)."""
    norms = model.W.detach().norm(dim=0).numpy()             # [p]
    order = np.argsort(-norms)
    return order[norms[order] > threshold]


def theoretical_mem_loss(x: np.ndarray, sigma: float, n_lambda: float = 0.0) -> float:
    """Cor 3.2: the denoising loss (1/n) Σᵢ E‖f(xᵢ + σε) − xᵢ‖² of the memorizing minimizer (per sample, summed
    over d; the weight-decay term not included).

    Column i stores sᵢ = ‖rᵢxᵢ‖² = (‖xᵢ‖² − nλ)/(‖xᵢ‖² + σ²), so f(xᵢ + σε) = sᵢ x̂ᵢx̂ᵢᵀ(xᵢ + σε) and the loss
    of sample i is (sᵢ − 1)²‖xᵢ‖² + σ²sᵢ². With n_lambda = 0 (λ → 0, the paper's statement) this is
    σ²‖xᵢ‖² / (σ² + ‖xᵢ‖²).
    """
    sq = (np.asarray(x, dtype=np.float64) ** 2).sum(axis=1)
    s = (sq - n_lambda) / (sq + sigma**2)
    return float(np.mean((s - 1.0) ** 2 * sq + sigma**2 * s**2))


__all__ = ["TiedDAE", "build_dae", "DAETrainConfig", "MEM_CONFIG", "GEN_CONFIG", "train_dae",
           "train_or_load", "tied_dae_grads", "effective_lambda", "predicted_column_norms", "save_dae", "load_dae",
           "live_units", "theoretical_mem_loss", "make_optimizer"]
