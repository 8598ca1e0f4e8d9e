"""The top layer, which nothing else imports: the commands that run the rest — `make figures`'s notebook runner, and
generation and scoring from the shell, each on one process or sharded over many (`plumbing/shard.py`):

    python -m common.cli.notebooks                                    # every notebook, default parameters (dgr-notebooks)
    python -m common.cli.generate --model testbed --prompts mem       # a prompt set into the notebooks' cache folder
    python -m common.cli.score <generation folder> --detector std     # its scores, cached beside the images
    accelerate launch --multi_gpu --num_processes 8 -m common.cli.generate ...   # split over 8 GPUs
    torchrun --nproc_per_node 2 -m common.cli.score ...               # or over 2 CPU processes (gloo)
    python -m common.cli.summary --write README.md                    # the README's table from results/*.json

The notebooks stay the way to read and plot: they find what these commands made and do not make it again. Installed
by `make`, the three are also `dgr-notebooks`, `dgr-generate` and `dgr-score`. This module holds what the commands
share (runtime arguments, threads, stale temporaries).
"""
from __future__ import annotations

import json
from pathlib import Path


def parse_option(text: str) -> tuple[str, object]:
    """"key=value" -> (key, value), the value read as JSON when it is (4, 0.5, true, null, [1, 2]), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"an option is key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_runtime_arguments(parser) -> None:
    """The options both commands share: where and how the model runs in each process."""
    parser.add_argument("--dtype", help="float16 / float32 (default: float16 on CUDA, float32 on CPU)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is")
    parser.add_argument("--threads", type=int, help="torch threads per process (default: OMP_NUM_THREADS or torch's)")


def set_threads(threads: int | None) -> None:
    """torch's intra-op threads, when given (a launcher sets OMP_NUM_THREADS per process otherwise)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files a killed run left in `folder` (`results.atomic_path` renames finished ones away).
    Called by the main process before any process of the run writes: one run per folder at a time."""
    stale = list(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
