"""Ross et al. (ICLR 2025): memorized samples sit where the model's local intrinsic dimension (LID) is low.
LID by FLIPD (Kamkari et al. 2024), as their official `FlipdEstimator` (their official code: layer6ai-labs/flipd,
`lid/diffusions/fokker_planck.py`, trace in `models/diffusions/sdes/utils.py`, settings in `conf/metric/lid_*.yaml`).

Input: the image's VAE posterior **mean** × scaling factor = x ∈ R^D (SD v1.4: D = 4·64·64 = 16,384). SD's
discrete schedule is read as a linear VP SDE, β(t) = β_min + (β_max − β_min) t with β_min = 0.85, β_max = 12, at
t₀ = 0.01:

    B = β_min t₀ + (β_max − β_min) t₀² / 2,   ψ = exp(−B/2) = 0.9955,   σ = sqrt(1 − exp(−B)) = 0.0950
    FLIPD(x) = D − σ · tr(∂ε/∂y) + ‖ε(y)‖²,    y = ψ x,   ε = ε_θ(y, t = 1000 t₀ = 10, c)     (no CFG)

(their score network is σ·s = −ε; the score's divergence term σ²·tr(∇s) with s = −ε/σ). The trace is exact when
D ≤ 3,500 (their code switches silently; the CPU testbed's D = 256, CIFAR10's 3,072), else Hutchinson with
`hutchinson_sample_count` = 1 Gaussian probe drawn with seed 42: tr ≈ vᵀ(∂ε/∂y)v. Both are computed by reverse
mode here: the exact trace runs D copies of each y in one batch and back-propagates the sum of the diagonal
outputs (the copies are independent, so copy j's gradient is row j of the Jacobian); Hutchinson back-propagates
⟨ε(y), v⟩, giving vᵀJ, whose product with v is the same number as their vᵀ(Jv) (`torch.func.jvp`).

**Which probe a sample gets** (`probe_scheme`, Hutchinson only):

    "shared"        (default) the S probes are rows 0 … S−1 of randn(S, *shape) from a generator seeded 42; every
                    sample gets the same probes, so a score does not depend on its batch position or batch size.
    "per-position"  their code's: inside a forked RNG, manual_seed(42), then randn(B·S, *shape) for a batch of B
                    samples; sample b's probe s is row s·B + b. A sample's probe then depends on where it sits in
                    its batch (their memorization runs: batch size 8) and on that batch's size (a last, smaller
                    batch draws another matrix). Only batch position 0 gets the shared scheme's probe.

Table 1 uses "shared": a detector's score of an image should be a function of the image, not of the order the
images were scored in or of how a folder was chunked (`scores.py` scores chunks of 16, in batches of 8). Both are
unbiased one-probe estimates of the same trace. On the CPU testbed (D = 256) and on CIFAR10 (D = 3,072) the exact
trace is used anyway and the scheme does not enter; on SD v1.4 "per-position" with batch_size=8 reproduces their
numbers.

Score = −FLIPD (low LID = memorized). Variants: "lid" with the empty prompt — prompt-free, Table 1's column —
and "lid-cond" with the caption (their default).

On an EDM denoiser D(x; σ) (pixel space, VE) the same estimator reads, with the score s(x) = (D(x; σ) − x)/σ²
and the residual r(x) = D(x; σ) − x = σ² s(x):

    FLIPD(x) = D + σ² tr(∇s) + σ² ‖s‖² = D + tr(∂r/∂x) + ‖r(x)‖² / σ²,   at the image x itself

at σ₀ = 0.0447: the VP noise level at t₀ = 0.01 of DDPM's pixel-space schedule (β 0.1 … 20), divided by its ψ —
the t₀ their code uses, on the schedule of a pixel-space model like CIFAR10's. Exactly, tr(∂r/∂x) = tr(∂D/∂x) − D,
so FLIPD = tr(∂D/∂x) + ‖r‖²/σ²; under Hutchinson the probe's estimate of tr(∂r/∂x) is vᵀ(∂D/∂x)v − ‖v‖², so
FLIPD ≈ D + vᵀ(∂D/∂x)v − ‖v‖² + ‖r‖²/σ² — their estimator fed this denoiser through their VP SDE (their score
network σ·s_VP(y) = r(y/ψ)/σ₀ at y = ψ x). No prompt: only "lid" applies.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ..families import family_of
from .base import Detector, Samples, batches, check_choice, check_positive

T0 = 0.01
BETA_MIN, BETA_MAX = 0.85, 12.0          # SD v1.4 read as a linear VP SDE (their `lid_*.yaml`)
EXACT_TRACE_MAX_DIM = 3500               # their switch from Hutchinson to the exact trace
PROBE_SEED = 42
TRACE_MODES = ("auto", "exact", "hutchinson")
PROBE_SCHEMES = ("shared", "per-position")   # Hutchinson probes: the same for every sample | their code's, by position
PROBE_SCHEME = "shared"                      # Table 1's (module docstring)
OFFICIAL_BATCH_SIZE = 8                      # their memorization runs' batch size (what "per-position" depends on)


def vp_coefficients(t0: float = T0, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX) -> tuple[float, float]:
    """(ψ, σ) of the linear VP SDE at t0: the signal scale and the noise std of y = ψ x + σ ε."""
    integral = beta_min * t0 + (beta_max - beta_min) * t0**2 / 2
    return math.exp(-integral / 2), math.sqrt(1.0 - math.exp(-integral))


def exact_trace(eps_fn: Callable, y: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """tr(∂ε/∂y) of each sample, exactly: [B]. `eps_fn(rows, owner)` maps a batch of inputs to ε of the same shape,
    each row independently; owner[r] says which sample row r copies (for per-sample conditioning)."""
    n, d = len(y), y[0].numel()
    owner = torch.arange(n).repeat_interleave(d)                                  # [n*d] sample of each copy
    coord = torch.arange(d).repeat(n)                                             # [n*d] its coordinate
    trace = torch.zeros(n, dtype=torch.float64)
    for part in batches(n * d, chunk):
        rows = y[owner[part]].detach().clone().requires_grad_(True)              # [R, ...] copies of y
        out = eps_fn(rows, owner[part]).flatten(1)                                # [R, D]
        picked = out.gather(1, coord[part, None].to(out.device)).sum()           # Σ_r ε_{coord r}(copy r)
        (grad,) = torch.autograd.grad(picked, rows)
        diagonal = grad.flatten(1).gather(1, coord[part, None].to(grad.device))  # [R, 1] ∂ε_j/∂y_j
        trace.index_add_(0, owner[part], diagonal[:, 0].double().cpu())
    return trace


def jacobian(fn: Callable, x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """The full Jacobian ∂fn/∂x of one input x ([...], D entries) as float64 [D, D] (row j = ∂fn_j/∂x), by the
    same replication as `exact_trace`; fn maps a batch [R, ...] to [R, ...], each row independently."""
    d = x.numel()
    rows_out = []
    for part in batches(d, chunk):
        coord = torch.arange(d)[part]
        rows = x.detach().expand(len(coord), *x.shape).clone().requires_grad_(True)   # [R, ...] copies of x
        out = fn(rows).flatten(1)                                                       # [R, D]
        (grad,) = torch.autograd.grad(out.gather(1, coord[:, None].to(out.device)).sum(), rows)
        rows_out.append(grad.flatten(1).double().cpu())                                 # [R, D] rows coord of J
    return torch.cat(rows_out)


def probe_vectors(shape: tuple[int, ...], batch: int, probes: int = 1, seed: int = PROBE_SEED,
                  probe_scheme: str = PROBE_SCHEME) -> torch.Tensor:
    """The Hutchinson probes of a batch of `batch` samples of `shape`: float32 [probes, batch, *shape], probe s of
    sample b at [s, b]. "shared": randn(probes, *shape) from a generator seeded `seed`, the same for every b;
    "per-position": their code's randn(batch·probes, *shape) after seeding with `seed`, row s·batch + b."""
    generator = torch.Generator().manual_seed(seed)
    if check_choice(probe_scheme, PROBE_SCHEMES, "probe_scheme") == "shared":
        return torch.randn((probes, *shape), generator=generator)[:, None].expand(probes, batch, *shape)
    return torch.randn((batch * probes, *shape), generator=generator).reshape(probes, batch, *shape)


