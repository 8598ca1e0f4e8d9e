"""EDM denoisers D(x; σ) on pixels, unconditional: the EDM testbed trained here (`testbeds.edm_testbed`, named
"edm-testbed") or a public ε-prediction DDPM read as one (`models.edm.load_denoiser`). No prompts, no steering task."""
from __future__ import annotations

from pathlib import Path

from ..models import edm
from ..models.representations import DETECTION_LAYER, EDM_DETECTION_SIGMA, extract_edm_representations
from ..testbeds import edm_testbed
from .base import ModelFamily

NAME = "edm-testbed"


def edm_representation(pipe, images, *, layer=None, timestep=None, sigma=None, pooling, seeds, labels=None,
                       batch_size=64, progress=False):
    """x + σ n (default σ = 0.17) → one pass of D(·; σ) → `layer` (default as SD's) pooled. No VAE, no prompt:
    `timestep` and `labels` do not apply."""
    layer = DETECTION_LAYER if layer is None else layer
    sigma = EDM_DETECTION_SIGMA if sigma is None else sigma
    return extract_edm_representations(pipe, images, [layer], sigma, [pooling], seeds, batch_size)[layer][pooling]


def resolve(model: str) -> str:
    return str(edm_testbed.ensure_edm_testbed()) if model == NAME else str(model)


FAMILY = ModelFamily(
    name="edm", interface="edm-denoiser",
    owns_model=lambda model: model == NAME or edm.is_edm_folder(model) or str(model) == edm.DDPM_CIFAR10_HUB_ID,
    owns_pipe=lambda pipe: isinstance(pipe, edm.EDMDenoiser), resolve=resolve,
    load=lambda model, device=None, dtype=None, seed=0: edm.load_denoiser(model, device, dtype),
    label=lambda model: edm_testbed.LABEL if edm_testbed.is_edm_testbed(model) else Path(str(model)).name,
    representation=edm_representation,
)
