"""What a cache does with an entry it cannot read: rebuild it, moving the bad file aside, or stop with an error that
names the file and the command that clears it — never a raw parser error from deep inside a library.

    move_aside(path)                 ->  <path>.corrupt-<time>: kept for a post-mortem, never read again
    read_jsonl(path, required)       ->  the good rows; a damaged line is dropped and the file rewritten without it
    safetensors_problem(path)        ->  None, or what is wrong (a truncated or overwritten file)
    json_problem(path)               ->  None, or what is wrong
    read_npz(path, keys)             ->  the arrays of an .npz cache, or None (missing, or damaged: moved aside)

Every cache writes atomically (`results.atomic_path`), so none of this is needed after an interrupted run; it is
for what atomic writes cannot prevent: a full disk, a foreign tool, a copy cut short.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

from .results import atomic_path


class CorruptCacheError(RuntimeError):
    """A cached file cannot be read and cannot be rebuilt here; the message names the file and the fix."""


def aside_name(path: str | os.PathLike) -> Path:
    """`<path>.corrupt-<YYYYmmdd-HHMMSS>` (with a counter if taken)."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = path.with_name(f"{path.name}.corrupt-{stamp}"), 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.corrupt-{stamp}-{n}"), n + 1
    return target


def move_aside(path: str | os.PathLike) -> Path | None:
    """Rename a bad file or folder to `aside_name(path)`; None if it vanished meanwhile (another process moved it)."""
    target = aside_name(path)
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    return target


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """None if `path` opens as a whole safetensors file (header parses, tensors cover the file), else why not."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as err:
        return f"not a readable safetensors file ({err})"
    return None


def json_problem(path: str | os.PathLike) -> str | None:
    """None if `path` holds one JSON document, else why not."""
    try:
        json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        return f"not readable JSON ({err})"
    return None


def read_jsonl(path: str | os.PathLike, required: Sequence[str] = ()) -> list[dict]:
    """The rows of a JSON-lines cache file (none if it does not exist).

    A line that is not a JSON object with the `required` keys is dropped: the damaged file is copied aside and
    rewritten, atomically, with the good rows only, saying so. The file exists throughout, so another process
    reading it meanwhile sees the old or the new version, never none.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    rows, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and all(key in row for key in required):
            rows.append(row)
        else:
            bad += 1
    if bad:
        aside = aside_name(path)
        shutil.copy2(path, aside)
        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
        print(f"{path}: dropped {bad} unreadable line(s), kept {len(rows)}; the damaged file is now {aside.name}")
    return rows


def read_npz(path: str | os.PathLike, keys: Sequence[str]) -> dict | None:
    """The arrays `keys` of an .npz cache file, loaded; None if it does not exist or cannot be read (truncated, not
    a zip, a key missing), in which case it is moved aside, saying so, and the caller builds it again."""
    import zipfile

    import numpy as np

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {key: stored[key] for key in keys}
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError) as err:
        aside = move_aside(path)
        print(f"{path}: unreadable cache ({type(err).__name__}: {err}); moved to {aside.name if aside else '?'}, "
              "building it again")
        return None
