"""Batched, seeded, resumable image generation with a manifest.

    rows = generate_images(pipe, prompts, folder, GenerationConfig(seed=0), batch_size=8)

writes `folder/000000.png, 000001.png, ...`, `folder/manifest.jsonl` (one row per image: index, prompt,
seed, file, seconds, written = a time stamp) and `folder/generation.json` (the config; another config in the same
folder is an error). Each PNG and each manifest update is written atomically, right after its image, so an
interrupted run loses at most the batch in flight, and a rerun generates only what is missing: no image twice,
no duplicate manifest row. A row is done when its image is readable and was made for the prompt now at its
index; otherwise (a changed prompt list, a deleted file) it is generated again.

**Several processes** (`plumbing/shard.py`, `python -m common.cli.generate` under `accelerate launch`): each generates its
share (`indices`) and writes its own manifest, `manifest.rank<k>.jsonl`, beside the images; every reader here
merges all the manifest files of the folder, the newest row of an index winning. So a notebook run after a
sharded run finds its images. **Faults**: a manifest line that does not parse is dropped (the damaged file is
kept as `manifest.jsonl.corrupt-<time>`) and its image made again; an unreadable image is moved aside the same way
and made again; an unreadable `generation.json` is rewritten when the folder's name carries this config's key,
else the error names the file and the command that clears it (`plumbing/faults.py`).

**Seeding.** Prompt i is generated from its own generator, `torch.Generator("cpu").manual_seed(seed + i)`
(passed to the pipeline as a list, one per prompt), so an image depends on its prompt and seed only — not on
the batch size, its batch neighbours, or the order of resumption; CPU generators make the initial noise
the same on every device. The official `generate_and_store` instead seeds one generator per set and
consumes it sequentially at batch size 1, so our images differ from the official
ones, but not in distribution. Settings (the official notebook's): DDIM, 50 steps, CFG 7.5, one image per prompt;
the official seeds are 0 for the memorized set and 10 for the generalized set.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, UnidentifiedImageError

from ..plumbing.faults import move_aside, read_jsonl
from ..plumbing.paths import GENERATION_CACHE
from ..plumbing.results import atomic_path, config_key, to_jsonable, write_json_atomic
from ..plumbing.shard import merge_newest, shard_files

NUM_INFERENCE_STEPS = 50
GUIDANCE_SCALE = 7.5
MEM_SEED, GEN_SEED = 0, 10
MANIFEST_NAME = "manifest.jsonl"         # a single process's; process k of a sharded run writes manifest.rank<k>.jsonl
ROW_KEYS = ("index", "prompt", "seed", "file")
CONFIG_NAME = "generation.json"
ON_BAD_IMAGE = ("error", "skip")


class ManifestError(RuntimeError):
    """A generation folder is inconsistent: a missing or unreadable image, or another generation config."""


@dataclass(frozen=True)
class GenerationConfig:
    model: str = ""                          # recorded, so a folder is never reused for another model
    num_inference_steps: int = NUM_INFERENCE_STEPS
    guidance_scale: float = GUIDANCE_SCALE
    height: int | None = None                # None: the pipeline's default (512 for SD v1.4)
    width: int | None = None
    seed: int = 0                            # prompt i uses torch.Generator().manual_seed(seed + i)

    def to_dict(self) -> dict:
        return asdict(self)


def generation_folder(set_name: str, config: GenerationConfig, root: str | os.PathLike = GENERATION_CACHE) -> Path:
    """`<root>/<model>-<set>-<config key>`: one folder per model, prompt set and generation config. The prompt
    count is not part of the key: a larger run extends a smaller one (the manifest checks every prompt)."""
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(config.model).name or config.model or "model")
    return Path(root) / f"{model}-{set_name}-{config_key(config.to_dict())}"


def image_name(index: int) -> str:
    return f"{index:06d}.png"


# Methods that sample a prompt several times (Wen et al.'s 4 generations, Carlini et al.'s N, NeMo's 10 seeds) seed
# generation k of the prompt whose image has seed s with s + k * REPEAT_SEED_STRIDE: k = 0 is the image itself,
# and the strides keep the repeats of different prompts (seeds 0..~10^5) apart.
REPEAT_SEED_STRIDE = 1_000_000


def repeat_seeds(seed: int, n: int) -> list[int]:
    """The seeds of `n` generations of one prompt, the first being `seed` (its scored image)."""
    return [int(seed) + k * REPEAT_SEED_STRIDE for k in range(n)]


def seeded_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One seeded CPU generator per item (prompt or image): what makes a result independent of its batch neighbours."""
    return [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]


# ----------------------------------------------------------------------------------------------------
# The manifest
# ----------------------------------------------------------------------------------------------------
def _read_rows(folder: Path) -> list[dict]:
    """Every manifest file of `folder` (a single run's and each process's of a sharded run) merged: one row per
    index, the newest written, in index order."""
    newest = merge_newest([row for path in shard_files(folder, MANIFEST_NAME) for row in read_jsonl(path, ROW_KEYS)])
    return [newest[i] for i in sorted(newest)]


def _write_rows(path: Path, rows: dict[int, dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(to_jsonable(rows[i])) + "\n" for i in sorted(rows)))


def _image_problem(path: Path) -> str | None:
    """None if `path` is a readable image, else what is wrong with it."""
    if not path.exists():
        return "is missing"
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        return f"is unreadable ({err})"
    return None


