"""The CPU testbed's ground truth: which generations copy a training image, by which criterion, with what false-copy
rate; and its three kinds of memorization (verbatim, template, ordinary caption), each with its captions and its
per-sample criterion. `cpu_testbed` re-exports every name, so `cpu_testbed.copy_report` and the like still read.
"""
from __future__ import annotations

import numpy as np
import torch

from ..theory.stats import centred, cosine_matrix
from .copies import PEARSON_THRESHOLD, _flat, pearson_false_copy_rate, pearson_nearest
from .scenes import TestbedData, template_region, to_model_space

COPY_THRESHOLD = PEARSON_THRESHOLD   # Pearson correlation of the pixels with the nearest distinct training image


def _trained_vectors(data: TestbedData) -> np.ndarray:
    """The distinct training images in [-1, 1]: [M', 3, 16, 16], rows in `data.trained_unique` order."""
    return to_model_space(data.images[data.trained_unique])


def copy_report(generated: torch.Tensor | np.ndarray, data: TestbedData, own: np.ndarray | None = None,
                threshold: float = COPY_THRESHOLD) -> dict:
    """Nearest distinct training image of each generation ([n, 3, 16, 16] in [-1, 1]) by the Pearson
    correlation of pixels (`copies.pearson_nearest`), and whether it is a near-copy.

    own: for captions that name a training image (the memorized titles), its index into `data.images`; a
    generation then counts as reproducing it only if that image is its nearest neighbour and passes.
    Also the NN distance ratio ‖x − NN₁‖/‖x − NN₂‖ (Gu et al. 2025; < 1/3 = memorized).
    """
    from ..theory.stats import nn_distance_ratio

    references = _trained_vectors(data)
    correlation, nearest = pearson_nearest(generated, references)
    nearest = data.trained_unique[nearest]
    copy = correlation >= threshold
    report = {"correlation": correlation, "nearest": nearest, "copy": copy,
              "nn_ratio": nn_distance_ratio(np.asarray(generated, dtype=np.float64).reshape(len(generated), -1),
                                            references.reshape(len(references), -1)),
              "threshold": threshold}
    if own is not None:
        report["copies_own"] = copy & (nearest == np.asarray(own))
    return report


def template_report(generated: torch.Tensor | np.ndarray, data: TestbedData, own: np.ndarray,
                    threshold: float = COPY_THRESHOLD) -> dict:
    """Does each generation ([n, 3, 16, 16] in [-1, 1]) reproduce its title's template? The Pearson correlation
    of its template region (`scenes.template_region`, the left half) with the template's, ≥ `threshold`.

    own: for each generation, the index into `data.images` of any variant of its title's template (all variants
    share the region). A generation that keeps the template and draws a right object no variant has counts; one
    whose left half shows another template or another scene does not."""
    own = np.asarray(own)
    if not (data.kind[own] == "template").all():
        raise ValueError("`own` must index template images")
    x = centred(_flat(template_region(np.asarray(generated, dtype=np.float64))))
    t = centred(_flat(template_region(to_model_space(data.images[own]))))
    correlation = (x * t).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(t, axis=1), 1e-12)
    return {"correlation": correlation, "copies_template": correlation >= threshold, "threshold": threshold}


def template_false_copy_rate(data: TestbedData, threshold: float = COPY_THRESHOLD) -> dict:
    """How often the template criterion fires by chance: the fraction of distinct training images that are not a
    template's variant whose template region passes against some template (one variant per title stands for it),
    and that best correlation's quantiles."""
    firsts = [np.flatnonzero((data.kind == "template") & (np.asarray(data.captions) == title))[0]
              for title in dict.fromkeys(data.captions[i] for i in data.indices("template"))]
    others = data.trained_unique[data.kind[data.trained_unique] != "template"]
    region = lambda idx: centred(_flat(template_region(to_model_space(data.images[idx]))))
    best = cosine_matrix(region(others), region(firsts)).max(axis=1)
    return {"false_copy_rate": float((best >= threshold).mean()),
            "best_correlation_quantiles": dict(zip(("50%", "99%", "99.9%", "max"),
                                                   map(float, np.quantile(best, [0.5, 0.99, 0.999, 1.0]))))}


def criterion_false_copy_rate(data: TestbedData, threshold: float = COPY_THRESHOLD) -> dict:
    """How often the copy criterion fires between two *different* training images: the fraction of distinct
    training images whose nearest other training image passes `threshold`, and that correlation's quantiles."""
    return pearson_false_copy_rate(_trained_vectors(data), threshold)


# ----------------------------------------------------------------------------------------------------
# The three kinds of memorization, each with its captions and its per-sample criterion
# ----------------------------------------------------------------------------------------------------
# Fixed before any detector scored a generation of these sets (CPU_testbed and Table1_detection share them):
# the seed of caption 0 of each set (caption i: seed + i) and the generations per caption. A verbatim title
# copies nearly always, so one generation each; a template or an ordinary caption may copy in some generations
# and not in others, so several.
KIND_SETS = {"verbatim": ("mem", 0, 1), "template": ("template", 40, 4), "ordinary": ("ordinary", 50, 4)}
KIND_CRITERIA = {
    "verbatim": "the generation's nearest distinct training image (Pearson correlation of pixels) is the one "
                "its title names, at correlation >= copy_threshold",
    "template": "the Pearson correlation of the generation's template region (the left half) with its title's "
                "template >= copy_threshold, whatever the right half holds",
    "ordinary": "the generation's nearest distinct training image is the scene duplicated under its caption, "
                "at correlation >= copy_threshold (a copy of an unduplicated scene with the same caption does "
                "not count)",
}


def kind_prompts(data: TestbedData, kind: str, per_caption: int = 1) -> tuple[list[str], np.ndarray]:
    """The captions of one kind of memorization ("verbatim", "template" or "ordinary"), each repeated
    `per_caption` times, and per generation the index into `data.images` of the training image its caption
    names (for a template title: its first variant, which holds the template)."""
    if kind == "template":
        titles = list(dict.fromkeys(data.captions[i] for i in data.indices("template")))
        first = {}
        for i in data.indices("template"):
            first.setdefault(data.captions[i], i)
        named = np.array([first[t] for t in titles], dtype=np.int64)
    else:
        named = data.indices({"verbatim": "memorized", "ordinary": "ordinary"}[kind])
    named = np.repeat(named, per_caption)
    return [data.captions[i] for i in named], named


def kind_ground_truth(generated, data: TestbedData, kind: str, own: np.ndarray,
                      threshold: float = COPY_THRESHOLD) -> dict:
    """Per generation of one kind, whether it is memorized by that kind's criterion (`KIND_CRITERIA`):
    {"memorized": bool [n], "correlation": [n] (the criterion's correlation), "threshold"}."""
    if kind == "template":
        report = template_report(generated, data, own, threshold)
        return {"memorized": report["copies_template"], "correlation": report["correlation"],
                "threshold": threshold}
    report = copy_report(generated, data, own=own, threshold=threshold)
    return {"memorized": report["copies_own"], "correlation": report["correlation"], "threshold": threshold}
