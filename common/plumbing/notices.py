"""Notices that every clean run printed and that a user had to learn to ignore, silenced where they arise. Each is
matched by its own text, so every other warning of the same source still shows.

    transformers  "`CLIPImageProcessor` requires torchvision (not installed); falling back to `...Pil` ..." (one per
                  class, whenever diffusers imports its pipelines): a filter on the one logger that emits it
    tqdm          "IProgress not found. Please update jupyter and ipywidgets." (a TqdmWarning in every notebook:
                  ipywidgets is not a dependency, the text bar is what we want): a warnings filter on that text
    ipykernel     "Kernel is running over TCP without encryption." (every notebook `make figures` runs): the kernels
                  of `notebooks.run_notebook` talk over IPC sockets instead, which is also what the notice asks for
    diffusers,    "Loading pipeline components...", "Loading weights" progress bars (every pipeline loaded from a
    transformers  local folder: a dozen lines of bars in a notebook's output): `quiet_loading()` turns both
                  libraries' bars off while `pipelines.load_pipeline` reads files it already has (downloads keep
                  their bars)
    tqdm (ours)   a training bar refreshed every 2 s: in a notebook every refresh is another line (150 kB for the toy
                  diffusion run): `progress_range` draws the bar in a terminal only, elsewhere prints one line at the end

`silence()` runs when `common` is imported (the notebooks, the tests, the command line all do), before transformers
or tqdm load. It is idempotent.
"""
from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
import warnings

TRANSFORMERS_LOGGER = "transformers.utils.import_utils"
TORCHVISION_FALLBACK = re.compile(r"`\w+ImageProcessor` requires torchvision \(not installed\); "
                                  r"falling back to `\w+Pil`")
TQDM_IPROGRESS = r"IProgress not found\. Please update jupyter and ipywidgets"


class _DropMessages(logging.Filter):
    """Drop the records whose message matches `pattern`; let every other record through."""

    def __init__(self, pattern: re.Pattern):
        super().__init__()
        self.pattern, self.dropped = pattern, 0

    def filter(self, record: logging.LogRecord) -> bool:
        drop = bool(self.pattern.search(record.getMessage()))
        self.dropped += drop
        return not drop


def dropped() -> int:
    """How many records the transformers filter has dropped in this process (for the tests)."""
    return sum(f.dropped for f in logging.getLogger(TRANSFORMERS_LOGGER).filters if isinstance(f, _DropMessages))


def silence() -> None:
    logger = logging.getLogger(TRANSFORMERS_LOGGER)        # the same object transformers' get_logger returns
    if not any(isinstance(f, _DropMessages) for f in logger.filters):
        logger.addFilter(_DropMessages(TORCHVISION_FALLBACK))
    from tqdm import TqdmWarning                             # tqdm alone, not tqdm.auto (whose import warns)

    warnings.filterwarnings("ignore", message=TQDM_IPROGRESS, category=TqdmWarning)


@contextlib.contextmanager
def quiet_loading():
    """Inside: diffusers' and transformers' progress bars are off (their loading bars); after: as they were."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = [lib for lib in (diffusers_logging, transformers_logging) if lib.is_progress_bar_enabled()]
    for lib in libraries:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib in libraries:
            lib.enable_progress_bar()


def progress_range(steps: int, desc: str, progress: bool = True):
    """range(steps) with a tqdm bar in a terminal; elsewhere (a notebook, a log file), where every refresh of a bar
    becomes another line of output, one line when the loop ends: its steps and seconds."""
    from tqdm import trange

    bar = progress and sys.stderr.isatty()
    started = time.perf_counter()
    yield from trange(steps, desc=desc, disable=not bar, mininterval=2)
    if progress and not bar:
        print(f"{desc}: {steps} steps in {time.perf_counter() - started:.0f} s")
