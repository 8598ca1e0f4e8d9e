"""Detector scores of a generation folder, cached beside its images and resumable like them.

    scores = score_folder(pipe, folder, "std")            # float64 [N] in manifest order, computed once
    scores = score_folder(pipe, folder, "wen", indices=[3, 4, 9])   # only these manifest rows, float64 [3]
    scores = read_scores(folder, "std")                   # {index: score} of what is cached (no model needed)
    seconds = score_seconds(folder, "std")                # {index: detector seconds per image when it was scored}

Files, under `<folder>/scores/`: `<detector>-<key>.json` records the detector, its options and the model (another
setting is another key, never a reused score); `<detector>-<key>.jsonl` holds the rows of a single process and
`<detector>-<key>.rank<k>.jsonl` those of process k of a sharded run (`plumbing/shard.py`), merged on read. A row is
(index, score, seconds, image_written, written): `seconds` is the detector's wall time per image of the call that
scored it (where and when it ran: another machine, for a folder scored by `python -m common.cli.score`); a score
whose image was made again since (another `written` stamp in the manifest) is stale and computed again.

The key sees the options that change a score, canonically: the generation's sampling settings are filled in where
the detector takes them, and an option equal to its default is left out, so a notebook passing `tau=0.1` finds the
scores a command line run with no options wrote. Execution options such as `batch_size` stay in the key (a batch
can change the last bits of a score); pass none to share scores between the notebooks and the command line.

The unit of work is a chunk of `chunk` consecutive manifest rows, scored in one call of the detector: a process
takes whole chunks, so a score does not depend on how many processes share the folder. A detector that draws
randomness by position (std: image i draws seed `extraction_seed + i`) is passed the chunk's first index as the
offset, so image i draws what it draws when the whole folder is scored in one call. Re-sampling detectors (Wen,
Carlini, NeMo's SSIM) get the generation's own steps and guidance unless told otherwise.
"""
from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import numpy as np

from ..plumbing.faults import json_problem, move_aside, read_jsonl
from ..plumbing.results import atomic_path, config_key, to_jsonable, write_json_atomic
from ..plumbing.shard import Shard, merge_newest, shard_files

SCORES_DIR = "scores"
SCORE_KEYS = ("index", "score")
POSITION_SEED_OPTION = "extraction_seed"       # an option that seeds image i of a call with its value + i
GENERATION_OPTIONS = ("num_inference_steps", "guidance_scale", "height", "width")   # taken from generation.json
DEFAULT_CHUNK = 16


def _detector(detector):
    from .. import detectors

    return detectors.get(detector) if isinstance(detector, str) else detector


def _option_value(value):
    """What an option contributes to the cache key: itself if JSON, else its `cache_key` (NeMo statistics: a hash
    of their values), else its type's name."""
    try:
        json.dumps(to_jsonable(value))
        return to_jsonable(value)
    except TypeError:
        return getattr(value, "cache_key", type(value).__name__)


def _defaults(detector) -> dict:
    """The options a call of `detector` takes when given none: its score function's defaults, then the variant's."""
    parameters = inspect.signature(detector.score_fn).parameters.values()
    return {**{p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty},
            **detector.options}


def resolved_options(folder, detector, options: dict | None = None) -> dict:
    """`options` with the generation's sampling settings filled in where the detector takes them."""
    from ..models.generate import CONFIG_NAME

    detector = _detector(detector)
    parameters = inspect.signature(detector.score_fn).parameters
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())   # wen: **sampling
    generation = json.loads((Path(folder) / CONFIG_NAME).read_text())
    defaults = {k: generation[k] for k in GENERATION_OPTIONS
                if (k in parameters or any_keyword) and generation.get(k) is not None}
    return {**defaults, **(options or {})}


def score_stem(folder, detector, options: dict | None = None, model: str | None = None) -> str:
    """`<detector>-<key>`: the key hashes the detector, its resolved options and the model."""
    from ..models.generate import CONFIG_NAME

    detector = _detector(detector)
    model = model if model is not None else json.loads((Path(folder) / CONFIG_NAME).read_text()).get("model", "")
    options = resolved_options(folder, detector, options)
    return f"{detector.name}-{config_key(_record(detector, options, model))}"


def _record(detector, options: dict, model: str) -> dict:
    """What the cache key hashes: the detector, the options that differ from its defaults, the model, and the
    detector's `cache_version` where it has one (a changed default: scores cached under the old one are not reused)."""
    defaults = {k: _option_value(v) for k, v in _defaults(detector).items()}
    options = {k: _option_value(v) for k, v in sorted(options.items())}
    record = {"detector": detector.name, "options": {k: v for k, v in options.items()
                                                     if k not in defaults or defaults[k] != v}, "model": model}
    return {**record, "version": detector.cache_version} if getattr(detector, "cache_version", "") else record


def read_score_rows(folder, detector, options: dict | None = None, model: str | None = None) -> dict[int, dict]:
    """The cached, still valid score rows of `folder`: {manifest index: row}, from every process's file."""
    from ..models.generate import read_manifest

    stem = score_stem(folder, detector, options, model)
    files = shard_files(Path(folder) / SCORES_DIR, f"{stem}.jsonl")
    rows = merge_newest([r for p in files for r in read_jsonl(p, SCORE_KEYS)])
    manifest = {r["index"]: r for r in read_manifest(folder, on_bad="skip")[0]}
    return {i: r for i, r in rows.items()
            if i in manifest and r.get("image_written") == manifest[i].get("written")}   # else its image was remade


