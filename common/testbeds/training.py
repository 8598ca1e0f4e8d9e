"""What the testbeds share: one training loop, one way to cache a trained model folder, and the shape of their
data (distinct images with duplication counts).

    losses = fit(params, batch_loss, steps=..., lr=...)       # AdamW, linear warm-up, optional clipping
    write_folder_atomically(folder, model.save_pretrained, info)   # model files + testbed.json, all or nothing
    read_info(folder), recorded_data_config(DataConfig, folder)    # what a cached folder was trained with
    folder_ready(folder)        # a finished, readable folder; a damaged one is moved aside (the caller retrains)
    ensure_trained(folder, config, train)   # reuse a whole folder recorded with `config`, else train it

`batch_loss(step)` draws its own batch (from the caller's generator, so the random stream is the caller's)
and returns the scalar loss; the loop does the rest. The CPU testbed (VAE, then UNet + text encoder) and the
EDM testbed (`edm_testbed.py`) train through it.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..plumbing.faults import CorruptCacheError, json_problem, move_aside, safetensors_problem
from ..plumbing.results import to_jsonable, write_json_atomic

INFO_NAME = "testbed.json"      # a testbed folder's record: its config, data source, training log

class DuplicatedImages:
    """What a testbed's data set shares: distinct images, each with a kind and a duplication count (the times it
    appears in the training set). Mixed into the testbeds' data classes, which define `images`, `kind`,
    `duplication`."""

    @property
    def train_rows(self) -> np.ndarray:
        """Index into `images` of every training example, duplicates repeated: [N]."""
        return np.repeat(np.arange(len(self.images)), self.duplication)

    def indices(self, kind: str, duplication: int | None = None) -> np.ndarray:
        """The images of one kind (and, if given, one duplication count)."""
        mask = self.kind == kind
        if duplication is not None:
            mask &= self.duplication == duplication
        return np.flatnonzero(mask)


def warmup_factor(step: int, warmup: int) -> float:
    """The learning-rate factor of a linear warm-up over `warmup` steps (1 from then on)."""
    return min(1.0, (step + 1) / max(warmup, 1))


def fit(params: Iterable[torch.nn.Parameter], batch_loss: Callable[[int], torch.Tensor], steps: int, lr: float,
        weight_decay: float = 0.0, warmup: int = 0, clip_norm: float | None = None, desc: str = "training",
        progress: bool = True) -> list[float]:
    """`steps` AdamW steps on `batch_loss(step)`; returns the loss of every step.

    progress: a tqdm bar in a terminal; elsewhere (a notebook, a log file), where every refresh of a bar becomes
    another line of output, one line when done: steps, seconds, last loss."""
    from tqdm import trange

    params = list(params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_factor(s, warmup))
    losses, started = [], time.perf_counter()
    bar = progress and sys.stderr.isatty()
    for step in trange(steps, desc=desc, disable=not bar, mininterval=2):
        loss = batch_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    if progress and not bar:
        last = f"{losses[-1]:.4g}" if losses else "-"
        print(f"{desc}: {steps} steps in {time.perf_counter() - started:.0f} s, last loss {last}", file=sys.stderr)
    return losses


def thin(values: list, points: int = 200) -> list:
    """A loss curve averaged into at most `points` bins (for the info file and the plot)."""
    chunks = np.array_split(np.asarray(values, dtype=np.float64), min(points, len(values)))
    return [float(c.mean()) for c in chunks if len(c)]


def write_folder_atomically(folder, save: Callable[[Path], None], info: dict) -> Path:
    """`save(staging)` and `info` (as INFO_NAME) into `<folder>.partial`, then rename it to `folder`: an
    interrupted run leaves no folder that looks complete (the caches test for the info file)."""
    folder = Path(folder)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save(staging)
    write_json_atomic(staging / INFO_NAME, to_jsonable(info))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def read_info(folder) -> dict:
    """The INFO_NAME record of a testbed folder (CPU, EDM or DiT testbed). A damaged folder (this record or a
    weights file unreadable) is an error naming the file and the command that clears it."""
    folder = Path(folder)
    problem = folder_problem(folder)
    if problem:
        raise CorruptCacheError(f"{folder}: {problem}; the cached model folder is damaged. Delete it "
                                f"(rm -rf '{folder}') and rerun: it is trained again.")
    return json.loads((folder / INFO_NAME).read_text())


def folder_problem(folder) -> str | None:
    """None if a cached model folder is whole: its INFO_NAME reads and every .safetensors file in it opens."""
    folder = Path(folder)
    problem = json_problem(folder / INFO_NAME)
    if problem:
        return f"{INFO_NAME} is {problem}"
    for path in sorted(folder.rglob("*.safetensors")):
        problem = safetensors_problem(path)
        if problem:
            return f"{path.relative_to(folder)} is {problem}"
    return None


def folder_ready(folder) -> bool:
    """Whether `folder` is a finished, readable cache entry (the caches' test instead of "INFO_NAME exists"). A
    folder that is there but damaged is moved aside (`<folder>.corrupt-<time>`), saying why, and False returned: the
    caller trains it again."""
    folder = Path(folder)
    if not (folder / INFO_NAME).is_file():
        return False
    problem = folder_problem(folder)
    if problem is None:
        return True
    aside = move_aside(folder)
    print(f"{folder}: {problem}; moved to {aside.name if aside else '?'}, training it again")
    return False


def ensure_trained(folder, config: dict, train: Callable[[], dict], what: str = "the testbed") -> Path:
    """`folder` when it is whole and its INFO_NAME records `config` (JSON-equal); otherwise `train()` writes it —
    missing, damaged (moved aside by `folder_ready`) or trained with another config (edited by hand, an older
    trainer): never a silent reuse. `train()` returns the info it wrote."""
    folder = Path(folder)
    if folder_ready(folder):                       # whole: its record reads, no need to check it again
        if json.loads((folder / INFO_NAME).read_text())["config"] == to_jsonable(config):
            return folder
        print(f"{folder} was trained with another config: retraining")
    print(f"training {what} into {folder} (once; cached afterwards)")
    info = train()
    print(f"trained in {info['train_seconds']:.0f} s")
    return folder


def recorded_data_config(config_class, folder):
    """The data config a testbed folder was trained with, rebuilt as `config_class` (JSON lists back to tuples)."""
    recorded = read_info(folder)["config"]["data"]
    return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()})
