"""The code behind the notebooks of *Generalization of Diffusion Models Arises with a Balanced Representation Space*
(Zhang et al., ICLR 2026), in layers listed bottom first: a module imports its own layer and the layers before it,
never one after (`tests/test_layout.py` walks the imports).

    plumbing/   paths, the cache, results JSON, faults, checkpoints, network probes, sharding   (imports nothing)
    theory/     §3: the ReLU DAE, the toy diffusion model, their data and statistics, the official cells
    models/     §4's models: SD pipelines, EDM, DiT; hooks, representations, generation, prompt lists
    testbeds/   models trained here with planted memorization: the CPU, EDM and DiT testbeds
    steering/   §4.3: add α·v to a layer during sampling; steerability sweeps
    families/   one registry of model families: load, label, prompts, steering task, representation
    detectors/  Table 1's memorization detectors, one module each; metrics; cached scores
    plotting    the paper's figure style, saving to Figs/
    cli/        the commands: the notebook runner (`make figures`), generation, scoring

Importing `common` silences the known harmless notices of our dependencies (`plumbing/notices.py`).
"""

from .plumbing import notices as _notices

_notices.silence()
