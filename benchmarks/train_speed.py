"""Training speed: this repo's trainers vs the official-style loops, side by side in one run.

Models: the ReLU DAE (paper-notes §2.3, `common/dae.py`) and the toy diffusion model (§3.3,
`common/toy_diffusion.py`), each with its Mem and Gen config. For each, both loops train a freshly seeded
model on the same data with the same seed for `--steps` steps; they alternate `--repeats` times (ABAB...) so
machine drift hits both. We print the median time per step of each, the ratio official / ours (> 1: ours is
faster), the largest weight difference after the short run (both follow the same random draws, so only float
rounding separates them), and the projected time of the full paper-spec run with ours. The official-style
loops are `reference_train_dae` (autograd, `torch.randint` batches) and `reference_train_diffusion`
(autograd, a shuffled `DataLoader` with drop_last). `gen-bf16` is the toy diffusion Gen config with the
optional bf16 mode (`matmul_dtype=torch.bfloat16`: the five big matmuls in bf16) against the same fp32
official-style loop; its weight difference is bf16 rounding, not a bug. Before the diffusion rows, one line
times the trainer's main fp32 product with torch's default CPU GEMM (MKL) and with `toy_diffusion.matmul`
(oneDNN), which is where most of the diffusion trainer's speed-up comes from on AMD CPUs.
Absolute times drift on shared machines; the ratio is the number to quote.

    python benchmarks/train_speed.py [--model dae|diffusion|all] [--steps 1000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import dae, data, toy_diffusion  # noqa: E402


def run(build, train, x, cfg) -> tuple[float, torch.Tensor]:
    torch.manual_seed(cfg.seed)
    model = build()
    seconds = train(model, x, cfg, progress=False)["train_seconds"]
    return seconds / cfg.steps, model.encoder.weight.detach().clone()


def gemm_line(repeats: int = 200) -> str:
    """The toy diffusion trainer's main product, [256, 1024] x [1024, 256] in fp32, with torch's default CPU GEMM
    (`torch.mm`, MKL) and with `toy_diffusion.matmul` (oneDNN), alternating."""
    a, b = torch.randn(256, 1024), torch.randn(1024, 256)
    times = {"mm": [], "matmul": []}
    for _ in range(repeats):
        for name, fn in (("mm", torch.mm), ("matmul", toy_diffusion.matmul)):
            t0 = time.perf_counter()
            fn(a, b)
            times[name].append(time.perf_counter() - t0)
    mm, ours = statistics.median(times["mm"]), statistics.median(times["matmul"])
    return (f"fp32 GEMM 256x1024x256: torch.mm {mm * 1e3:.3f} ms, toy_diffusion.matmul (oneDNN: "
            f"{toy_diffusion._ONEDNN_LINEAR}) {ours * 1e3:.3f} ms, ratio {mm / ours:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["dae", "diffusion", "all"], default="all")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    faces = data.load_faces(100_000 if args.model != "dae" else 10_000, source="lfw")
    x_all = torch.from_numpy(faces.train)
    x_mem = x_all[data.memorization_set(faces)]
    cases = []
    if args.model in ("dae", "all"):
        build = lambda: dae.TiedDAE(d=1024, p=100)
        cases += [("dae", "mem", build, dae.train_dae, dae.reference_train_dae, dae.MEM_CONFIG, x_mem),
                  ("dae", "gen", build, dae.train_dae, dae.reference_train_dae, dae.GEN_CONFIG, x_all[:10_000])]
    if args.model in ("diffusion", "all"):
        td = toy_diffusion
        build = lambda: td.DAECond(d=1024, hidden=256)
        bf16 = partial(td.train_diffusion, matmul_dtype=torch.bfloat16)       # the optional bf16 mode
        cases += [("diffusion", "mem", build, td.train_diffusion, td.reference_train_diffusion, td.MEM_CONFIG, x_mem),
                  ("diffusion", "gen", build, td.train_diffusion, td.reference_train_diffusion, td.GEN_CONFIG, x_all),
                  ("diffusion", "gen-bf16", build, bf16, td.reference_train_diffusion, td.GEN_CONFIG, x_all)]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, data {faces.source}, "
          f"{args.steps} steps x {args.repeats} repeats per loop, alternating\n")
    if args.model in ("diffusion", "all"):
        print(gemm_line() + "\n")
    print(f"{'model':<10}{'config':<9}{'official ms/step':>17}{'ours ms/step':>14}{'ratio':>8}{'max |dW|':>10}"
          f"{'full run, ours (s)':>20}")
    totals: dict[str, float] = {}
    for model_name, cfg_name, build, ours_fn, ref_fn, cfg, x in cases:
        short = replace(cfg, steps=args.steps)
        ref_times, our_times = [], []
        for _ in range(args.repeats):
            t_ref, w_ref = run(build, ref_fn, x, short)
            t_ours, w_ours = run(build, ours_fn, x, short)
            ref_times.append(t_ref), our_times.append(t_ours)
        ref, ours = statistics.median(ref_times), statistics.median(our_times)
        full = ours * cfg.steps
        if not cfg_name.endswith("bf16"):                                 # the default (fp32) run's total
            totals[model_name] = totals.get(model_name, 0.0) + full
        print(f"{model_name:<10}{cfg_name:<9}{ref * 1e3:>17.3f}{ours * 1e3:>14.3f}{ref / ours:>7.2f}x"
              f"{float((w_ref - w_ours).abs().max()):>10.1e}{full:>20.0f}")
    print()
    for model_name, total in totals.items():
        print(f"projected full paper-spec run of {model_name} (mem + gen) with ours: {total:.0f} s")


if __name__ == "__main__":
    main()