def hutchinson_trace(eps_fn: Callable, y: torch.Tensor, probes: int = 1, seed: int = PROBE_SEED,
                     probe_scheme: str = PROBE_SCHEME) -> torch.Tensor:
    """vᵀ(∂ε/∂y)v averaged over `probes` Gaussian probes (`probe_vectors`: the same for every sample, or their
    code's by batch position): [B]."""
    v = probe_vectors(tuple(y.shape[1:]), len(y), probes, seed, probe_scheme).to(y.device, y.dtype)   # [P, B, ...]
    owner = torch.arange(len(y))
    estimates = []
    for p in range(probes):
        rows = y.detach().clone().requires_grad_(True)
        out = eps_fn(rows, owner)                                                      # [B, ...]
        (grad,) = torch.autograd.grad((out * v[p]).sum(), rows)                        # v_bᵀJ_b per sample b
        estimates.append((grad * v[p]).flatten(1).sum(dim=1).double().cpu())           # [B]
    return torch.stack(estimates).mean(dim=0)


def flipd(eps_fn: Callable, x: torch.Tensor, t0: float = T0, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX,
          trace: str = "auto", probes: int = 1, probe_seed: int = PROBE_SEED, chunk: int = 256,
          probe_scheme: str = PROBE_SCHEME) -> np.ndarray:
    """FLIPD of each x ([B, ...]): D − σ tr(∂ε/∂y) + ‖ε(y)‖² at y = ψ x. float64 [B]. Hutchinson probes by
    `probe_scheme` (x is one batch: under "per-position" a sample's probe depends on its place in x)."""
    check_choice(trace, TRACE_MODES, "trace")
    probes = check_positive(probes, "probes")
    check_choice(probe_scheme, PROBE_SCHEMES, "probe_scheme")
    psi, sigma = vp_coefficients(t0, beta_min, beta_max)
    d = x[0].numel()
    y = psi * x
    with torch.no_grad():
        norm2 = eps_fn(y, torch.arange(len(y))).flatten(1).double().pow(2).sum(dim=1).cpu()   # [B] ‖ε(y)‖²
    exact = trace == "exact" or (trace == "auto" and d <= EXACT_TRACE_MAX_DIM)
    tr = exact_trace(eps_fn, y, chunk) if exact else hutchinson_trace(eps_fn, y, probes, probe_seed, probe_scheme)
    return (d - sigma * tr + norm2).numpy()


