"""Prompt sets of the detection experiment: memorized LAION captions and generalized prompts.

    memorized    Wen et al. (ICLR 2024), `examples/sdv1_500_memorized.jsonl`: 500 LAION captions that SD v1.4
                 reproduces (fields caption, index = LAION index, url). The official notebook's list.
    generalized  HF `Gustavosta/Stable-Diffusion-Prompts`, split train, column `Prompt` (73,718 Lexica prompts).
    "sharpness"  the lists of Jeon et al. (ICML 2025), `prompts/sd1_mem.txt` (Wen et al.'s 500 captions, one per line)
                 and `prompts/sd1_nmem.txt` (500 COCO captions), which Asthana & Belagiannis (ICLR 2026) also use:
                 `source="sharpness"` for either set (`NAMED_LISTS`)
    labels       Hintersdorf et al. (NeMo, NeurIPS 2024), `prompts/memorized_laion_prompts.csv`: the same 500
                 captions with their memorization type, VM (verbatim: the training image is reproduced) or TM
                 (template: only the layout is), joined here by LAION index (or caption).

Both sets are read from their public sources once and cached under `.cache/prompts/`; each loader also
accepts a local file (`source=...`): .jsonl (a `caption`/`prompt`/`Prompt`/`text` field), .csv (`;` or
`,`, a `Caption`/`Prompt` column; NeMo's files work as they are) or .txt (one prompt per line). Every set
is "the first n rows", as in the official notebook. Offline without a cache, loading fails within seconds
and says which local file to pass. A cached list that cannot be read (a cut-short download) is moved aside
(`<name>.corrupt-<time>`) and downloaded again; offline, the error names it and the fix.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..plumbing.faults import move_aside
from ..plumbing.network import DownloadUnavailableError, download_cached, hub_reachable
from ..plumbing.paths import PROMPT_CACHE
from ..plumbing.results import write_json_atomic

MEMORIZED_URL = ("https://raw.githubusercontent.com/YuxinWenRick/diffusion_memorization/HEAD/"
                 "examples/sdv1_500_memorized.jsonl")
NEMO_LABELS_URL = ("https://raw.githubusercontent.com/ml-research/localizing_memorization_in_diffusion_models/"
                   "HEAD/prompts/memorized_laion_prompts.csv")
_SHARPNESS_REPO = "https://raw.githubusercontent.com/Dongjae0324/sharpness_memorization_diffusion/HEAD/prompts/"
NAMED_LISTS = {"sharpness": {"memorized": _SHARPNESS_REPO + "sd1_mem.txt",           # a named source: set -> URL
                             "generalized": _SHARPNESS_REPO + "sd1_nmem.txt"}}
GENERALIZED_HF_ID = "Gustavosta/Stable-Diffusion-Prompts"
GENERALIZED_COLUMN = "Prompt"
MEMORIZATION_TYPES = ("VM", "TM")

PROMPT_FIELDS = ("caption", "prompt", "text")   # matched case-insensitively, in this order
INDEX_FIELDS = ("index",)
URL_FIELDS = ("url",)
TYPE_FIELDS = ("type",)


class PromptsUnavailableError(RuntimeError):
    """A prompt set is neither cached nor downloadable here, or a local prompt file cannot be used."""


@dataclass(frozen=True)
class PromptRecord:
    prompt: str
    index: int | None = None     # LAION index (memorized set)
    url: str | None = None       # the LAION image URL (memorized set)
    type: str | None = None      # "VM" | "TM" once labelled, else None


# ----------------------------------------------------------------------------------------------------
# Local files
# ----------------------------------------------------------------------------------------------------
def _field(row: dict, names: tuple[str, ...]):
    lowered = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
    for name in names:
        value = lowered.get(name)
        if value not in (None, ""):
            return value
    return None


def _record(row: dict, path: Path, line: int) -> PromptRecord:
    prompt = _field(row, PROMPT_FIELDS)
    if prompt is None:
        raise PromptsUnavailableError(f"{path}, row {line}: no prompt field (expected one of {PROMPT_FIELDS}, "
                                      f"case-insensitive); found {sorted(row)}")
    index = _field(row, INDEX_FIELDS)
    return PromptRecord(prompt=str(prompt), index=int(index) if index is not None else None,
                        url=_field(row, URL_FIELDS), type=_field(row, TYPE_FIELDS))


def read_prompt_file(path: str | os.PathLike) -> list[PromptRecord]:
    """All prompts of a local .jsonl, .csv (`;` or `,` separated) or .txt file, in file order."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PromptsUnavailableError(f"prompt file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise PromptsUnavailableError(f"{path}: not UTF-8 text ({err})") from err
    if path.suffix == ".jsonl":
        rows = [_json_line(line, path, i) for i, line in enumerate(text.splitlines()) if line.strip()]
    elif path.suffix == ".csv":
        header = text.splitlines()[0] if text else ""
        rows = list(csv.DictReader(text.splitlines(), delimiter=";" if header.count(";") > header.count(",") else ","))
    elif path.suffix == ".txt":
        rows = [{"prompt": line} for line in text.splitlines() if line.strip()]
    else:
        raise PromptsUnavailableError(f"{path}: unknown prompt file type (use .jsonl, .csv or .txt)")
    return [_record(row, path, i) for i, row in enumerate(rows)]


