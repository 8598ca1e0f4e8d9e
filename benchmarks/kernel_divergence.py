"""How far the CPU GEMM moves a Mem run: the toy diffusion Mem config trained once on MKL's GEMM and once on
oneDNN's (`toy_diffusion.use_gemm`), everything else the same (seed, data, random stream, optimizer).

The data are the face stand-in's memorization set as the tests build it (`load_faces(2000, 20, source="lfw")`,
`memorization_set`: the 5 images of ReLU_Diffusion.ipynb's Mem run). Printed: max |W_mkl - W_onednn| over the
encoder weight after `--short` steps (the length of the old 3,000-step official comparison) and after `--steps`
(default 100,000, the full Mem run), the largest |W| for scale, and each full run's `mem_run_state` (clean / ghost /
extra units, live and face units). The short runs are separate runs of `--short` steps; the trainer is
deterministic, so they are the long runs' first `--short` steps.

Both kernels compute IEEE fp32 products in different summation orders; RMSprop divides by the running scale of the
near-zero gradients of dead units, so their rounding grows into visibly different weights. Within one kernel the run
is bit-for-bit the same whatever `--threads` (checked for 150 steps on Intel AVX-512 with 1 and 2 threads), so on a
busy machine `--threads 1` measures the same runs, only more slowly; times are not the point here.

    python benchmarks/kernel_divergence.py [--steps 100000] [--short 3000] [--seed 1] [--threads N]
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from common.theory import data
from common.theory import toy_diffusion


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def train(x: torch.Tensor, cfg, gemm: str) -> tuple[toy_diffusion.DAECond, float]:
    t0 = time.perf_counter()
    with toy_diffusion.use_gemm(gemm):
        model = toy_diffusion.build_model(cfg.seed, d=x.shape[1])
        toy_diffusion.train_diffusion(model, x, cfg, progress=False)
    return model, time.perf_counter() - t0


def max_diff(a: toy_diffusion.DAECond, b: toy_diffusion.DAECond) -> float:
    return float((a.encoder.weight - b.encoder.weight).detach().abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=toy_diffusion.MEM_CONFIG.steps)
    parser.add_argument("--short", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if not toy_diffusion._ONEDNN_LINEAR:
        sys.exit("this torch build has no oneDNN linear kernel (torch.ops.mkldnn._linear_pointwise): "
                 "nothing to compare")
    if args.threads:
        torch.set_num_threads(args.threads)

    faces = data.load_faces(2000, 20, source="lfw")
    idx = data.memorization_set(faces)
    x = torch.from_numpy(faces.train[idx])
    cfg = replace(toy_diffusion.MEM_CONFIG, seed=args.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {cpu_name()} "
          f"(torch capability {torch.backends.cpu.get_cpu_capability()}), oneDNN bf16 kernels: "
          f"{toy_diffusion._ONEDNN_BF16}")
    print(f"Mem config {cfg.optimizer} lr {cfg.lr:g} weight decay {cfg.weight_decay:g} full batch, seed {cfg.seed}; "
          f"data {faces.source}, memorization set rows {idx.tolist()}; GEMMs mkl (the default) and onednn\n")

    for steps in (args.short, args.steps):
        short = replace(cfg, steps=steps)
        runs = {gemm: train(x, short, gemm) for gemm in ("mkl", "onednn")}
        (mkl, t_mkl), (dnn, t_dnn) = runs["mkl"], runs["onednn"]
        scale = float(mkl.encoder.weight.detach().abs().max())
        print(f"after {steps:>7,} steps: max |W_mkl - W_onednn| = {max_diff(mkl, dnn):.3e}   (max |W_mkl| = "
              f"{scale:.3f}; train s: mkl {t_mkl:.0f}, onednn {t_dnn:.0f})", flush=True)
    print()
    print(f"{'GEMM':<8}{'state':<13}{'live units':>11}{'face units':>11}{'ghost group':>12}{'skip':>9}")
    for gemm, (model, _) in runs.items():
        s = toy_diffusion.mem_run_state(model, x.numpy())
        print(f"{gemm:<8}{s['state']:<13}{s['live_units']:>11}{s['face_units']:>11}{s['ghost_group']:>12}"
              f"{float(model.skip.detach()):>9.4f}")
    W = {gemm: model.encoder.weight.detach() for gemm, (model, _) in runs.items()}
    live = (W["mkl"].norm(dim=1) > 0.1) & (W["onednn"].norm(dim=1) > 0.1)      # the same unit live in both runs
    if live.any():
        print(f"\nunits live in both runs: {int(live.sum())}; max |W_mkl - W_onednn| over them "
              f"{float((W['mkl'][live] - W['onednn'][live]).abs().max()):.3e}")


if __name__ == "__main__":
    main()
