"""The paper's §4.3: steer a generation by adding α·v to a layer's output, and measure how far each generation moves.
Imports `plumbing`, `theory` and `models`.

    steerer        add α·v to named UNet outputs during sampling (context manager); concept vectors
    steerability   the steering task, α sweeps (cached) and how far they move each generation
    dit_steering   the same on a class-conditional DiT: concept vectors, steered groups, moved and ratio per α
"""