def _json_line(line: str, path: Path, number: int) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise PromptsUnavailableError(f"{path}, line {number + 1}: not JSON ({err})") from err
    if not isinstance(row, dict):
        raise PromptsUnavailableError(f"{path}, line {number + 1}: not a JSON object")
    return row


def _first(records: list[PromptRecord], n: int | None, what: str) -> list[PromptRecord]:
    if n is not None and n > len(records):
        raise PromptsUnavailableError(f"the {what} set holds {len(records)} prompts, {n} were requested")
    records = records if n is None else records[:n]
    if not records:
        raise PromptsUnavailableError(f"the {what} prompt list is empty")
    return records


# ----------------------------------------------------------------------------------------------------
# The public sources, cached
# ----------------------------------------------------------------------------------------------------
def _download(url: str, path: Path, what: str, timeout: float) -> Path:
    try:
        return download_cached(url, path, timeout)
    except DownloadUnavailableError as err:
        raise PromptsUnavailableError(f"the {what} prompt list: {err}. Pass a local copy with source='path/to/"
                                      f"{Path(url).name}'.") from err


def _read_cached_download(url: str, path: Path, what: str, timeout: float) -> list[PromptRecord]:
    """The records of a downloaded list, downloading it once; a cached copy that does not read is moved aside and
    downloaded again, saying so (offline: the error then names the file and the fix)."""
    try:
        return read_prompt_file(_download(url, path, what, timeout))
    except PromptsUnavailableError as err:
        if not path.exists():                # not a damaged cache: offline without a copy
            raise
        aside = move_aside(path)
        print(f"the cached {what} prompt list {path} is unreadable ({err}); moved to {aside.name if aside else '?'}, "
              "downloading it again")
        return read_prompt_file(_download(url, path, what, timeout))


def _named_list(name: str, what: str, cache_dir, timeout: float) -> list[PromptRecord]:
    """A set of a named source (`NAMED_LISTS`), downloaded once into `<cache_dir>/<name>-<file>`."""
    url = NAMED_LISTS[name][what]
    return _read_cached_download(url, Path(cache_dir) / f"{name}-{Path(url).name}", f"{name} {what}", timeout)


def load_memorized_prompts(n: int | None = None, source: str | os.PathLike | None = None,
                           cache_dir: str | os.PathLike = PROMPT_CACHE, timeout: float = 5.0) -> list[PromptRecord]:
    """The first `n` memorized LAION captions (Wen et al.'s list, a named source's, or the file `source`)."""
    if source in NAMED_LISTS:
        records = _named_list(source, "memorized", cache_dir, timeout)
    else:
        records = (read_prompt_file(source) if source else
                   _read_cached_download(MEMORIZED_URL, Path(cache_dir) / Path(MEMORIZED_URL).name, "memorized",
                                         timeout))
    return _first(records, n, "memorized")