EDM_SIGMA0 = (lambda psi, sigma: sigma / psi)(*vp_coefficients(T0, 0.1, 20.0))   # 0.0447


def flipd_ve(denoise_fn: Callable, x: torch.Tensor, sigma: float = EDM_SIGMA0, trace: str = "auto", probes: int = 1,
             probe_seed: int = PROBE_SEED, chunk: int = 256, probe_scheme: str = PROBE_SCHEME) -> np.ndarray:
    """FLIPD of each x ([B, ...]) for a VE denoiser `denoise_fn(rows, owner)` = D(rows; σ):
    D + tr(∂r/∂x) + ‖r(x)‖²/σ² with r(x) = D(x) − x. float64 [B]. Exact: tr(∂D/∂x) + ‖r‖²/σ². Hutchinson estimates
    tr(∂r/∂x) by vᵀ(∂D/∂x)v − ‖v‖² (per probe, averaged), so the result is D + vᵀ(∂D/∂x)v − ‖v‖² + ‖r‖²/σ²."""
    check_choice(trace, TRACE_MODES, "trace")
    probes = check_positive(probes, "probes")
    check_choice(probe_scheme, PROBE_SCHEMES, "probe_scheme")
    d = x[0].numel()
    with torch.no_grad():
        residual = (denoise_fn(x, torch.arange(len(x))) - x).flatten(1).double().pow(2).sum(dim=1).cpu()   # [B]
    exact = trace == "exact" or (trace == "auto" and d <= EXACT_TRACE_MAX_DIM)
    if exact:
        tr = exact_trace(denoise_fn, x, chunk)                                      # tr(∂D/∂x) = D + tr(∂r/∂x)
    else:                                                                            # D + v_bᵀ(∂r/∂x)v_b, r = D(x) − x
        tr = d + hutchinson_trace(lambda rows, owner: denoise_fn(rows, owner) - rows, x, probes, probe_seed,
                                  probe_scheme)
    return (tr + residual / sigma**2).numpy()


