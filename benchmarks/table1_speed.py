"""Seconds per sample of every Table 1 detector, side by side in one run.

The same samples, each method timed `--repeats` times in turn (ABC ABC ...) so machine drift hits all of them;
the median per sample is reported with its ratio to the std detector, beside the paper's (Table 1, LAION column,
hardware not stated). Absolute times drift on shared machines; the ratios are the numbers to quote.

    --model testbed   the CPU testbed (trained once by CPU_testbed.ipynb; the run stops if it is missing), every
                      method, on its held-out captions and random images (no method's time depends on them)
    --model sd14      SD v1.4's architecture at full size with random weights (a pass costs the same with any
                      weights); NeMo's statistics: its released file when found (--nemo-statistics), else random
                      ones of the right widths. On a CPU the default methods are the cheap ones; Carlini et al.
                      (10 full generations) and Wen et al.'s 4 x 50 are added with --methods
    --model tiny      the tiny random pipeline, LID by one Hutchinson probe (checks the script in a minute)

    python benchmarks/table1_speed.py [--model testbed|sd14|tiny] [--n 16] [--repeats 3] [--methods std wen ...]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from common import detectors
from common.testbeds import cpu_testbed as testbed
from common.models import pipelines, representations
from common.detectors import nemo

CPU_SD14_METHODS = ("std", "wen", "nemo", "nemo-ssim", "lid")


def load(model: str):
    if model == "testbed":
        folder = testbed.testbed_folder()
        if not testbed.is_testbed(folder):
            print(f"no trained CPU testbed at {folder}: run 2-Application/CPU_testbed.ipynb first (≈ 15 min); skipped")
            sys.exit(0)
        pipe = pipelines.load_pipeline(str(folder))
        return pipe, list(testbed.load_data(folder).held_out_captions)
    return pipelines.load_pipeline(model), [f"a photo of subject number {i}" for i in range(64)]


def statistics_for(pipe, model: str, calibration, path):
    if model == "sd14" and path:
        return nemo.load_statistics(path)
    if model == "sd14":          # random weights: random statistics of the right widths time the same
        modules = dict(pipe.unet.named_modules())
        widths = [modules[name].out_features for name in nemo.value_layers(pipe.unet)]
        return nemo.NemoStatistics(tuple(np.zeros(w) for w in widths), tuple(np.ones(w) for w in widths), "random")
    return nemo.reference_statistics(pipe, calibration)


def main() -> None:
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="testbed", choices=("testbed", *pipelines.RANDOM_MODELS))
    parser.add_argument("--n", type=int, default=None, help="samples per timing (default 16; sd14 on a CPU: 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=None, help="default: all (sd14 on a CPU: the cheap ones)")
    parser.add_argument("--nemo-statistics", default=None, help="NeMo's released statistics file (sd14)")
    args = parser.parse_args()
    cpu_sd14 = args.model == "sd14" and not gpu
    n = args.n or (2 if cpu_sd14 else 16)
    methods = args.methods or list(CPU_SD14_METHODS if cpu_sd14 else detectors.TABLE_ROWS)
    if "std" not in methods:
        methods = ["std", *methods]

    pipe, captions = load(args.model)
    side = representations.pipeline_resolution(pipe)
    images = torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    samples = detectors.Samples(images, captions[:n], list(range(n)))
    options = {"nemo": {"statistics": statistics_for(pipe, args.model, captions[n:], args.nemo_statistics)}}
    if args.model == "tiny":     # its D = 1,024 would take the exact trace: minutes for a script check
        options["lid"] = options["lid-cond"] = {"trace": "hutchinson"}
    print(f"torch {torch.__version__}, {pipe.device} ({torch.cuda.get_device_name() if gpu else f'{torch.get_num_threads()} threads'}), "
          f"model {args.model} in {pipe.unet.dtype}, {n} samples of {side}x{side}, {args.repeats} repeats\n")

    def run(name):
        if gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        detectors.get(name).score(pipe, samples, **options.get(name, {}))
        if gpu:
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / n

    for name in methods:                                                    # warm-up (kernels, caches)
        run(name)
    times = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name in methods:
            times[name].append(run(name))
    per_sample = {name: statistics.median(v) for name, v in times.items()}

    print(f"{'method':<12} {'s / sample':>11} {'x std':>8} | {'paper s':>8} {'paper x std':>11}")
    paper_std = detectors.PAPER_TABLE1["std"]["laion"][2]
    for name in methods:
        detector = detectors.get(name)
        paper = (detectors.SINCE_PAPER[name] if name in detectors.SINCE_PAPER
                 else detectors.PAPER_TABLE1[detector.paper_row]["laion"])[2]
        theirs = "" if paper is None else f"{paper:8.3f} {paper / paper_std:11.1f}"
        print(f"{name:<12} {per_sample[name]:11.4f} {per_sample[name] / per_sample['std']:8.1f} | {theirs}")
    print("\n(paper: the row of the method's family; 'wen-4x50', 'nemo-ssim', 'lid-cond' are our extra variants; "
          "sharpness and anisotropy: their own paper's time, where published)")


if __name__ == "__main__":
    main()
