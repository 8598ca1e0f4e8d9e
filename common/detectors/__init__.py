"""The memorization detectors of the paper's Table 1, one module per method, one shape of call:

    from common import detectors
    scores = detectors.get("nemo").score(pipe, detectors.Samples(images, prompts, seeds), statistics=ref)
    # float64 [N], higher = more likely memorized; detectors.get(name).needs_prompt says what it reads

    std      the paper: std of one pooled UNet activation (prompt-free)                      `std.py`
    wen      Wen et al. 2024: text-conditional noise norm (1st step; their notebook's 4 x 50)  `wen.py`
    nemo     Hintersdorf et al. 2024: value-neuron z-scores; memorization strength by SSIM    `nemo.py`
    lid      Ross et al. 2025: −LID by FLIPD, empty prompt (prompt-free) or the caption       `lid.py`
    carlini  Carlini et al. 2023: largest clique of near-identical generations                `carlini.py`
  since the paper (`SINCE_PAPER`: their own papers' numbers):
    sharpness   Jeon et al. 2025: Hessian-guidance product norm at the first step             `sharpness.py`
    anisotropy  Asthana & Belagiannis 2026: guidance norm + its angle to ε_∅, on x_T          `anisotropy.py`

`TABLE_ROWS` is the order of Table 1 (`2-Application/Table1_detection.ipynb`). A new method is one module
with one `Detector` and one entry in `DETECTORS`. Beside the methods:

    base     `Samples`, `Detector`, the paper's Table 1 numbers
    metrics  AUROC, TPR@1%FPR (strict and official), bootstrap CIs
    scores   detector scores of a generation folder, cached and resumable like its images
    table1   Table 1 on one model: generate the sets, score every method, one row per method, the printed tables
    training_sweep  a testbed retrained at other lengths and seeds, its verdicts measured again (`make sweeps`)
    cpu_testbed_verdicts  the CPU testbed's verdicts (memorized by kind, Table 1, steering) for that sweep

A detector reaches its model's noised input and layer through the model's family (`families.family_of(pipe)`);
it imports `families` and the layers below, and is imported by `cli` (and the notebooks).
"""
from .anisotropy import ANISOTROPY, ANISOTROPY_4
from .base import PAPER_ROW_NAMES, PAPER_TABLE1, SINCE_PAPER, SINCE_PAPER_NAMES, TABLE1_COLUMNS, Detector, Samples
from .carlini import CARLINI
from .lid import LID, LID_CONDITIONAL
from .nemo import NEMO, NEMO_SSIM
from .sharpness import SHARPNESS, SHARPNESS_4
from .std import STD
from .wen import WEN, WEN_NOTEBOOK

DETECTORS = {d.name: d for d in (CARLINI, WEN, WEN_NOTEBOOK, NEMO, NEMO_SSIM, LID, LID_CONDITIONAL, STD,
                                 SHARPNESS, SHARPNESS_4, ANISOTROPY, ANISOTROPY_4)}
TABLE_ROWS = tuple(DETECTORS)           # the paper's row order, each method's extra variant after its main row;
                                        # then the rows since the paper


def get(name: str) -> Detector:
    """The detector called `name`; an unknown name is an error listing the known ones."""
    if name not in DETECTORS:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    return DETECTORS[name]


__all__ = ["DETECTORS", "TABLE1_COLUMNS", "PAPER_ROW_NAMES", "PAPER_TABLE1", "SINCE_PAPER",
           "SINCE_PAPER_NAMES", "TABLE_ROWS", "Detector", "Samples", "get"]
