"""The paper's §3 on a CPU: the toy models the theory is about, their data, and the statistics of a representation.
Imports only `plumbing`.

    data           CelebA (HF stream / local folder / cache) and the offline LFW face stand-in
    stats          representation statistics (std, l2, l4/l2), cosine similarity, PSNR, memorization criteria
    dae            the tied two-layer ReLU denoising autoencoder f(x) = W ReLU(Wᵀx) and its trainer
    toy_diffusion  the time-conditioned ReLU DAE (a VE x0-predictor), its trainer, the reverse-VE sampler
    official       the official notebooks' models and training cells as written: the reference for tests
    regimes        Thm 3.1 / Cor 3.2–3.4 against trained DAEs: block detection, closed-form checks, the
                   hybrid measurement, the memorization → generalization sweep (ReLU_DAE_regimes.ipynb)
"""
