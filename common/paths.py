"""Where things live. Every default path in the repo is defined here, once.

`REPO_CACHE` can be moved with the environment variable ``DGR_CACHE`` (e.g. to a larger disk).
"""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FIGS_DIR = REPO_ROOT / "Figs"
RESULTS_DIR = REPO_ROOT / "results"
REPO_CACHE = Path(os.environ.get("DGR_CACHE", REPO_ROOT / ".cache"))
DATA_CACHE = REPO_CACHE / "data"            # compressed image arrays (read the CelebA stream once)
CHECKPOINT_CACHE = REPO_CACHE / "checkpoints"  # trained weights, keyed by their config
PROMPT_CACHE = REPO_CACHE / "prompts"          # the prompt lists of the detection experiment
GENERATION_CACHE = REPO_CACHE / "generations"  # generated images + manifests, one folder per model/set/config
