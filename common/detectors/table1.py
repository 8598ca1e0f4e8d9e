"""The paper's Table 1 (§4.1) as `2-Application/Table1_detection.ipynb` runs it: every detector on the same
generations, one row per method, each column headed by the model it actually ran on.

    generate_set      one set of generations (a cached, resumable folder) as manifest rows
    as_samples        those rows as `detectors.Samples` (images [n, 3, H, W] in [-1, 1], prompts, seeds)
    control_rows      the testbed's control: rows of the dose set whose titles were trained `duplications` times
    score_methods     every method on every set through the folders' score caches, with seconds per sample
    summarize         one method's row: AUROC + bootstrap CI, TPR@1%FPR (strict, official), time, control AUROC
    summarize_by_kind one method's AUROC, CI and TPR@1%FPR per kind of memorization, and all kinds pooled
    matches_the_best_prompt_based   the paper's claim for one kind, by a rule fixed in advance
    claim_by_kind, by_kind_lines, claim_lines   the table by kind and the claim, for every kind
    laion_lines       the LAION column beside the paper's numbers (a row the paper does not have: blank; a row
                      since the paper: its own paper's numbers, under a heading line)
    column_lines      the LAION, ImageNet and CIFAR10 columns side by side, each headed "... — run on: <model>"
    run_on_name       the model a column ran on, as a heading says it ("cpu-testbed" -> "CPU testbed")
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..models import generate, representations
from . import carlini, metrics
from . import scores as score_cache
from .base import PAPER_TABLE1, SINCE_PAPER, TABLE1_COLUMNS, Samples

RUN_ON_NAMES = {"cpu-testbed": "CPU testbed", "edm-testbed": "EDM testbed", "dit-testbed": "DiT testbed",
                "CompVis/stable-diffusion-v1-4": "SD v1.4", "sd14": "random SD v1.4 layout",
                "tiny": "random tiny SD"}
COLUMN_NAMES = {family: heading.split(" (")[0] for family, heading in TABLE1_COLUMNS.items()}   # "LAION", ...


def run_on_name(model_label: str) -> str:
    """The model a column ran on as its heading says it: a known label's name, else the label itself."""
    return RUN_ON_NAMES.get(model_label, model_label)


def column_heading(family: str, model_label: str) -> str:
    """E.g. "LAION column — run on: CPU testbed" (the paper's column, the model that filled it here)."""
    return f"{COLUMN_NAMES[family]} column — run on: {run_on_name(model_label)}"


def generate_set(pipe, model_name: str, name: str, captions: list[str], seed: int, num_inference_steps: int,
                 guidance_scale: float, batch_size: int) -> tuple[Path, list[dict]]:
    """One image per caption (caption i seeded with seed + i) in the generation folder SD_compare_reps uses for
    the same settings: (folder, manifest rows); images already there are read, not generated again."""
    config = generate.GenerationConfig(model=model_name, num_inference_steps=num_inference_steps,
                                       guidance_scale=guidance_scale, seed=seed)
    folder = generate.generation_folder(name, config)
    rows = generate.generate_images(pipe, captions, folder, config, batch_size=batch_size, progress=False)
    return folder, rows


def as_samples(rows: list[dict], resolution: int) -> Samples:
    """Manifest rows -> the detectors' input: images [n, 3, resolution, resolution] in [-1, 1], prompts, seeds."""
    images = representations.load_images([r["path"] for r in rows], resolution)        # [n, 3, H, W]
    return Samples(images, [r["prompt"] for r in rows], [r["seed"] for r in rows])


def control_rows(dose_rows: list[dict], dose_duplications, duplications) -> list[dict]:
    """The rows of the dose set whose title was trained one of `duplications` times (`dose_duplications[i]`: the
    count of row i)."""
    return [row for row, d in zip(dose_rows, dose_duplications) if int(d) in set(duplications)]


