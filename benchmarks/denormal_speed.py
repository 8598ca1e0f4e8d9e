"""Subnormal weights and the CPU: one toy-diffusion Gen training step with and without flushing subnormals to zero,
side by side in one run.

The Gen run's weight decay drives its unused units' weights towards zero; once they fall below float32's smallest
normal number (1.2e-38) they are subnormal, and on Intel CPUs every product that touches them takes a slow microcode
path. `toy_diffusion` therefore trains inside `flushed_denormals()`. This benchmark builds the Gen model, makes a
share `--dead` of its hidden units subnormal (as a long run leaves them) and times `diffusion_grads` plus one Adam
step at the Gen batch size with the flush off and on, alternating (ABAB...) `--repeats` times. It prints the median
time per step of each and the ratio off / on (> 1: the flush is faster). Absolute times drift on shared machines;
the ratio is the number to quote.

    python benchmarks/denormal_speed.py [--steps 20] [--repeats 3] [--dead 0.5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from common.theory import dae
from common.theory import toy_diffusion as td


def step_seconds(flush: bool, steps: int, dead: float) -> float:
    torch.set_flush_denormal(False)                       # build the subnormal weights unflushed
    model = td.build_model(1)
    with torch.no_grad():
        rows = int(dead * model.encoder.weight.shape[0])
        model.encoder.weight[:rows] *= 1e-39 / model.encoder.weight[:rows].abs().max()   # subnormal rows
    params = dict(model.named_parameters())
    opt = dae.make_optimizer(list(params.values()), td.GEN_CONFIG, fused=True)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(td.GEN_CONFIG.batch_size, 1024, generator=g).clamp(-1, 1)     # [B, d]
    sigma = torch.full((td.GEN_CONFIG.batch_size, 1), 0.5)                          # [B, 1]
    x_t = x0 + sigma * torch.randn(x0.shape, generator=g)                           # [B, d]
    torch.set_flush_denormal(flush)
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            _, grads = td.diffusion_grads(params, x0, x_t, sigma)
            for name, grad in grads.items():
                params[name].grad = grad
            opt.step()
        return (time.perf_counter() - t0) / steps
    finally:
        torch.set_flush_denormal(False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dead", type=float, default=0.5, help="share of hidden units made subnormal")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU "
          f"{torch.backends.cpu.get_cpu_capability()}; Gen batch {td.GEN_CONFIG.batch_size}, "
          f"{args.dead:.0%} of the units subnormal")
    times = {False: [], True: []}
    for _ in range(args.repeats):
        for flush in (False, True):
            times[flush].append(step_seconds(flush, args.steps, args.dead))
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"flush off: {off * 1e3:8.2f} ms/step\nflush on : {on * 1e3:8.2f} ms/step\n"
          f"ratio off / on: {off / on:.1f}x")


if __name__ == "__main__":
    main()