def load_memorization_labels(source: str | os.PathLike | None = None, cache_dir: str | os.PathLike = PROMPT_CACHE,
                             timeout: float = 5.0) -> list[PromptRecord]:
    """NeMo's 500 memorized LAION captions with their type (VM/TM) and LAION index (or `source`)."""
    if source:
        return read_prompt_file(source)
    return _read_cached_download(NEMO_LABELS_URL, Path(cache_dir) / Path(NEMO_LABELS_URL).name, "NeMo VM/TM label",
                                 timeout)


def load_generalized_prompts(n: int, source: str | os.PathLike | None = None,
                             cache_dir: str | os.PathLike = PROMPT_CACHE, timeout: float = 3.0) -> list[PromptRecord]:
    """The first `n` prompts of `Gustavosta/Stable-Diffusion-Prompts` (train split, column `Prompt`), of a named
    source's list, or of the file `source`.

    The hub dataset is read once and its prompt column cached as `<cache_dir>/gustavosta-prompts.json`.
    """
    if source in NAMED_LISTS:
        return _first(_named_list(source, "generalized", cache_dir, timeout), n, "generalized")
    if source:
        return _first(read_prompt_file(source), n, "generalized")
    cache = Path(cache_dir) / "gustavosta-prompts.json"
    prompts = _cached_prompt_column(cache) if cache.exists() else None
    if prompts is None:
        if cache.exists():
            aside = move_aside(cache)
            print(f"the cached generalized prompt list {cache} is unreadable; moved to {aside.name if aside else '?'}")
        if not hub_reachable(timeout):
            raise PromptsUnavailableError(
                f"{GENERALIZED_HF_ID} is not cached at {cache} and the Hugging Face hub is not reachable (offline, "
                "or HF_HUB_OFFLINE/HF_DATASETS_OFFLINE set). Pass a local prompt file with source='prompts.csv' "
                "(.jsonl, .csv or .txt)."
            )
        prompts = _fetch_generalized(cache)
    return _first([PromptRecord(prompt=p) for p in prompts], n, "generalized")


def _cached_prompt_column(cache: Path) -> list[str] | None:
    """The prompts of the cached column, or None if the file does not read as one."""
    try:
        prompts = json.loads(cache.read_text())["prompts"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return None
    return prompts if isinstance(prompts, list) and all(isinstance(p, str) for p in prompts) else None


def _fetch_generalized(cache: Path) -> list[str]:
    """Read the hub dataset's prompt column and cache it."""
    from datasets import load_dataset

    prompts = list(load_dataset(GENERALIZED_HF_ID, split="train")[GENERALIZED_COLUMN])
    write_json_atomic(cache, {"source": GENERALIZED_HF_ID, "split": "train", "column": GENERALIZED_COLUMN,
                              "prompts": prompts})
    return prompts


# ----------------------------------------------------------------------------------------------------
# VM / TM labels
# ----------------------------------------------------------------------------------------------------
def label_memorization_types(records: list[PromptRecord], labels: list[PromptRecord]) -> list[PromptRecord]:
    """`records` with `type` set from `labels` (NeMo's CSV), matched by LAION index, else by exact caption.

    A record that matches no label raises, naming it: a partly labelled set would bias the VM/TM split.
    """
    by_index = {r.index: r.type for r in labels if r.index is not None}
    by_caption = {r.prompt: r.type for r in labels}
    labelled = []
    for i, record in enumerate(records):
        kind = by_index.get(record.index) if record.index is not None else None
        kind = kind or by_caption.get(record.prompt)
        if kind not in MEMORIZATION_TYPES:
            raise PromptsUnavailableError(f"memorized prompt {i} ({record.prompt!r}, LAION index {record.index}) "
                                          f"has no VM/TM label in the label list")
        labelled.append(replace(record, type=kind))
    return labelled

