"""Where things live. Every default path in the repo is defined here, once.

`REPO_CACHE` can be moved with the environment variable ``DGR_CACHE`` (e.g. to a larger disk).
"""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]    # common/plumbing/paths.py -> the repo
FIGS_DIR = REPO_ROOT / "Figs"
RESULTS_DIR = REPO_ROOT / "results"
REPO_CACHE = Path(os.environ.get("DGR_CACHE", REPO_ROOT / ".cache"))
DATA_CACHE = REPO_CACHE / "data"            # compressed image arrays (read the CelebA stream once)
CHECKPOINT_CACHE = REPO_CACHE / "checkpoints"  # trained weights, keyed by their config
PROMPT_CACHE = REPO_CACHE / "prompts"          # the prompt lists of the detection experiment
GENERATION_CACHE = REPO_CACHE / "generations"  # generated images + manifests, one folder per model/set/config


def portable_name(model: str | os.PathLike) -> str:
    """How a results JSON names a model or file, the same on every machine: a name that is not a path (a hub id,
    "tiny", a label) as it is; a path by where it is relative to the repo when inside it, as `<cache>/…` when inside
    the cache (a testbed folder's name is its label and config key), else by its last component. Never absolute."""
    text = str(model)
    path = Path(text).expanduser()
    if not (path.is_absolute() or text.startswith((".", "~")) or path.exists()):
        return text
    path = path.resolve()
    for root, prefix in ((REPO_CACHE.resolve(), "<cache>/"), (REPO_ROOT, "")):
        if path.is_relative_to(root):
            return prefix + path.relative_to(root).as_posix()
    return path.name
