"""Test setup: offline hub flags and small shared fixtures (`common` is installed: `make venv`)."""
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def lfw_small():
    """The LFW stand-in with a few augmented samples (n = 200), shared across tests."""
    from common.theory.data import load_faces

    return load_faces(200, 20, source="lfw")


@pytest.fixture(scope="session")
def standin_faces():
    """The LFW stand-in at n = 2,000: enough rows for the official Gen loaders' batches of 256."""
    from common.theory.data import load_faces

    return load_faces(2000, 20, source="lfw")


@pytest.fixture(scope="session")
def tiny_pipe():
    """The random-weight tiny Stable Diffusion pipeline (CPU, fp32), shared across tests; tests must not modify it."""
    from common.models.pipelines import load_pipeline

    return load_pipeline("tiny", device="cpu")


SHARED_PROMPTS = ROOT.parent / "shared" / "data" / "prompts"


@pytest.fixture(scope="session")
def shared_prompts():
    """The project's reference prompt files (../shared/data/prompts beside the repo); skips without them."""
    if not SHARED_PROMPTS.is_dir():
        pytest.skip(f"reference prompt files not found at {SHARED_PROMPTS} (the shared/ folder beside the repo)")
    return SHARED_PROMPTS


class CountingPipe:
    """The pipeline, counting its sampling calls; a detector that only reads images never calls it."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []

    def __call__(self, prompt, **kwargs):
        self.calls.append(list(prompt))
        return self.pipe(prompt, **kwargs)
