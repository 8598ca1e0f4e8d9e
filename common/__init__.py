"""Shared helpers for the notebooks of *Generalization of Diffusion Models Arises with a Balanced
Representation Space* (Zhang et al., ICLR 2026).

Each module is one concept and imports alone:
    paths     where the repo keeps figures, results and caches
    results   seeding, atomic writes, config cache keys, the results-JSON writer
    checkpoints  safetensors weights with metadata; train a model only when no checkpoint has its config
    data      CelebA (HF stream / local folder / cache) and the offline LFW face stand-in
    stats     representation statistics (std, l2, l4/l2), cosine similarity, PSNR, memorization criteria
    dae       the tied two-layer ReLU denoising autoencoder f(x) = W ReLU(Wᵀx) and its trainer
    toy_diffusion  the time-conditioned ReLU DAE (a VE x0-predictor), its trainer and reverse-VE sampler
    plotting  the paper's figure style, saving to Figs/
    notebooks the papermill runner behind `make figures`, `make smoke` and the notebook tests
"""
