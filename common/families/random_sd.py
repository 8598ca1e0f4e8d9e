"""Random-weight pipelines of SD's layout, built from config with no file or network: "tiny" (32x32 images, seconds
on a CPU: the tests and SMOKE runs) and "sd14" (SD v1.4's UNet and VAE at full size: the speed benchmarks).

They run every code path of the SD family — its prompts, its steering task, its representation — and mean nothing
about the paper.
"""
from __future__ import annotations

from dataclasses import replace

from ..models import pipelines
from .sd import FAMILY as SD

# SD's family in all but how its models are named: its prompts, steering task and representation are SD's
FAMILY = replace(
    SD, name="random-sd",
    owns_model=lambda model: model in pipelines.RANDOM_MODELS,
    owns_pipe=lambda pipe: False,            # once built it is an SD pipeline like any other (the `sd` family's)
    label=str,
)
