"""Where things go and how they survive a crash: the bottom layer, which every other part of `common` may import and
which imports nothing of `common`.

    paths        the repo's folders (Figs/, results/) and the cache (`DGR_CACHE`), named portably in outputs
    results      seeding, atomic writes, config cache keys, the results-JSON writer
    faults       what a cache does with an entry it cannot read: move it aside and rebuild, or name the fix
    checkpoints  safetensors weights with metadata; train a model only when no checkpoint has its config
    network      fast offline-safe reachability probes, a cached download
    denormals    subnormal floats flushed to zero on every thread torch computes on (Intel CPUs are slow on them)
    notices      the known harmless notices of our dependencies, silenced by their exact text
    shard        a job split between processes (accelerate / torchrun), per-process files merged on read
"""