def read_scores(folder, detector, options: dict | None = None, model: str | None = None) -> dict[int, float]:
    """The cached, still valid scores of `folder`: {manifest index: score}."""
    return {i: np.nan if r["score"] is None else float(r["score"])
            for i, r in read_score_rows(folder, detector, options, model).items()}


def score_seconds(folder, detector, options: dict | None = None, model: str | None = None) -> dict[int, float]:
    """{manifest index: the detector's wall time per image in the call that scored it} (NaN where not recorded)."""
    return {i: float(r.get("seconds", np.nan)) for i, r in read_score_rows(folder, detector, options, model).items()}


def _chunks(rows: list[dict], size: int) -> list[list[dict]]:
    """Consecutive manifest rows in chunks of at most `size`, each a run of consecutive indices."""
    chunks: list[list[dict]] = []
    for row in rows:
        last = chunks[-1] if chunks else None
        if last and len(last) < size and row["index"] == last[-1]["index"] + 1:
            last.append(row)
        else:
            chunks.append([row])
    return chunks


def _position_seed_base(detector, options: dict) -> int:
    """The seed of image 0 of a call: the option if given, else the detector variant's, else the function's."""
    given = {**detector.options, **options}
    if POSITION_SEED_OPTION in given:
        return int(given[POSITION_SEED_OPTION])
    return int(inspect.signature(detector.score_fn).parameters[POSITION_SEED_OPTION].default)


def _write_config(path: Path, record: dict) -> None:
    """The score file's record; an unreadable one (the key is in its name, so it can be) is rewritten."""
    if path.exists() and json_problem(path):
        aside = move_aside(path)
        print(f"{path} was unreadable ({aside.name if aside else 'gone'}); rewritten")
    if not path.exists():
        write_json_atomic(path, record)


def score_folder(pipe, folder, detector, options: dict | None = None, chunk: int = DEFAULT_CHUNK,
                 shard: Shard = Shard(), model: str | None = None, progress: bool = True,
                 indices=None) -> np.ndarray:
    """Score this process's share of the images of `folder` that have no valid cached score, writing each chunk
    as it is done; return every score cached so far, float64 [N] in manifest order (NaN where another process's
    share is not yet written). detector: a name of `detectors.DETECTORS` or a `Detector`. indices: only these
    manifest rows (scored and returned in this order); a chunk is then a run of consecutive indices among them."""
    from tqdm.auto import tqdm

    from . import Samples
    from ..models.generate import CONFIG_NAME, read_manifest
    from ..models.representations import load_images, pipeline_resolution

    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    folder = Path(folder)
    detector = _detector(detector)
    model = model if model is not None else json.loads((folder / CONFIG_NAME).read_text()).get("model", "")
    options = resolved_options(folder, detector, options)
    stem = score_stem(folder, detector, options, model)
    _write_config(folder / SCORES_DIR / f"{stem}.json", _record(detector, options, model))
    rows = read_manifest(folder)[0]                                   # an unreadable image is an error naming it
    if indices is not None:
        by_index = {r["index"]: r for r in rows}
        missing = [i for i in indices if i not in by_index]
        if missing:
            raise ValueError(f"{folder} has no generated image at manifest index {missing[:5]}")
        rows = [by_index[i] for i in sorted(set(indices))]
    if not rows:
        raise ValueError(f"{folder} holds no generated images to score")
    done = read_scores(folder, detector, options, model)
    own_path = shard.file(folder / SCORES_DIR, f"{stem}.jsonl")
    own = merge_newest(read_jsonl(own_path, SCORE_KEYS))
    mine = [c for c in shard.split(_chunks(rows, chunk)) if any(r["index"] not in done for r in c)]
    takes_offset = POSITION_SEED_OPTION in inspect.signature(detector.score_fn).parameters
    for part in tqdm(mine, desc=f"{detector.name} on {folder.name}", disable=not progress):
        images = load_images([r["path"] for r in part], pipeline_resolution(pipe))          # [n, 3, H, W]
        samples = Samples(images, [r["prompt"] for r in part], [r["seed"] for r in part])
        call = dict(options)
        if takes_offset:                     # image i of the folder draws seed base + i, whichever chunk it is in
            call[POSITION_SEED_OPTION] = _position_seed_base(detector, options) + part[0]["index"]
        t0 = time.perf_counter()
        values = detector.score(pipe, samples, **call)         # float64 [n], on the host: the device is done
        seconds = (time.perf_counter() - t0) / len(part)
        for row, value in zip(part, values):
            own[row["index"]] = {"index": row["index"], "score": float(value), "seconds": seconds,
                                 "image_written": row.get("written"), "written": time.time()}
            done[row["index"]] = float(value)
        with atomic_path(own_path) as tmp:
            tmp.write_text("".join(json.dumps(to_jsonable(own[i])) + "\n" for i in sorted(own)))
    order = [r["index"] for r in rows] if indices is None else list(indices)
    return np.array([done.get(i, np.nan) for i in order], dtype=np.float64)


def score_files(folder, detector, options: dict | None = None, model: str | None = None) -> list[Path]:
    """The score files of this detector and setting in `folder`, one per process that wrote."""
    stem = score_stem(folder, detector, options, model)
    return shard_files(Path(folder) / SCORES_DIR, f"{stem}.jsonl")


__all__ = ["DEFAULT_CHUNK", "SCORES_DIR", "read_score_rows", "read_scores", "resolved_options", "score_files",
           "score_folder", "score_seconds", "score_stem"]