def read_manifest(folder: str | os.PathLike, on_bad: str = "error") -> tuple[list[dict], int]:
    """The manifest rows of `folder`, each with `path` (the image's full path) added, and the number skipped.

    A row whose image is missing or unreadable raises `ManifestError` naming it (on_bad="error"), or is left
    out and counted (on_bad="skip").
    """
    if on_bad not in ON_BAD_IMAGE:
        raise ValueError(f"on_bad must be one of {ON_BAD_IMAGE}")
    folder = Path(folder)
    rows, skipped = [], 0
    for row in _read_rows(folder):
        path = folder / row["file"]
        problem = _image_problem(path)
        if problem is None:
            rows.append({**row, "path": str(path)})
        elif on_bad == "skip":
            skipped += 1
        else:
            raise ManifestError(f"manifest row {row['index']} ({row['prompt']!r}): image {path} {problem}. "
                                "Rerun the generation (the notebook, or `python -m common.cli.generate` with the "
                                "same settings) to make it again, or pass on_bad='skip'.")
    if skipped:
        print(f"{folder}: skipped {skipped} manifest row(s) with a missing or unreadable image")
    return rows, skipped


# ----------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------
def _check_config(folder: Path, config: GenerationConfig) -> None:
    path = folder / CONFIG_NAME
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _replace_unreadable_config(folder, config)
        if stored != to_jsonable(config.to_dict()):
            raise ManifestError(f"{folder} holds images made with another config ({stored}); "
                                f"use another folder for {config.to_dict()}")
    else:
        write_json_atomic(path, config.to_dict())


def _replace_unreadable_config(folder: Path, config: GenerationConfig) -> None:
    """An unreadable generation.json: rebuilt when the folder's name ends with this config's key (what
    `generation_folder` names it: the images are this config's), else an error naming the file and the fix."""
    path = folder / CONFIG_NAME
    if not folder.name.endswith(config_key(config.to_dict())):
        raise ManifestError(f"{path} is unreadable, so the config of the images in {folder} cannot be checked. If they "
                            f"were made with {config.to_dict()}, delete the file (rm '{path}') and rerun; otherwise "
                            f"delete the folder (rm -rf '{folder}').")
    aside = move_aside(path)
    write_json_atomic(path, config.to_dict())
    print(f"{path} was unreadable ({aside.name if aside else 'gone'}); rewritten from the folder's config key")


def _finished_rows(folder: Path, prompts: Sequence[str], wanted: set[int] | None = None) -> dict[int, dict]:
    """The manifest rows that are done for these prompts: the same prompt at the same index, image readable.
    A row made for another prompt at its index (the prompt list changed) or with a missing or unreadable
    image is left out, so it is generated again and overwritten (an unreadable image is moved aside first).
    Rows beyond len(prompts) are kept (a larger earlier run). wanted: look at these indices only (a process's
    share: the others belong to other processes)."""
    done, redo = {}, 0
    for row in _read_rows(folder):
        i = row["index"]
        if wanted is not None and i not in wanted:
            continue
        path = folder / row["file"]
        problem = _image_problem(path) if i >= len(prompts) or row["prompt"] == prompts[i] else "another prompt"
        if problem is None:
            done[i] = row
        else:
            if path.exists() and problem.startswith("is unreadable"):
                move_aside(path)
            redo += 1
    if redo:
        print(f"{folder}: {redo} image(s) in the manifest were made for another prompt or are missing or "
              "unreadable; generating them again")
    return done


@torch.no_grad()
def generate_images(pipe, prompts: Sequence[str], folder: str | os.PathLike, config: GenerationConfig,
                    batch_size: int = 4, progress: bool = True, indices: Sequence[int] | None = None,
                    manifest: str = MANIFEST_NAME) -> list[dict]:
    """Generate one image per prompt into `folder` (resumable, see the module docstring).

    indices: only these prompt indices (a process's share of a sharded run); the manifest file it writes (`manifest`,
    the process's own: `shard.Shard.file_name`) then keeps its earlier rows and adds the new ones. Without indices
    it is rewritten with every finished row of the folder.
    Returns the manifest rows of `prompts` (of `indices`), in prompt order, each with `path` added.
    """
    from tqdm.auto import tqdm

    prompts = [str(p) for p in prompts]
    if not prompts:
        raise ValueError("the prompt list is empty")
    wanted = list(range(len(prompts))) if indices is None else sorted({int(i) for i in indices})
    if wanted and not 0 <= wanted[0] <= wanted[-1] < len(prompts):
        raise ValueError(f"indices must lie in [0, {len(prompts)}), got {wanted[0]}..{wanted[-1]}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _check_config(folder, config)
    rows = _finished_rows(folder, prompts, None if indices is None else set(wanted))
    own = rows if indices is None else merge_newest(read_jsonl(folder / manifest, ROW_KEYS))   # rows this call writes
    todo = [i for i in wanted if i not in rows]
    with tqdm(total=len(wanted), initial=len(wanted) - len(todo), desc=f"generating {folder.name}",
              disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            seeds = [config.seed + i for i in batch]
            t0 = time.perf_counter()
            images = pipe([prompts[i] for i in batch], num_inference_steps=config.num_inference_steps,
                          guidance_scale=config.guidance_scale, height=config.height, width=config.width,
                          generator=seeded_generators(seeds)).images
            seconds = (time.perf_counter() - t0) / len(batch)
            for i, seed, image in zip(batch, seeds, images):
                with atomic_path(folder / image_name(i)) as tmp:
                    image.save(tmp, format="PNG")
                rows[i] = own[i] = {"index": i, "prompt": prompts[i], "seed": seed, "file": image_name(i),
                                    "seconds": seconds, "written": time.time()}
                _write_rows(folder / manifest, own)
                bar.update()
    return [{**rows[i], "path": str(folder / rows[i]["file"])} for i in wanted]