@torch.no_grad()
def latent_means(pipe, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """VAE posterior means × scaling factor: [N, 4, h, w] (their input to FLIPD; no sampling)."""
    out = [pipe.vae.encode(images[part].to(pipe.device, pipe.vae.dtype)).latent_dist.mean
           for part in batches(len(images), batch_size)]
    return torch.cat(out) * pipe.vae.config.scaling_factor


# DiT's discrete linear β (1e-4 … 0.02 over 1,000 steps) read as a linear VP SDE, as their code reads SD's
DIT_BETA_MIN, DIT_BETA_MAX = 0.1, 20.0


def _lid_dit(pipe, samples, conditional, t0, trace, probes, batch_size, chunk, labels, probe_scheme):
    """On a DiT: its VAE latent mean with the null label or (conditional) the class `labels`, on DiT's β."""
    if conditional and labels is None:
        raise ValueError("the conditional LID on a DiT needs the class labels of the samples (labels=...)")
    labels = pipe.labels(labels if conditional else None, len(samples))                           # [N]
    timestep = round(1000 * t0)
    scores = []
    for part in batches(len(samples), batch_size):
        x = pipe.encode(samples.images[part].float())                                            # [B, 4, h, w]
        own = labels[part]
        scores.append(-flipd(lambda rows, owner: pipe.eps(rows, timestep, own[owner.to(own.device)]).float(),
                             x, t0, DIT_BETA_MIN, DIT_BETA_MAX, trace, probes, chunk=chunk,
                             probe_scheme=probe_scheme))
    return np.concatenate(scores)


def _lid_edm(pipe, samples, conditional, t0, trace, probes, batch_size, chunk, labels, probe_scheme):
    """On an EDM denoiser: the VE form at σ₀ (`flipd_ve`) on the pixels; unconditional only."""
    if conditional:
        raise ValueError("an unconditional EDM model has no prompt: only the unconditional LID applies")
    scores = []
    for part in batches(len(samples), batch_size):
        x = samples.images[part].float().to(pipe.device)                                         # [B, 3, H, W]
        scores.append(-flipd_ve(lambda rows, owner: pipe(rows, EDM_SIGMA0), x, EDM_SIGMA0, trace, probes,
                                chunk=chunk, probe_scheme=probe_scheme))
    return np.concatenate(scores)


def _lid_sd_pipeline(pipe, samples, conditional, t0, trace, probes, batch_size, chunk, labels, probe_scheme):
    """On an SD pipeline's UNet: the VAE latent mean, with the empty prompt or (conditional) the caption."""
    prompts = list(samples.prompts) if conditional else [""] * len(samples)
    timestep = torch.tensor(round(1000 * t0), device=pipe.device)
    scores = []
    for part in batches(len(samples), batch_size):
        x = latent_means(pipe, samples.images[part]).float()                                       # [B, 4, h, w]
        embedding, _ = pipe.encode_prompt(prompts[part], pipe.device, 1, False)                  # [B, tokens, width]
        embedding = embedding.to(pipe.unet.dtype)

        def eps_fn(rows, owner):
            return pipe.unet(rows.to(pipe.unet.dtype), timestep, encoder_hidden_states=embedding[owner]).sample.float()

        scores.append(-flipd(eps_fn, x, t0, trace=trace, probes=probes, chunk=chunk, probe_scheme=probe_scheme))
    return np.concatenate(scores)


LID_BY_INTERFACE = {"sd-pipeline": _lid_sd_pipeline, "edm-denoiser": _lid_edm, "dit": _lid_dit}


def lid_score(pipe, samples: Samples, conditional: bool = False, t0: float = T0, trace: str = "auto",
              probes: int = 1, batch_size: int = OFFICIAL_BATCH_SIZE, chunk: int = 256, labels=None,
              probe_scheme: str = PROBE_SCHEME) -> np.ndarray:
    """−FLIPD of each image, reached through the model's family (`families.INTERFACES`): an SD pipeline's UNet with
    the empty prompt or (conditional) the caption; an EDM denoiser's VE form at σ₀; a DiT's VAE latent mean with the
    null label or (conditional) the class `labels`. Hutchinson probes by `probe_scheme`; under "per-position" each
    batch of `batch_size` consecutive samples draws its own (their code's, with their batch size 8 by default)."""
    check_choice(probe_scheme, PROBE_SCHEMES, "probe_scheme")
    score = LID_BY_INTERFACE[family_of(pipe).interface]
    return score(pipe, samples, conditional, t0, trace, probes, batch_size, chunk, labels, probe_scheme)


_PROBES = (f"Hutchinson above D = {EXACT_TRACE_MAX_DIM:,} with probe_scheme {PROBE_SCHEME!r} (seed {PROBE_SEED}, "
           "the same probe for every sample), exact trace below")
LID = Detector("lid", "Ross et al. LID (FLIPD), empty prompt", "lid", needs_prompt=False, score_fn=lid_score,
               options={"conditional": False, "probe_scheme": PROBE_SCHEME},
               description=f"−FLIPD at t₀ = 0.01 of the VAE latent mean, empty prompt; {_PROBES}")
LID_CONDITIONAL = Detector("lid-cond", "Ross et al. LID (FLIPD), caption", "lid", needs_prompt=True,
                           score_fn=lid_score, options={"conditional": True, "probe_scheme": PROBE_SCHEME},
                           description=f"−FLIPD at t₀ = 0.01 of the VAE latent mean, conditioned on the caption; "
                                       f"{_PROBES}")


def jacobian_spectrum(denoiser_fn: Callable, x: torch.Tensor) -> dict:
    """The paper's Appendix B.3 measurement of a denoiser around one sample x [C, H, W] (D entries): the full
    Jacobian J = ∂D/∂x [D, D] (`jacobian`, D backward passes), its singular values s (descending, float64 [D]),
    the effective rank (Σs)² / Σs² (a participation ratio: D for J ∝ I, 1 for rank one) and |cos| between its top
    left singular vector and the mean-removed sample (≈ 1 when D maps the neighbourhood onto the sample itself).
    denoiser_fn maps a batch [R, C, H, W] to [R, C, H, W] (e.g. `lambda rows: denoiser(rows, sigma)`)."""
    J = jacobian(denoiser_fn, x)                                                        # [D, D]
    U, S, _ = torch.linalg.svd(J)                                                       # [D, D], [D]
    sample = x.double().flatten() - x.double().mean()                                   # [D]
    return {"singular_values": S.numpy(),
            "top_vector_cos_with_sample": float((U[:, 0] @ sample).abs() / sample.norm()),
            "effective_rank": float(S.sum() ** 2 / (S ** 2).sum())}
