"""A job split between processes with Hugging Face accelerate, and the per-process files that make it resumable.

One process per GPU (or several CPU processes), started by `accelerate launch` or `torchrun`; or a plain
`python -m ...`, which is one process and needs no launcher:

    shard = current_shard()                          # this process: Shard(index=k, count=n, device=...)
    mine = shard.split(units)                        # its share of the work (accelerate's split_between_processes)
    path = shard.file(folder, "manifest.jsonl")      # manifest.jsonl for one process; manifest.rank<k>.jsonl for k of n
    paths = shard_files(folder, "manifest.jsonl")    # every process's file, read together (merged on read)

Work is split in whole units, in order (a unit is a batch of prompts to generate, a chunk of images to score), the
first processes taking one unit more when the count does not divide. A unit is computed the same way whatever the
number of processes, so the results are too, bit for bit on the CPU. Each process writes only its own files: no
locks, and a process killed mid-run loses at most the unit in flight.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence


@dataclass(frozen=True)
class Shard:
    """Process `index` of `count`, running on `device`. `Shard()` is the single process (no launcher, no accelerate)."""

    index: int = 0
    count: int = 1
    device: str = "cpu"
    state: Any = None                 # the accelerate.PartialState behind it; None for a plain single process

    @property
    def main(self) -> bool:
        return self.index == 0

    def split(self, units: Sequence) -> list:
        """This process's contiguous share of `units` (all of them for a single process)."""
        if self.count == 1:
            return list(units)
        with self.state.split_between_processes(list(units)) as mine:
            return list(mine)

    def file_name(self, name: str) -> str:
        """`name` for a single process; `<stem>.rank<k><suffix>` for process k of several."""
        if self.count == 1:
            return name
        stem, suffix = os.path.splitext(name)
        return f"{stem}.rank{self.index}{suffix}"

    def file(self, folder: str | os.PathLike, name: str) -> Path:
        return Path(folder) / self.file_name(name)

    def wait(self) -> None:
        """Barrier: return when every process has reached it."""
        if self.count > 1:
            self.state.wait_for_everyone()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Run the block on the main process first, then on the others (e.g. training or downloading into a cache
        that every process then reads)."""
        if self.count == 1:
            yield
            return
        with self.state.main_process_first():
            yield


def current_shard(cpu: bool | None = None) -> Shard:
    """This process's place in the launch, from `accelerate.PartialState`. cpu None: the CPU when no CUDA GPU is
    present or `accelerate launch --cpu` asked for it; there several processes talk over gloo."""
    import torch
    from accelerate import PartialState

    if cpu is None:
        cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in {"1", "true"}
    state = PartialState(cpu=cpu)
    return Shard(state.process_index, state.num_processes, str(state.device), state)


def shard_files(folder: str | os.PathLike, name: str) -> list[Path]:
    """`folder/name` and every process's `<stem>.rank<k><suffix>` beside it, those that exist, rank order."""
    folder = Path(folder)
    stem, suffix = os.path.splitext(name)
    pattern = re.compile(rf"{re.escape(stem)}\.rank(\d+){re.escape(suffix)}")
    ranks = sorted((int(m.group(1)), p) for p in folder.glob(f"{stem}.rank*{suffix}")
                   if (m := pattern.fullmatch(p.name)))
    return [p for p in [folder / name, *(p for _, p in ranks)] if p.is_file()]


def merge_newest(rows: Sequence[dict], key: str = "index") -> dict:
    """One row per `key`, the most recently written (field "written", a time stamp; rows without it count as oldest):
    what the files of several processes and runs say together."""
    newest: dict = {}
    for row in rows:
        k = row[key]
        if k not in newest or (row.get("written") or 0) >= (newest[k].get("written") or 0):
            newest[k] = row
    return newest


def unit_batches(n: int, size: int) -> list[list[int]]:
    """range(n) in consecutive units of `size`: [[0, .., size-1], [size, ..], ..]; the last may be shorter."""
    if size < 1:
        raise ValueError(f"the unit size must be >= 1, got {size}")
    return [list(range(start, min(start + size, n))) for start in range(0, n, size)]
