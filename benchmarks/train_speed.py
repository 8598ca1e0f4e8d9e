"""Training speed: this repo's trainer vs the official-style loop, side by side in one run.

For each config (the ReLU-DAE Mem and Gen runs of paper-notes §2.3), both loops train a freshly seeded model on
the same data with the same seed for `--steps` steps. They alternate `--repeats` times (ABAB...) so machine
drift hits both; we report the median time per step of each and the ratio official / ours (> 1: ours is faster),
plus the projected time of the full 50k-step paper run. Absolute times drift on shared machines; the ratio is
the number to quote.

    python benchmarks/train_speed.py [--steps 2000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import dae, data  # noqa: E402


def time_per_step(train, x, cfg) -> tuple[float, torch.Tensor]:
    torch.manual_seed(cfg.seed)
    model = dae.TiedDAE(d=x.shape[1], p=100)
    seconds = train(model, x, cfg, progress=False)["train_seconds"]
    return seconds / cfg.steps, model.encoder.weight.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    faces = data.load_faces(10_000, source="lfw")
    x_gen = torch.from_numpy(faces.train)
    x_mem = x_gen[data.select_separable(faces.train[:80], 5)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, data {faces.source}, "
          f"{args.steps} steps x {args.repeats} repeats per loop\n")
    print(f"{'config':<6} {'official ms/step':>17} {'ours ms/step':>13} {'ratio':>7} {'max |dW|':>9}"
          f" {'full run ours (s)':>18}")
    total_ours = 0.0
    for name, cfg, x in [("mem", dae.MEM_CONFIG, x_mem), ("gen", dae.GEN_CONFIG, x_gen)]:
        cfg_short = replace(cfg, steps=args.steps)
        ref_times, our_times = [], []
        for _ in range(args.repeats):
            t_ref, w_ref = time_per_step(dae.reference_train_dae, x, cfg_short)
            t_ours, w_ours = time_per_step(dae.train_dae, x, cfg_short)
            ref_times.append(t_ref), our_times.append(t_ours)
        ref, ours = statistics.median(ref_times), statistics.median(our_times)
        full = ours * cfg.steps
        total_ours += full
        print(f"{name:<6} {ref * 1e3:>17.3f} {ours * 1e3:>13.3f} {ref / ours:>6.2f}x"
              f" {float((w_ref - w_ours).abs().max()):>9.1e} {full:>18.0f}")
    print(f"\nprojected full paper-spec run (mem + gen, 50k steps each) with ours: {total_ours:.0f} s")


if __name__ == "__main__":
    main()
