"""The CPU testbed: a small model of SD's layout trained here on captioned scenes with duplicated pairs
(`testbeds.cpu_testbed`), saved as an ordinary diffusers folder and loaded like a local copy of SD v1.4.

"testbed" names it (trained on first use, then read from the cache); so does its folder. Its prompts are its
memorized titles and held-out captions; its steering task a dark background; NeMo's reference statistics come from
its training-pool captions.
"""
from __future__ import annotations

from ..models import pipelines
from ..steering.steerability import SteeringTask
from ..testbeds import cpu_testbed
from .base import ModelFamily
from .sd import sd_representation

NAME = "testbed"                 # the model name that means "the CPU testbed of the default config"


def owns_model(model: str) -> bool:
    return model == NAME or cpu_testbed.is_testbed(model)


def owns_pipe(pipe) -> bool:
    """A pipeline loaded from a testbed folder (diffusers records the folder as `name_or_path`)."""
    return cpu_testbed.is_testbed(getattr(pipe, "name_or_path", None) or None)


def resolve(model: str) -> str:
    return str(cpu_testbed.ensure_testbed()) if model == NAME else str(model)


def detection_prompts(model, n_mem, n_gen, mem_source=None, gen_source=None, labels_source=None):
    """Its memorized titles (verbatim copies by construction) and held-out captions; the sources do not apply."""
    mem, gen = cpu_testbed.detection_prompts(model, n_mem, n_gen)
    return mem, gen, {"mem": "cpu-testbed memorized titles", "gen": "cpu-testbed held-out captions",
                      "vm_tm": "verbatim by construction (duplicated exact pairs)"}


def prompt_set(model, which, n=None):
    """"mem": the memorized titles; "gen": the held-out captions (`cpu_testbed.prompt_records`, as texts)."""
    mem, gen = cpu_testbed.prompt_records(model)
    texts = [r.prompt for r in (mem if which == "mem" else gen)]
    return texts if n is None else texts[:n]


def copies_training_image(model, images):
    """The testbed's copy criterion on each generation (`cpu_testbed.copy_report`): its nearest distinct training
    image at Pearson correlation >= the copy threshold."""
    return cpu_testbed.copy_report(images, cpu_testbed.load_data(model))["copy"]


FAMILY = ModelFamily(
    name="cpu-testbed", interface="sd-pipeline",
    owns_model=owns_model, owns_pipe=owns_pipe, resolve=resolve,
    load=pipelines.load_pipeline, label=lambda model: cpu_testbed.TESTBED_LABEL, representation=sd_representation,
    detection_prompts=detection_prompts, prompt_set=prompt_set,
    steering_task=lambda model: SteeringTask(**cpu_testbed.steering_prompts(model)),
    calibration_prompts=lambda model, n=cpu_testbed.N_CALIBRATION: cpu_testbed.calibration_prompts(model, n),
    copies_training_image=copies_training_image,
)
