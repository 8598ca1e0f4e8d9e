"""Trained weights on disk: safetensors files with JSON metadata, written atomically, and a cache that
trains a model only when no checkpoint exists for its exact config.

The cache key hashes everything that determines the weights (model shape, training config, the training
data's bytes, the trainer's version), so a changed setting never reuses a stale checkpoint. A cached checkpoint
that does not open (truncated, overwritten) is moved aside (`<name>.corrupt-<time>`) and trained again; reading
any other unreadable file is an error naming it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .faults import CorruptCacheError, move_aside, safetensors_problem
from .paths import CHECKPOINT_CACHE
from .results import atomic_path, config_key, to_jsonable


def save_safetensors(state: dict[str, torch.Tensor], path, metadata: dict | None = None) -> None:
    """`state` to `path` (safetensors), atomically; metadata values are stored as JSON strings."""
    from safetensors.torch import save_file

    meta = {k: json.dumps(to_jsonable(v)) for k, v in (metadata or {}).items()}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp), metadata=meta)


def load_safetensors(path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state, metadata) from a file written by `save_safetensors`. A file that does not open is an error naming
    it and the fix."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, {k: _from_json(v) for k, v in (f.metadata() or {}).items()}
    except SafetensorError as err:
        raise CorruptCacheError(f"{path} is not a readable safetensors file ({err}). If it is a cached checkpoint, "
                                f"delete it (rm '{path}') and rerun: it is trained again.") from err


def _from_json(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:  # a plain string (early checkpoints stored the tie unencoded)
        return value


def load_official_state(path) -> dict[str, torch.Tensor]:
    """An official `.pth` state dict, read with `weights_only=True` (no pickled code is executed)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def cache_path(name: str, key: dict, cache_dir=None) -> Path:
    """`<cache_dir>/<name>-<hash of key>.safetensors`: where the checkpoint of this exact config lives."""
    return Path(cache_dir or CHECKPOINT_CACHE) / f"{name}-{config_key(key)}.safetensors"


def train_or_load(name: str, key: dict, train: Callable[[], tuple[nn.Module, dict]],
                  load: Callable[[Path], tuple[nn.Module, dict]], save: Callable[[nn.Module, Path, dict], None],
                  cache_dir=None) -> tuple[nn.Module, dict]:
    """Load `<cache_dir>/<name>-<hash of key>.safetensors` if it exists, else `train()` and save it.

    Returns (model, info): the training log or the saved metadata, plus "cached" and "checkpoint".
    """
    path = cache_path(name, key, cache_dir)
    problem = safetensors_problem(path) if path.exists() else None
    if problem:
        aside = move_aside(path)
        print(f"{name}: cached checkpoint {path.name} is {problem}; moved to {aside.name if aside else '?'}, "
              "training again")
    if path.exists():
        model, meta = load(path)
        print(f"{name}: loaded cached checkpoint {path.name} (trained in {meta['train_seconds']:.0f} s)")
        return model, {**meta, "cached": True, "checkpoint": str(path)}
    model, log = train()
    save(model, path, log)
    return model, {**log, "cached": False, "checkpoint": str(path)}


def check_state_shapes(path, state: dict[str, torch.Tensor], model: nn.Module, what: str) -> None:
    """Raise unless `state` has exactly `model`'s keys and shapes; the message lists what was expected and found."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        raise ValueError(f"{path}: not a checkpoint of {what}. Expected keys and shapes {expected}; found {found}")
