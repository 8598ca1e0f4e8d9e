"""Class-conditional latent transformers (DiT): the DiT testbed trained here (`testbeds.dit_testbed`, named
"dit-testbed") or a DiTPipeline folder such as facebook/DiT-XL-2-256's. Conditioned on class labels, not prompts."""
from __future__ import annotations

from pathlib import Path

from ..models import dit
from ..models.representations import DIT_DETECTION_TIMESTEP, extract_dit_representations
from ..testbeds import dit_testbed
from .base import ModelFamily

NAME = "dit-testbed"


def dit_representation(pipe, images, *, layer=None, timestep=None, sigma=None, pooling, seeds, labels=None,
                       batch_size=64, progress=False):
    """VAE posterior mean → noised at `timestep` (default t = 50) → one pass with `labels` (None: the null label,
    prompt-free) → `layer` (default the MLP hidden of the middle block) pooled over the tokens. `sigma` does not
    apply."""
    timestep = DIT_DETECTION_TIMESTEP if timestep is None else timestep
    reps = extract_dit_representations(pipe, images, layer, timestep, [pooling], labels, seeds, batch_size)
    return next(iter(reps.values()))[pooling]                                                      # [N, C]


def resolve(model: str) -> str:
    return str(dit_testbed.ensure_dit_testbed()) if model == NAME else str(model)


FAMILY = ModelFamily(
    name="dit", interface="dit",
    owns_model=lambda model: model == NAME or dit.is_dit_folder(model),
    owns_pipe=lambda pipe: isinstance(pipe, dit.DiTModel), resolve=resolve,
    load=lambda model, device=None, dtype=None, seed=0: dit.DiTModel.from_pretrained(model, device),
    label=lambda model: dit_testbed.LABEL if dit_testbed.is_dit_testbed(model) else Path(str(model)).name,
    representation=dit_representation,
)
