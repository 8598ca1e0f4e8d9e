"""Stable Diffusion v1.4 — or any diffusers StableDiffusionPipeline, by hub id or local folder: the paper's model.

Loaded by `models.pipelines.load_pipeline` (the official `load_sd_pipe`); prompts are Wen et al.'s memorized
captions labelled VM/TM by NeMo and the Gustavosta generalized prompts; the steering task is the official `age_old`.
This family is the registry's last resort: any model no other family owns is taken for an SD pipeline.
"""
from __future__ import annotations

from pathlib import Path

from ..models import pipelines, prompts
from ..models.representations import DETECTION_LAYER, DETECTION_TIMESTEP, extract_representations
from ..steering.steerability import OFFICIAL_TASK
from .base import ModelFamily

GENERALIZED_SET_SIZE = 500           # the paper's generalized prompts: the first 500 Gustavosta prompts


def is_sd_pipeline(pipe) -> bool:
    return all(hasattr(pipe, part) for part in ("unet", "vae", "text_encoder", "scheduler"))


def sd_representation(pipe, images, *, layer=None, timestep=None, sigma=None, pooling, seeds, labels=None,
                      batch_size=16, progress=False):
    """The paper's detection representation (`models.representations.extract_representations`): VAE sample →
    noised at `timestep` (default t = 10) → one UNet pass, empty prompt → `layer` (default up_blocks.0.resnets.2's
    last SiLU) pooled. `sigma` and `labels` do not apply to a text-conditional latent UNet."""
    layer = DETECTION_LAYER if layer is None else layer
    timestep = DETECTION_TIMESTEP if timestep is None else timestep
    reps = extract_representations(pipe, images, [layer], timestep, [pooling], seeds=seeds, batch_size=batch_size,
                                   progress=progress)
    return reps[layer][pooling]                                                                    # [N, C]


def sd_label(model: str) -> str:
    """The hub id, or a local folder's name."""
    return Path(model).name if pipelines.is_local(model) else model


def detection_prompts(model, n_mem, n_gen, mem_source=None, gen_source=None, labels_source=None):
    """The first n_mem of Wen et al.'s memorized captions labelled VM/TM by NeMo, the first n_gen Gustavosta prompts
    (or the given sources: a file, or a named list such as "sharpness", `prompts.NAMED_LISTS`)."""
    mem = prompts.label_memorization_types(prompts.load_memorized_prompts(n_mem, mem_source),
                                           prompts.load_memorization_labels(labels_source))
    gen = prompts.load_generalized_prompts(n_gen, gen_source)
    named = prompts.NAMED_LISTS
    return mem, gen, {"mem": named[mem_source]["memorized"] if mem_source in named
                      else str(mem_source or prompts.MEMORIZED_URL),
                      "gen": named[gen_source]["generalized"] if gen_source in named
                      else str(gen_source or prompts.GENERALIZED_HF_ID),
                      "vm_tm": str(labels_source or prompts.NEMO_LABELS_URL)}


def prompt_set(model, which, n=None):
    """"mem": Wen et al.'s memorized captions; "gen": the Gustavosta prompts (the first 500 unless n says)."""
    if which == "mem":
        return [r.prompt for r in prompts.load_memorized_prompts(n)]
    return [r.prompt for r in prompts.load_generalized_prompts(GENERALIZED_SET_SIZE if n is None else n)]


FAMILY = ModelFamily(
    name="sd", interface="sd-pipeline",
    owns_model=lambda model: True, owns_pipe=is_sd_pipeline,
    load=pipelines.load_pipeline, label=sd_label, representation=sd_representation,
    detection_prompts=detection_prompts, prompt_set=prompt_set, steering_task=lambda model: OFFICIAL_TASK,
)