def score_methods(pipe, folders: dict[str, Path], set_rows: dict[str, list[dict]], methods, options: dict,
                  ) -> tuple[dict, dict, dict]:
    """Every method on every set, one method at a time, through each folder's score cache (a score cached before
    is read). Returns scores {method: {set: float64 [n]}}, seconds {method: mean detector seconds per image, from
    the calls that computed the scores}, reused {method: how many scores were read from the cache}."""
    scores, seconds, reused = {}, {}, {}
    for name in methods:
        opts = options.get(name, {})
        scores[name], spent, reused[name] = {}, [], 0
        for set_name, rows in set_rows.items():
            indices = [r["index"] for r in rows]
            cached = score_cache.read_scores(folders[set_name], name, opts)
            reused[name] += sum(i in cached for i in indices)
            scores[name][set_name] = score_cache.score_folder(pipe, folders[set_name], name, opts, indices=indices,
                                                              progress=False)               # float64 [n]
            per_image = score_cache.score_seconds(folders[set_name], name, opts)
            spent += [per_image[i] for i in indices]
        seconds[name] = float(np.mean(spent))
    return scores, seconds, reused


def summarize(detector, scores: dict[str, np.ndarray], seconds: float, reused: int, n_boot: int = 1000) -> dict:
    """One row of Table 1 for `detector` (a `Detector`): memorized ("mem") = positive, generalized ("gen") =
    negative; with a "control" set, the AUROC of memorized vs control beside it; Carlini's verdict fractions."""
    pos, neg = scores["mem"], scores["gen"]
    summary = metrics.detection_summary(pos, neg, n_boot=n_boot)
    row = {"label": detector.label, "description": detector.description, "prompt_free": detector.prompt_free,
           "auroc": summary["auroc"], "auroc_ci": summary["auroc_ci"],
           "tpr_at_1pct_fpr": summary["tpr_at_1pct_fpr"],
           "tpr_at_1pct_fpr_official": summary["tpr_at_1pct_fpr_official"], "seconds_per_sample": seconds,
           "scores_read_from_cache": reused, "n_mem": len(pos), "n_gen": len(neg)}
    if "control" in scores:
        row["auroc_vs_low_dose_titles"] = metrics.auroc(pos, scores["control"])
        row["n_control"] = len(scores["control"])
    if detector.name == "carlini":
        for set_name, values in scores.items():
            row[f"verdict_fraction_{set_name}"] = float(carlini.memorized_verdict(values).mean())
    return row


NONCOPYING = "all_vs_noncopying"   # all memorized generations vs the generalized ones that copy nothing


def summarize_by_kind(positives: dict[str, np.ndarray], negatives: np.ndarray, n_boot: int = 1000,
                      negatives_copy: np.ndarray | None = None) -> dict:
    """One method's Table 1 numbers per kind of memorization: {kind: {auroc, auroc_ci, tpr_at_1pct_fpr, n_pos}}
    for each kind's positives (the scores of its generations that its criterion calls memorized) against the same
    negatives (the generalized set), and "all" for every kind's positives pooled. A kind without a memorized
    generation has None in place of the numbers.

    negatives_copy: bool [len(negatives)], which generalized generations copy a training image after all (the
    per-sample truth). When some do, "all_vs_noncopying" pools the positives against the others only: the set
    labels are by prompt, as the paper's, and this row says what the prompt-level labels cost."""
    rows = {}
    negatives = np.asarray(negatives, dtype=np.float64)
    pooled = np.concatenate([np.asarray(p, dtype=np.float64) for p in positives.values()])
    pairs = {kind: (pos, negatives) for kind, pos in {**positives, "all": pooled}.items()}   # row -> (pos, neg)
    if negatives_copy is not None and np.any(negatives_copy):
        pairs[NONCOPYING] = (pooled, negatives[~np.asarray(negatives_copy, dtype=bool)])
    for kind, (pos, neg) in pairs.items():
        if len(pos) == 0:
            rows[kind] = {"auroc": None, "auroc_ci": None, "tpr_at_1pct_fpr": None, "n_pos": 0}
            continue
        rows[kind] = metrics.detection_row(pos, neg, n_boot)
    return rows


