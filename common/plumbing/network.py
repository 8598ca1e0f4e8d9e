"""Fast, offline-safe reachability probes and a cached download.

The hub clients (`huggingface_hub`, `datasets`, `diffusers`) retry for a long time when the network is
absent. Every loader in this repo asks these probes first, so an offline machine gets an actionable
error within seconds instead of a retry loop.

    hub_reachable()     the Hugging Face endpoint ($HF_ENDPOINT), False at once under HF_HUB_OFFLINE /
                        HF_DATASETS_OFFLINE
    host_reachable(url) any https host (e.g. raw.githubusercontent.com for the prompt lists)
    download_cached()   a URL to a local file, once, written atomically
"""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from .results import atomic_path

HF_OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def hf_offline() -> bool:
    """True when the user asked the Hugging Face clients to stay offline."""
    return any(env_flag(flag) for flag in HF_OFFLINE_FLAGS)


def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """True if `url`'s host accepts a TCP connection (port 443 unless the URL names one) within `timeout` s.

    The probe (DNS included) runs in a daemon thread, so a hanging resolver cannot hold us past `timeout`.
    """
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (80 if parsed.scheme == "http" else 443)
    if not host:
        return False
    ok = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(ok)


def hub_reachable(timeout: float = 3.0) -> bool:
    """True if the Hugging Face endpoint answers within `timeout` seconds; False at once when offline flags are set."""
    if hf_offline():
        return False
    return host_reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout)


class DownloadUnavailableError(RuntimeError):
    """A file is neither cached nor downloadable here (offline, or its host does not answer)."""


def download_cached(url: str, path: str | os.PathLike, timeout: float = 5.0) -> Path:
    """`path` if it exists, else download `url` to it (atomically) and return it.

    Offline, fails within `timeout` seconds with `DownloadUnavailableError` naming the URL and the path.
    """
    import urllib.request

    path = Path(path)
    if path.exists():
        return path
    if not host_reachable(url, timeout):
        raise DownloadUnavailableError(f"{url} is not reachable and no cached copy exists at {path}")
    with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(path) as tmp:
        tmp.write_bytes(response.read())
    return path
