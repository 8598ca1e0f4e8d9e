"""Training speed: this repo's trainers vs the official training cells, side by side in one run.

Models: the ReLU DAE (`common/theory/dae.py`) and the toy diffusion model
(`common/theory/toy_diffusion.py`), each with its Mem and Gen config. The official side is the official notebooks'
training cell as written (`common/theory/official.py`: its classes, its single seed before the build, its loaders and
autograd); ours builds the model with the same seed and trains with the hand-gradient trainer. Both run `--steps`
steps on the same data; they alternate `--repeats` times (ABAB...) so machine drift hits both. We print the median
time per step of each, the ratio official / ours (> 1: ours is faster), the largest weight difference after the
short run (both follow the same random stream, so only float rounding separates them; RMSprop amplifies it in
the near-zero gradients of dead units), and the projected time of the full paper-spec run with ours.
`gen-bf16` is the toy diffusion Gen config with the optional bf16 mode (`matmul_dtype=torch.bfloat16`) against the
same fp32 official cell; its weight difference is bf16 rounding, not a bug. Before the diffusion rows, one line
says which GEMM the toy diffusion trainer uses (`toy_diffusion.GEMM`: "mkl" by default, the official cell's own;
DGR_TOY_GEMM=onednn or `--gemm onednn` for oneDNN's), and one times the trainer's main fp32 product with MKL's GEMM
(`torch.mm`, torch's default) and with oneDNN's: which is faster depends on the CPU, not on its instruction set
(oneDNN measured 2.2x MKL's speed on an AMD AVX-512 CPU, 0.86x on an Intel AVX-512 one, 0.79x on an AVX2 AMD), so
the default is MKL, the official cell's own. After the rows, the seed ensemble: the Mem config's `--seeds` seeds
trained together (`train_diffusion_seeds`) against one seed's run, alternating.
Absolute times drift on shared machines; the ratio is the number to quote.

    python benchmarks/train_speed.py [--model dae|diffusion|all] [--steps 1000] [--repeats 3] [--seeds 8]
                                     [--gemm mkl|onednn]
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from functools import partial

import torch

from common.theory import dae, data, official
from common.theory import toy_diffusion


def run(train, x, cfg) -> tuple[float, torch.Tensor]:
    """`train(x, cfg)` -> the trained model; (seconds per step, its encoder weight [p, d])."""
    t0 = time.perf_counter()
    model = train(x, cfg)
    W = model.encoder[0].weight if isinstance(model.encoder, torch.nn.Sequential) else model.encoder.weight
    return (time.perf_counter() - t0) / cfg.steps, W.detach().clone()


def ours_dae(x, cfg):
    model = dae.build_dae(cfg.seed, d=x.shape[1], p=100)
    dae.train_dae(model, x, cfg, progress=False)
    return model


def official_dae(x, cfg):
    if cfg.batch_size is None:
        return official.train_dae_mem(x, cfg.steps, cfg.sigma, cfg.lr, cfg.weight_decay, cfg.seed)
    return official.train_dae_gen(x, cfg.steps, cfg.sigma, cfg.lr, cfg.weight_decay, cfg.seed, batch_size=cfg.batch_size)


def ours_diffusion(x, cfg, matmul_dtype=None):
    model = toy_diffusion.build_model(cfg.seed, d=x.shape[1])
    toy_diffusion.train_diffusion(model, x, cfg, progress=False, matmul_dtype=matmul_dtype)
    return model


def official_diffusion(x, cfg):
    return official.train_diffusion(x, cfg.steps, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.seed)


def ensemble_line(x, cfg, seeds: int, repeats: int) -> str:
    """`seeds` Mem runs trained together against one run, alternating; the target is <= 2x."""
    times = {"one": [], "together": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours_diffusion(x, cfg)
        times["one"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        toy_diffusion.train_diffusion_seeds(x, cfg, range(1, seeds + 1), progress=False)
        times["together"].append(time.perf_counter() - t0)
    one, together = statistics.median(times["one"]), statistics.median(times["together"])
    return (f"seed ensemble (mem, {cfg.steps} steps): one seed {one / cfg.steps * 1e3:.3f} ms/step, {seeds} seeds "
            f"together {together / cfg.steps * 1e3:.3f} ms/step: {together / one:.2f}x one run "
            f"({seeds / (together / one):.1f}x faster than {seeds} runs one after another)")


def gemm_line(repeats: int = 200) -> str:
    """The toy diffusion trainer's main product, [256, 1024] x [1024, 256] in fp32, with MKL's GEMM (`torch.mm`,
    torch's default) and with oneDNN's (`toy_diffusion.matmul` on "onednn"), alternating."""
    if not toy_diffusion._ONEDNN_LINEAR:
        return "fp32 GEMM 256x1024x256: this torch build has no oneDNN linear kernel; MKL only"
    a, b = torch.randn(256, 1024), torch.randn(1024, 256)
    times = {"mkl": [], "onednn": []}
    for _ in range(repeats):
        for gemm in times:
            with toy_diffusion.use_gemm(gemm):
                t0 = time.perf_counter()
                toy_diffusion.matmul(a, b)
                times[gemm].append(time.perf_counter() - t0)
    mkl, onednn = statistics.median(times["mkl"]), statistics.median(times["onednn"])
    return (f"fp32 GEMM 256x1024x256 (CPU {torch.backends.cpu.get_cpu_capability()}): MKL (torch.mm) "
            f"{mkl * 1e3:.3f} ms, oneDNN {onednn * 1e3:.3f} ms: oneDNN {mkl / onednn:.2f}x MKL's speed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["dae", "diffusion", "all"], default="all")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=8, help="seeds of the ensemble line (0: skip it)")
    parser.add_argument("--gemm", choices=toy_diffusion.GEMMS, default=None,
                        help="the toy diffusion trainer's GEMM (default: toy_diffusion.GEMM, i.e. DGR_TOY_GEMM or mkl)")
    args = parser.parse_args()
    if args.gemm:
        toy_diffusion.set_gemm(args.gemm)

    faces = data.load_faces(100_000 if args.model != "dae" else 10_000, source="lfw")
    x_all = torch.from_numpy(faces.train)
    x_mem = x_all[data.memorization_set(faces)]
    cases = []
    if args.model in ("dae", "all"):
        cases += [("dae", "mem", ours_dae, official_dae, dae.MEM_CONFIG, x_mem),
                  ("dae", "gen", ours_dae, official_dae, dae.GEN_CONFIG, x_all[:10_000])]
    if args.model in ("diffusion", "all"):
        bf16 = partial(ours_diffusion, matmul_dtype=torch.bfloat16)                 # the optional bf16 mode
        cases += [("diffusion", "mem", ours_diffusion, official_diffusion, toy_diffusion.MEM_CONFIG, x_mem),
                  ("diffusion", "gen", ours_diffusion, official_diffusion, toy_diffusion.GEN_CONFIG, x_all),
                  ("diffusion", "gen-bf16", bf16, official_diffusion, toy_diffusion.GEN_CONFIG, x_all)]
        if not toy_diffusion._ONEDNN_BF16:       # no bf16 GEMM kernels: the mode would only emulate bf16, slowly
            cases.pop()
            print("gen-bf16 skipped: this CPU has no bf16 GEMM kernels (oneDNN AVX-512 BF16)")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, data {faces.source}, "
          f"{args.steps} steps x {args.repeats} repeats per loop, alternating\n")
    if args.model in ("diffusion", "all"):
        official_side = "the official cell's own" if toy_diffusion.GEMM == "mkl" else "the official cell stays on MKL"
        print(f"toy diffusion trainer GEMM: {toy_diffusion.GEMM} ({official_side}; DGR_TOY_GEMM or --gemm sets it)")
        print(gemm_line() + "\n")
    print(f"{'model':<10}{'config':<9}{'official ms/step':>17}{'ours ms/step':>14}{'ratio':>8}{'max |dW|':>10}"
          f"{'full run, ours (s)':>20}")
    totals: dict[str, float] = {}
    for model_name, cfg_name, ours_fn, ref_fn, cfg, x in cases:
        short = replace(cfg, steps=args.steps)
        ref_times, our_times = [], []
        for _ in range(args.repeats):
            t_ref, w_ref = run(ref_fn, x, short)
            t_ours, w_ours = run(ours_fn, x, short)
            ref_times.append(t_ref), our_times.append(t_ours)
        ref, ours = statistics.median(ref_times), statistics.median(our_times)
        full = ours * cfg.steps
        if not cfg_name.endswith("bf16"):                                 # the default (fp32) run's total
            totals[model_name] = totals.get(model_name, 0.0) + full
        print(f"{model_name:<10}{cfg_name:<9}{ref * 1e3:>17.3f}{ours * 1e3:>14.3f}{ref / ours:>7.2f}x"
              f"{float((w_ref - w_ours).abs().max()):>10.1e}{full:>20.0f}")
    if args.model in ("diffusion", "all") and args.seeds:
        print("\n" + ensemble_line(x_mem, replace(toy_diffusion.MEM_CONFIG, steps=args.steps), args.seeds, args.repeats))
    print()
    for model_name, total in totals.items():
        print(f"projected full paper-spec run of {model_name} (mem + gen) with ours: {total:.0f} s")


if __name__ == "__main__":
    main()
