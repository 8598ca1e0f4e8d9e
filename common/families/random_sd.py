"""Random-weight pipelines of SD's layout, built from config with no file or network: "tiny" (32x32 images, seconds
on a CPU: the tests and SMOKE runs) and "sd14" (SD v1.4's UNet and VAE at full size: the speed benchmarks).

They run every code path of the SD family — its prompts, its steering task, its representation — and mean nothing
about the paper.
"""
from __future__ import annotations

from ..models import pipelines
from ..steering.steerability import OFFICIAL_TASK
from .base import ModelFamily
from .sd import detection_prompts, prompt_set, sd_representation

FAMILY = ModelFamily(
    name="random-sd", interface="sd-pipeline",
    owns_model=lambda model: model in pipelines.RANDOM_MODELS,
    owns_pipe=lambda pipe: False,            # once built it is an SD pipeline like any other (the `sd` family's)
    load=pipelines.load_pipeline, label=str, representation=sd_representation,
    detection_prompts=detection_prompts, prompt_set=prompt_set, steering_task=lambda model: OFFICIAL_TASK,
)
