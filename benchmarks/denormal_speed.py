"""Subnormal weights and the CPU: one toy-diffusion Gen training step with and without flushing subnormals to zero,
side by side in one run.

The Gen run's weight decay drives its unused units' weights towards zero; once they fall below float32's smallest
normal number (1.2e-38) they are subnormal, and on Intel CPUs every product that touches them takes a slow microcode
path. `toy_diffusion` therefore trains inside `flushed_denormals()`, which flushes on every thread torch computes on
(`torch.set_flush_denormal` alone sets only the calling thread, and the matmul's other threads stay slow). This
benchmark builds the Gen model, makes a random share `--dead` of its hidden units subnormal (as a long run leaves
them, scattered over the units) and times `diffusion_grads` plus one Adam step at the Gen batch size with no flush,
with torch's flush on the calling thread only, and with `flushed_denormals()`, in turn (ABCABC...) `--repeats`
times. It prints the median time per step of each and its ratio to the all-thread flush's (> 1: slower than it).
Absolute times drift on shared machines; the ratios are the numbers to quote.

    python benchmarks/denormal_speed.py [--steps 20] [--repeats 3] [--dead 0.5]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from common.plumbing import denormals
from common.theory import dae
from common.theory import toy_diffusion as td


@contextlib.contextmanager
def _torch_flush_calling_thread():
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


MODES = {"no flush": contextlib.nullcontext, "calling thread only": _torch_flush_calling_thread,
         "every thread": denormals.flushed_denormals}


def step_seconds(mode: str, steps: int, dead: float) -> float:
    model = td.build_model(1)                             # built unflushed, so the subnormal rows stay subnormal
    with torch.no_grad():
        W = model.encoder.weight                                                    # [p, d]
        rows = torch.randperm(W.shape[0], generator=torch.Generator().manual_seed(0))[:int(dead * W.shape[0])]
        W[rows] *= 1e-39 / W[rows].abs().max()                                      # subnormal rows, scattered
    params = dict(model.named_parameters())
    opt = dae.make_optimizer(list(params.values()), td.GEN_CONFIG, fused=True)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(td.GEN_CONFIG.batch_size, 1024, generator=g).clamp(-1, 1)     # [B, d]
    sigma = torch.full((td.GEN_CONFIG.batch_size, 1), 0.5)                          # [B, 1]
    x_t = x0 + sigma * torch.randn(x0.shape, generator=g)                           # [B, d]
    with MODES[mode]():
        t0 = time.perf_counter()
        for _ in range(steps):
            _, grads = td.diffusion_grads(params, x0, x_t, sigma)
            for name, grad in grads.items():
                params[name].grad = grad
            opt.step()
        return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dead", type=float, default=0.5, help="share of hidden units made subnormal")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU "
          f"{torch.backends.cpu.get_cpu_capability()}; Gen batch {td.GEN_CONFIG.batch_size}, "
          f"{args.dead:.0%} of the units subnormal; flush reaches the OpenMP workers: "
          f"{denormals.reaches_worker_threads()}")
    times = {mode: [] for mode in MODES}
    for _ in range(args.repeats):
        for mode in MODES:
            times[mode].append(step_seconds(mode, args.steps, args.dead))
    median = {mode: statistics.median(t) for mode, t in times.items()}
    for mode, t in median.items():
        print(f"{mode:>20}: {t * 1e3:8.2f} ms/step  ({t / median['every thread']:.1f}x the every-thread flush)")


if __name__ == "__main__":
    main()