def matches_the_best_prompt_based(by_kind: dict[str, dict], prompt_free: dict[str, bool], kind: str,
                                  method: str = "std") -> dict | None:
    """The paper's claim for one kind, by a rule fixed before any score was seen: `method` matches the best
    prompt-based method when its AUROC is at least the lower end of that method's bootstrap CI. by_kind:
    {method: summarize_by_kind(...)}. None when a needed number is missing."""
    based = {m: rows[kind]["auroc"] for m, rows in by_kind.items()
             if not prompt_free[m] and rows[kind]["auroc"] is not None}
    if not based or by_kind.get(method, {}).get(kind, {}).get("auroc") is None:
        return None
    best = max(based, key=based.get)
    ours, low = by_kind[method][kind]["auroc"], by_kind[best][kind]["auroc_ci"][0]
    return {"best_prompt_based": best, "best_auroc": based[best], "best_ci_low": low, "auroc": ours,
            "matches": bool(ours >= low)}


def claim_by_kind(table: dict[str, dict], kinds) -> dict:
    """`matches_the_best_prompt_based` for each kind, over the rows of `table` that have "by_kind" — the paper's
    methods only: the claim is against the detectors the paper compared (the rows since the paper are not)."""
    by_kind = {name: row["by_kind"] for name, row in table.items() if "by_kind" in row and name not in SINCE_PAPER}
    prompt_free = {name: table[name]["prompt_free"] for name in by_kind}
    return {kind: matches_the_best_prompt_based(by_kind, prompt_free, kind) for kind in kinds}


def by_kind_lines(table: dict[str, dict], detectors_by_name: dict, kinds) -> list[str]:
    """The table by kind as text: per method, "AUROC [CI] TPR@1%FPR" per kind, the paper's AUROC beside "all"."""
    width = 26

    def cell(row):
        if row["auroc"] is None:
            return f"{'—':>{width}}"
        low, high = row["auroc_ci"]
        return f"{row['auroc']:.3f} [{low:.2f}, {high:.2f}] {row['tpr_at_1pct_fpr']:.2f}".rjust(width)
    header = {NONCOPYING: "all vs non-copying"}
    lines = [f"{'method':<10}" + "".join(f"{header.get(k, k):>{width}}" for k in kinds) + f"{'paper':>8}"]
    for name, row in table.items():
        paper = paper_numbers(detectors_by_name[name])
        lines.append(f"{name:<10}" + "".join(cell(row["by_kind"][k]) for k in kinds)
                     + ("" if paper is None else f"{paper[0]:8.3f}"))
    first = next(iter(table.values()))["by_kind"]
    lines.append("cells: AUROC [95 % CI] TPR@1%FPR; positives (memorized generations): "
                 + ", ".join(f"{header.get(k, k)} {first[k]['n_pos']}" for k in kinds)
                 + "; negatives: " + ", ".join(f"{header.get(k, k)} {first[k].get('n_neg', '-')}"
                                              for k in kinds if k in ("all", NONCOPYING)))
    return lines


def claim_lines(claim: dict) -> list[str]:
    """One line per kind: std against the best prompt-based method and the rule's verdict."""
    return [f"{kind}: std {v['auroc']:.3f} vs the best prompt-based method, {v['best_prompt_based']} "
            f"{v['best_auroc']:.3f} (CI from {v['best_ci_low']:.3f}): "
            f"{'matches' if v['matches'] else 'does not match'}"
            for kind, v in claim.items() if v is not None]


def add_time_ratios(table: dict[str, dict]) -> None:
    """Each row's seconds per sample as a multiple of the std detector's (`time_ratio_to_std`), if std ran."""
    if "std" in table:
        for row in table.values():
            row["time_ratio_to_std"] = row["seconds_per_sample"] / table["std"]["seconds_per_sample"]


