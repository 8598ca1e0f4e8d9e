"""Shared helpers for the notebooks of *Generalization of Diffusion Models Arises with a Balanced
Representation Space* (Zhang et al., ICLR 2026).

Each module is one concept and imports alone:
    paths     where the repo keeps figures, results and caches
    results   seeding, atomic writes, config cache keys, the results-JSON writer
    checkpoints  safetensors weights with metadata; train a model only when no checkpoint has its config
    data      CelebA (HF stream / local folder / cache) and the offline LFW face stand-in
    stats     representation statistics (std, l2, l4/l2), cosine similarity, PSNR, memorization criteria
    dae       the tied two-layer ReLU denoising autoencoder f(x) = W ReLU(Wᵀx) and its trainer
    toy_diffusion  the time-conditioned ReLU DAE (a VE x0-predictor), its trainer (one seed or several at once),
              the reverse-VE sampler, the clean/ghost test of a memorizing run
    official  the official notebooks' models and training cells as written: the reference for tests and benchmarks
    plotting  the paper's figure style, saving to Figs/
    network   fast offline-safe reachability probes, a cached download
    notebooks the papermill runner behind `make figures` (and what a notebook requires to run)
    notices   the known harmless notices of our dependencies, silenced by their exact text (on import of `common`)
    faults    what a cache does with an entry it cannot read: move it aside and rebuild, or name the fix

Stable Diffusion (memorization detection; any diffusers UNet pipeline works the same way):
    pipelines       load SD v1.4 (hub id / local folder), random-weight pipelines built from config
    prompts         the memorized and generalized prompt lists, VM/TM labels
    generate        batched, seeded, resumable generation with a manifest
    shard           a job split between processes (accelerate), per-process files merged on read
    scores          detector scores of a generation folder, cached and resumable like its images
    cli             `python -m common.cli.generate` / `common.cli.score`, on one process or many
    hooks           record named module outputs (context manager)
    representations image -> pooled UNet activation (the representation the paper's detector reads)
    detectors       Table 1's memorization detectors, one module each, one call: std (the paper), Wen et al.,
                    NeMo, LID (FLIPD), Carlini et al.
    metrics         AUROC, TPR@1%FPR (strict and official), bootstrap CIs
    steering        add α·v to named UNet outputs during sampling (context manager)
    steerability    α sweeps and how far they move each generation

The CPU testbed (a small model of SD's layout, trained here, with memorization we induce):
    testbed_data    captioned scenes: a generalizing pool, duplicated memorized pairs, held-out captions
    testbed         tokenizer, models, training, the cached pipeline folder, the copy criterion
"""

from . import notices as _notices

_notices.silence()
