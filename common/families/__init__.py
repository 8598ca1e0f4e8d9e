"""One registry of model families: every kind of model the notebooks, the CLI and the detectors take, and the one
lookup that answers "which family is this?" for a model name, a folder or a loaded model.

    family = families.family_of("testbed")          # or a hub id, a folder, a loaded pipeline
    model = families.resolve_model("testbed")       # the trained folder (trained on first use)
    pipe = families.load(model)                     # what the family loads
    mem, gen, source = family.detection_prompts(model, 50, 50)
    reps = family.representation(pipe, images, pooling="spatial_max", seeds=range(len(images)))

    random-sd    "tiny" / "sd14": random-weight pipelines of SD's layout built from config      `random_sd.py`
    edm          the EDM testbed ("edm-testbed") or a public ε-prediction DDPM                  `edm.py`
    dit          the DiT testbed ("dit-testbed") or a DiTPipeline folder                        `dit.py`
    cpu-testbed  the CPU testbed ("testbed"): SD's layout trained here on captioned scenes      `cpu_testbed.py`
    sd           SD v1.4 or any diffusers SD pipeline, by hub id or folder (the last resort)    `sd.py`

A model belongs to the first family in `FAMILIES` that owns it. A new family is one module with one `ModelFamily`
and one entry in `FAMILIES` (before `sd`, which takes whatever no other family owns).

It imports `models`, `testbeds` and `steering` (it ties each model to its loader, prompts and steering task), and is
imported by `detectors` and `cli`.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..models import pipelines
from . import cpu_testbed, dit, edm, random_sd, sd
from .base import INTERFACES, ModelFamily

FAMILIES = {f.name: f for f in (random_sd.FAMILY, edm.FAMILY, dit.FAMILY, cpu_testbed.FAMILY, sd.FAMILY)}
TESTBED_MODEL = cpu_testbed.NAME      # what the SD notebooks run where SD v1.4 cannot


def family_of(model) -> ModelFamily:
    """The family of `model`: a name ("tiny", "testbed", ...), a hub id, a folder, or a loaded model."""
    if isinstance(model, (str, os.PathLike)):
        return next(f for f in FAMILIES.values() if f.owns_model(str(model)))
    for family in FAMILIES.values():
        if family.owns_pipe(model):
            return family
    raise TypeError(f"{type(model).__name__} is not a model of any family ({', '.join(FAMILIES)})")


def choose_model(model: str | os.PathLike | None = None) -> str:
    """The SD notebooks' default (model None): SD v1.4 where it can run (weights and a GPU), else the CPU testbed,
    saying why. Any other value is returned as it is."""
    if model is not None:
        return str(model)
    missing = pipelines.stable_diffusion_missing_reason()
    if missing:
        print(f"SD v1.4 cannot run here ({missing}): using the CPU testbed (MODEL = {TESTBED_MODEL!r})")
        return TESTBED_MODEL
    return pipelines.resolve_model(None)


def resolve_model(model: str | os.PathLike | None = None) -> str:
    """What `load` and the caches take: `model` (None: $DGR_SD_MODEL, else SD v1.4's hub id) as its family resolves
    it — "testbed" becomes the CPU testbed's trained folder (trained on first use)."""
    model = pipelines.resolve_model(model)
    return family_of(model).resolve(model)


def load(model: str | os.PathLike | None = None, device: str | None = None, dtype=None, seed: int = 0):
    """The model, loaded by its family (`resolve_model` first)."""
    model = resolve_model(model)
    return family_of(model).load(model, device=device, dtype=dtype, seed=seed)


def model_label(model: str) -> str:
    """A short name for titles and results JSON: "cpu-testbed", "tiny", "sd14", "edm-testbed", the hub id or the
    folder's name."""
    return family_of(model).label(str(model))


def training_record(model) -> dict | None:
    """The record a model trained by this repo keeps beside its weights — a testbed folder's `testbed.json`: its
    config, data and training log (`train_seconds` among them) — or None for a model trained elsewhere (SD v1.4,
    a hub id, a random-weight pipeline)."""
    from ..testbeds.training import INFO_NAME, read_info

    folder = Path(str(model)).expanduser()
    return read_info(folder) if (folder / INFO_NAME).is_file() else None


__all__ = ["FAMILIES", "INTERFACES", "TESTBED_MODEL", "ModelFamily", "choose_model", "family_of", "load",
           "model_label", "resolve_model", "training_record"]