def paper_numbers(detector, family: str = "laion"):
    """The paper's (AUROC, TPR@1%FPR, s/sample) for this detector's row, or None for a row the paper does not
    have (a second setting of a method: wen-4x50, nemo-ssim, lid-cond). A row since the paper: its own paper's
    numbers on SD v1.4 (`SINCE_PAPER`; None entries where it published none)."""
    if detector.name in SINCE_PAPER:
        return SINCE_PAPER[detector.name] if family == "laion" else None
    if detector.name != detector.paper_row:
        return None
    return PAPER_TABLE1.get(detector.paper_row, {}).get(family)


def _num(value, width: int, digits: int = 3) -> str:
    return f"{'':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def laion_lines(table: dict[str, dict], detectors_by_name: dict) -> list[str]:
    """The LAION column as text: this run's numbers, then the paper's for the same row (blank where the paper
    has no such row), the control AUROC where there is a control ("n/a" otherwise)."""
    lines = [f"{'method':<41} {'free':>4} {'AUROC':>6} {'95% CI':>11} {'TPR@1%':>6} {'(off.)':>6} "
             f"{'s/sample':>8} {'x std':>6} {'vs ctrl':>7} | {'paper: AUROC':>12} {'TPR':>5} {'s':>5}"]
    for name, row in table.items():
        if name in SINCE_PAPER and name == next(n for n in table if n in SINCE_PAPER):
            lines.append("since the paper (beside them: their own paper's numbers, its prompts and GPU)")
        paper = paper_numbers(detectors_by_name[name]) or (None, None, None)
        control = row.get("auroc_vs_low_dose_titles")
        lines.append(
            f"{row['label']:<41} {'yes' if row['prompt_free'] else 'no':>4} {row['auroc']:6.3f} "
            f"{row['auroc_ci'][0]:.3f}-{row['auroc_ci'][1]:.3f} {row['tpr_at_1pct_fpr']:6.3f} "
            f"{row['tpr_at_1pct_fpr_official']:6.3f} {row['seconds_per_sample']:8.4f} "
            f"{row.get('time_ratio_to_std', 1.0):6.1f} {'n/a' if control is None else f'{control:.3f}':>7} | "
            f"{_num(paper[0], 12)} {_num(paper[1], 5)} {_num(paper[2], 5)}")
    return lines


def column_lines(columns: dict[str, dict], run_on: dict[str, str], methods, detectors_by_name: dict,
                 width: int = 22) -> list[str]:
    """Table 1's three columns side by side, "AUROC / TPR@1%FPR" per cell. columns {family: {method: row}} (a
    family not run here is absent), run_on {family: model label}. The headings name the model each column ran on;
    a prompt-based method has no cell in a prompt-free column ("N/A (needs a prompt)")."""
    lines = [column_heading(family, run_on[family]) for family in TABLE1_COLUMNS if family in run_on]
    heads = [f"{COLUMN_NAMES[f]}: {run_on_name(run_on[f])}" if f in run_on else f"{COLUMN_NAMES[f]}: not run"
             for f in TABLE1_COLUMNS]
    lines.append(f"{'method':<41} " + " ".join(f"{h:>{width}}" for h in heads))
    for name in methods:
        cells = []
        for family in TABLE1_COLUMNS:
            row = columns.get(family, {}).get(name)
            if row is not None:
                cells.append(f"{row['auroc']:.3f} / {row['tpr_at_1pct_fpr']:.3f}")
            elif family != "laion" and detectors_by_name[name].needs_prompt:
                cells.append("N/A (needs a prompt)")
            else:
                cells.append("not run here")
        lines.append(f"{detectors_by_name[name].label:<41} " + " ".join(f"{c:>{width}}" for c in cells))
    return lines
