"""Seeding, atomic file writes, config cache keys and the results-JSON writer.

Everything long-running in this repo is cached under a key derived from its config, and every file is
written atomically (to a temporary file in the same folder, then renamed), so an interrupted run never
leaves a half-written cache, checkpoint or result behind.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .paths import RESULTS_DIR


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the result ordinary permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """`np.savez_compressed`, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object stops numpy from appending a second ".npz"
            np.savez_compressed(f, **arrays)


def config_key(config: dict, length: int = 12) -> str:
    """A short, stable hash of a JSON-serialisable config (key order does not matter)."""
    blob = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def array_fingerprint(array: np.ndarray | torch.Tensor, length: int = 12) -> str:
    """A short hash of an array's dtype, shape and bytes: part of a cache key for data-dependent results."""
    a = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:length]


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths and tuples to plain JSON types (NaN/inf -> None)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json_atomic(path: str | os.PathLike, payload: dict) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(payload), indent=2, sort_keys=False) + "\n")
    return path


# An absolute path inside a string: at its start, or after a space, quote, bracket, '=' or ':' (not a URL's "//").
_MACHINE_PATH = re.compile(r"""(?:^|[\s'"(\[=])(?:/[\w.-]|~/|[A-Za-z]:\\)""")


def machine_paths(payload: Any, prefix: str = "") -> list[str]:
    """The dotted keys (list items as their index) whose string values hold an absolute file path (a path of the
    machine that wrote them): a results JSON names models and files by `paths.portable_name` instead."""
    if isinstance(payload, dict):
        return [k for key, value in payload.items() for k in machine_paths(value, f"{prefix}{key}.")]
    if isinstance(payload, (list, tuple)):
        return [k for i, value in enumerate(payload) for k in machine_paths(value, f"{prefix}{i}.")]
    return [prefix.rstrip(".")] if isinstance(payload, str) and _MACHINE_PATH.search(payload) else []


def _portable(payload: Any) -> Any:
    """Every string that is an absolute path, named by `paths.portable_name` instead."""
    from .paths import portable_name

    if isinstance(payload, dict):
        return {key: _portable(value) for key, value in payload.items()}
    if isinstance(payload, list):
        return [_portable(value) for value in payload]
    if isinstance(payload, str) and (os.path.isabs(payload) or payload.startswith("~/")):
        return portable_name(payload)
    return payload


def write_results(name: str, payload: dict, results_dir: str | os.PathLike = RESULTS_DIR) -> Path:
    """Write `results/<name>.json`. Nested dicts are the dotted keys of the issues: `mem.live_units`
    is `payload["mem"]["live_units"]`. Results are committed and read on other machines, so a value that is a path
    is written as `paths.portable_name` gives it, and a text with an absolute path inside it is refused."""
    payload = _portable(to_jsonable(payload))
    found = machine_paths(payload)
    if found:
        raise ValueError(f"results {name!r} hold absolute paths at {found}: name them with paths.portable_name")
    return write_json_atomic(Path(results_dir) / f"{name}.json", payload)


def get_dotted(payload: dict, dotted_key: str) -> Any:
    """`get_dotted(r, "mem.live_units") == r["mem"]["live_units"]`; KeyError names the missing key."""
    node = payload
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"results have no key {dotted_key!r} (missing {part!r})")
        node = node[part]
    return node
