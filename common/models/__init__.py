"""The diffusion models of the paper's §4, how they load, sample and are read — any family, no testbed knowledge.
Imports `plumbing` and `theory`.

    pipelines        SD v1.4 (hub id / local folder) and random-weight SD pipelines built from config
    edm              EDM denoisers D(x; σ) (ours, or a public ε-prediction DDPM read as one), Heun sampling
    dit              class-conditional latent transformers (DiT) behind one object, DDIM sampling
    hooks            record named module outputs (context manager)
    representations  image -> pooled activation of a layer: the representation the paper's detector reads
    generate         batched, seeded, resumable generation with a manifest
    prompts          the prompt lists of the detection experiment (memorized, generalized, VM/TM labels)
"""
