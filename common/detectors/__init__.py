"""The memorization detectors of the paper's Table 1, one module per method, one shape of call:

    from common import detectors
    scores = detectors.get("nemo").score(pipe, detectors.Samples(images, prompts, seeds), statistics=ref)
    # float64 [N], higher = more likely memorized; detectors.get(name).needs_prompt says what it reads

    std      the paper: std of one pooled UNet activation (prompt-free)                      `std.py`
    wen      Wen et al. 2024: text-conditional noise norm (1st step; their notebook's 4 x 50)  `wen.py`
    nemo     Hintersdorf et al. 2024: value-neuron z-scores; memorization strength by SSIM    `nemo.py`
    lid      Ross et al. 2025: −LID by FLIPD, empty prompt (prompt-free) or the caption       `lid.py`
    carlini  Carlini et al. 2023: largest clique of near-identical generations                `carlini.py`

`TABLE_ROWS` is the order of Table 1 (`2-Application/Table1_detection.ipynb`). A new method is one module
with one `Detector` and one entry in `DETECTORS`. Beside the methods:

    base     `Samples`, `Detector`, the paper's Table 1 numbers
    metrics  AUROC, TPR@1%FPR (strict and official), bootstrap CIs
    scores   detector scores of a generation folder, cached and resumable like its images
    table1   Table 1 on one model: generate the sets, score every method, one row per method, the printed tables
    training_sweep  a testbed retrained at other lengths and seeds, its verdicts measured again (`make sweeps`)

A detector reaches its model's noised input and layer through the model's family (`families.family_of(pipe)`);
it imports `families` and the layers below, and is imported by `cli` (and the notebooks).
"""
from .base import PAPER_ROW_NAMES, PAPER_TABLE1, TABLE1_COLUMNS, Detector, Samples
from .carlini import CARLINI
from .lid import LID, LID_CONDITIONAL
from .nemo import NEMO, NEMO_SSIM
from .std import STD
from .wen import WEN, WEN_NOTEBOOK

DETECTORS = {d.name: d for d in (CARLINI, WEN, WEN_NOTEBOOK, NEMO, NEMO_SSIM, LID, LID_CONDITIONAL, STD)}
TABLE_ROWS = tuple(DETECTORS)           # the paper's row order, each method's extra variant after its main row


def get(name: str) -> Detector:
    """The detector called `name`; an unknown name is an error listing the known ones."""
    if name not in DETECTORS:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    return DETECTORS[name]


__all__ = ["DETECTORS", "TABLE1_COLUMNS", "PAPER_ROW_NAMES", "PAPER_TABLE1", "TABLE_ROWS", "Detector", "Samples", "get"]
