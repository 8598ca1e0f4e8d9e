"""Models trained here, with memorization we plant, standing in where the paper's models cannot run: the CPU testbed
(SD's layout), the EDM testbed (CIFAR10's place) and the DiT testbed (ImageNet's). Imports `plumbing`, `theory`
and `models`.

    training      what the three share: duplicated training rows, the training loop, the cached folder
    copies        the copy criteria (nearest training image by Pearson / cosine / L2) and their false-copy rates
    scenes        the CPU testbed's data: captioned scenes, a generalizing pool, duplicated titles, held-out captions
    cpu_testbed   tokenizer, models, training and the cached diffusers folder of the CPU testbed; its prompt sets
    cpu_testbed_truth  its ground truth: the copy and template criteria, the three kinds of memorization
    edm_testbed   the EDM testbed: natural-image crops, some duplicated; samples and their ground truth
    dit_testbed   the DiT testbed: common and rare classes of drawn scenes; samples and their ground truth
"""
