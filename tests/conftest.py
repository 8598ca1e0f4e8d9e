"""Test setup: offline hub flags, the repo root on sys.path, and small shared fixtures."""
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def lfw_small():
    """The LFW stand-in with a few augmented samples (n = 200), shared across tests."""
    from common.data import load_faces

    return load_faces(200, 20, source="lfw")
