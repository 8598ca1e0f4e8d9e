"""The README's summary table: each headline number of the paper beside the one this repo measured, read from
`results/*.json` (what `make figures` writes), never typed by hand.

    python -m common.cli.summary                     # print the table (Markdown)
    python -m common.cli.summary --write README.md   # replace what lies between the README's markers

The same command renders the README's table of run times (between the `times` markers) from
`results/make_figures.json`, which the notebook runner writes, and the training times each notebook's JSON records.

The paper's Table 1 is `detectors.base.PAPER_TABLE1`; its other numbers and claims are `PAPER` below. The "run on"
column comes from each JSON's `model` or `data_source` field, so a number measured on a stand-in says so.
`tests/test_readme.py` fails when the README's table differs from a fresh render.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from ..detectors.base import PAPER_ROW_NAMES, PAPER_TABLE1, SINCE_PAPER, SINCE_PAPER_NAMES
from ..plumbing.paths import RESULTS_DIR

START, END = "<!-- summary:start -->", "<!-- summary:end -->"
KINDS = ("verbatim", "template", "ordinary")      # the CPU testbed's kinds of memorization
TIMES_START, TIMES_END = "<!-- times:start -->", "<!-- times:end -->"

# The paper's numbers and claims beyond Table 1, with where each stands (figure numbers: ICLR camera-ready).
# A value marked † is read off the figure the official repository releases for that notebook (the paper prints
# the picture, not the number); "—" where the paper has no such number.
PAPER = {
    "dae_columns": "5 (cos 1.00)†",                  # Fig 3: the memorizing DAE's live weight columns, each a face
    "dae_rep_std": "1.72 vs 1.29†",                  # Fig 4 (left): std of h(x) for one noisy training face, Mem vs Gen
    "dae_psnr": "4.9 vs 18.6 dB†",                   # the official denoising figure: unseen face, PSNR (peak 1)
    "cor32": "equal",                                # Cor 3.2: stored column norm = sqrt((‖x‖² − nλ)/(‖x‖² + σ²))
    "thm31": "0° (top PCs)",                         # Thm 3.1 / Cor 3.3: each block spans its cluster's top PCs
    "cor34": "all (Fig 6)",                          # Cor 3.4 / Fig 6: duplicated images stored, clusters in blocks
    "transition": "p ≥ n copies, p ≪ n not",         # Cor 3.2 vs 3.3: over- vs under-parameterized regime
    "toy_memorized": "Mem copies, Gen new (Fig 2)",  # Fig 2: toy diffusion samples, shown not counted
    "toy_rep_std": "0.917 vs 0.522†",                # the official toy diffusion notebook's representation figure
    "sd_example_std": "1.467 vs 0.432†",             # Fig 5 (right): the example pair of LAION representations
    "steering": "Mem resists (Fig 7)",               # Fig 7: generalized samples move with α, memorized ones do not
}


class Row(NamedTuple):
    what: str
    paper: str
    here: str
    on: str
    notebook: str


def f3(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def f2(x) -> str:
    return "—" if x is None else f"{x:.2f}"


def ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


STAND_INS = {   # each one's data or model is named in NOTE
    "lfw-standin": "LFW faces",
    "cpu-testbed": "CPU testbed",
    "edm-testbed": "EDM testbed",
    "dit-testbed": "DiT testbed",
    "tiny": "random weights (checks code only)",
}


def run_on(result: dict) -> str:
    """What a results file was measured on, in words: its `model`, else its `data_source`; SMOKE runs say so."""
    name = str(result.get("model") or result.get("data_source") or "?")
    if name.startswith("celeba"):
        text = "CelebA"
    elif "stable-diffusion-v1-4" in name or "sd-v1-4" in name:
        text = "SD v1.4"
    else:
        text = STAND_INS.get(name, name)
    return text + (" (SMOKE)" if result.get("smoke") else "")


def method(name: str) -> str:
    return PAPER_ROW_NAMES[name].replace("The paper", "the paper")


def detection_on(result: dict, n_mem: int, n_gen: int) -> str:
    return f"{run_on(result)}, {n_mem} + {n_gen}"


# One function per notebook: its results JSON -> its rows.
def relu_dae(r: dict) -> list[Row]:
    mem, gen, psnr = r["mem"], r["gen"], r["denoise"]["psnr"]["held-out image"]
    on, nb = run_on(r), "ReLU_DAE"
    return [
        Row("Memorizing DAE (n = 5): live weight columns, each a training face", PAPER["dae_columns"],
            f"{mem['live_units']} (cos ≥ {f3(min(mem['max_cos_live']))})", on, nb),
        Row("Representation std of one noisy training face, Mem vs Gen", PAPER["dae_rep_std"],
            f"{f2(mem['rep_std_one_input'])} vs {f2(gen['rep_std_one_input'])}", on, nb),
        Row("Denoising an unseen face, PSNR (peak 1), Mem vs Gen", PAPER["dae_psnr"],
            f"{psnr['Mem']['psnr_peak1']:.1f} vs {psnr['Gen']['psnr_peak1']:.1f} dB", on, nb),
    ]


def relu_diffusion(r: dict) -> list[Row]:
    mem, gen, seeds = r["mem"], r["gen"], r["mem_seeds"]
    on, nb = run_on(r), "ReLU_Diffusion"
    clean = sum(s["clean"] for s in seeds)
    return [
        Row(f"Toy diffusion: samples that copy a training face, Mem (seed {r['mem_seed']}) vs Gen",
            PAPER["toy_memorized"],
            f"{f2(mem['memorized_fraction_nn_ratio_unit_norm'])} vs {f2(gen['memorized_fraction_nn_ratio_unit_norm'])}",
            on, nb),
        Row("Toy diffusion: representation std of one noisy training face, Mem vs Gen", PAPER["toy_rep_std"],
            f"{f3(mem['rep_std_one_input'])} vs {f3(gen['rep_std_one_input'])}", on, nb),
        Row("Toy diffusion: Mem training runs that end clean (only face units)", "—",
            f"{clean} of {len(seeds)} seeds", on, nb),
    ]


def regimes(r: dict) -> list[Row]:
    faces, nb = run_on(r), "ReLU_DAE_regimes"
    mixture = "Gaussian mixture (ours)"
    mog, hybrid, sweep, sweep_mog = r["mog"], r["hybrid"], r["sweep"], r["sweep_mog"]
    return [
        Row("Cor 3.2: stored column norms vs the closed form", PAPER["cor32"],
            f"within {100 * r['cor32']['max_rel_norm_error']:.1f} %", faces, nb),
        Row("Thm 3.1: angle of each cluster's units to its top principal subspace (mean)", PAPER["thm31"],
            f"{mog['mean_principal_angle_deg']:.1f}°", mixture, nb),
        Row("Cor 3.4: duplicated images given a copying column", PAPER["cor34"],
            f"{round(hybrid['duplicated_with_copy_column_fraction'] * hybrid['duplicates'])} of {hybrid['duplicates']}",
            mixture, nb),
        Row("Transition at p = 100: n/p where copying stops, faces / mixture", PAPER["transition"],
            f"{f2(sweep['transition_n_over_p'])} / {f2(sweep_mog['transition_n_over_p'])}", f"{faces}; mixture", nb),
        Row("Transition: n/p where training error reaches half the unseen error, faces / mixture", "—",
            f"{sweep['gap_transition_n_over_p']:.1f} / {sweep_mog['gap_transition_n_over_p']:.1f}",
            f"{faces}; mixture", nb),
    ]


def testbed(r: dict) -> list[Row]:
    kinds = r["ground_truth_by_kind"]
    return [Row("Generations that copy a training image: memorized titles vs held-out captions", "—",
                f"{f2(r['memorized_caption_copy_fraction'])} vs {f2(r['generalizing_caption_copy_fraction'])}",
                run_on(r), "CPU_testbed"),
            Row("Generations memorized, by kind: verbatim / template / ordinary caption", "—",
                by_kind_with_spread([kinds[k]["memorized_fraction"] for k in KINDS], r,
                                    [f"memorized_by_kind.{k}" for k in KINDS]), run_on(r), "CPU_testbed")]


def sd_compare_reps(r: dict) -> list[Row]:
    on, nb = detection_on(r, r["n_pos"], r["n_neg"]), "SD_compare_reps"
    auroc, tpr, _ = PAPER_TABLE1["std"]["laion"]
    ex = r["example"]
    return [
        Row("std detector: AUROC", f3(auroc), f3(r["auroc"]), on, nb),
        Row("std detector: TPR@1%FPR", f3(tpr), f3(r["tpr_at_1pct_fpr"]), on, nb),
        Row("Example representation std, Mem vs Gen", PAPER["sd_example_std"],
            f"{f3(ex['mem_std'])} vs {f3(ex['gen_std'])}", run_on(r), nb),
    ]


def table1(r: dict) -> list[Row]:
    laion, nb = r["laion"], "Table1_detection"
    on = detection_on(r, r["n"]["mem"], r["n"]["gen"])
    rows = [Row(f"Table 1, LAION: {method(m)}, AUROC", f3(PAPER_TABLE1[m]["laion"][0]),
                with_spread(f3(laion[m]["auroc"]), r, f"methods.{m}.auroc") if m in laion else "not run", on, nb)
            for m in PAPER_TABLE1]
    paper_rank = sorted(PAPER_TABLE1, key=lambda m: -PAPER_TABLE1[m]["laion"][0]).index("std") + 1
    rank = r["rank_by_auroc"]
    here = f"{ordinal(rank.index('std') + 1)} of {len(rank)} (with variants)" if "std" in rank else "not run"
    rows.append(Row("Table 1, LAION: rank of the std detector by AUROC", f"{ordinal(paper_rank)} of {len(PAPER_TABLE1)}",
                    here, on, nb))
    rows += [Row(f"Since the paper: {name}, AUROC", f"{f3(SINCE_PAPER[m][0])} (theirs)",
                 with_spread(f3(laion[m]["auroc"]), r, f"methods.{m}.auroc"), on, nb)
             for m, name in SINCE_PAPER_NAMES.items() if m in laion]
    if "by_kind" in laion.get("std", {}):
        by_kind = {m: laion[m]["by_kind"] for m in ("std", "wen")}
        rows += [Row(f"Table 1 by kind (verbatim / template / ordinary): {method(m)}, AUROC", "—",
                     " / ".join(f3(by_kind[m][k]["auroc"]) for k in KINDS), run_on(r), nb) for m in by_kind]
    return rows


def with_spread(text: str, r: dict, key: str, fmt: Callable = f3) -> str:
    """A testbed number of the default run, and where the notebook's JSON has a seed spread (`make sweeps`), its range
    over the training seeds: "0.952 (seeds 0.917–0.968)"."""
    spread = (r.get("seed_spread") or {}).get(key)
    return text if spread is None else f"{text} (seeds {fmt(spread['min'])}–{fmt(spread['max'])})"


def by_kind_with_spread(values: list, r: dict, keys: list[str]) -> str:
    """Numbers per kind, "a / b / c", and where the JSON has a seed spread their ranges: "(seeds a0–a1 / ...)"."""
    text = " / ".join(f2(v) for v in values)
    spreads = [(r.get("seed_spread") or {}).get(key) for key in keys]
    if any(s is None for s in spreads):
        return text
    ranges = " / ".join(f"{f2(s['min'])}–{f2(s['max'])}" for s in spreads)
    return f"{text} (seeds {ranges})"


def other_column(column: str, name: str, nb: str) -> Callable[[dict], list[Row]]:
    """Table 1's ImageNet (DiT) or CIFAR10 (EDM) column, from the notebook that measures it."""
    def rows(r: dict) -> list[Row]:
        cells = r[column]
        on = detection_on(r, cells["std"]["n_mem"], cells["std"]["n_gen"])
        return [Row(f"Table 1, {name}: {method(m)}, AUROC", f3(PAPER_TABLE1[m][column][0]),
                    with_spread(f3(cells[m]["auroc"]), r, f"{m}.auroc"), on, nb) for m in ("lid", "std")]
    return rows


def dit(r: dict) -> list[Row]:
    steering = r["steering"]
    alpha = 1.0
    ratio = steering["ratio_rare_over_common"].get(str(alpha))
    return other_column("imagenet", "ImageNet", "DiT_testbed")(r) + [
        Row(f"Steering a DiT: rare-class (memorized) over common-class change at α = {alpha:g}", "— (SD only)",
            with_spread(f2(ratio), r, "steering_ratio", f2), run_on(r), "DiT_testbed")]


def sd_steering(r: dict) -> list[Row]:
    return [Row(f"Steering: memorized over generalized change at α = {r['steerability_ratio_alpha']:g} (pixels)",
                PAPER["steering"], with_spread(f2(r["steerability_ratio_mem_over_gen"]), r, "steering_ratio", f2),
                run_on(r), "SD_steering")]


SECTIONS: tuple[tuple[str, Callable[[dict], list[Row]]], ...] = (
    ("ReLU_DAE", relu_dae),
    ("ReLU_Diffusion", relu_diffusion),
    ("ReLU_DAE_regimes", regimes),
    ("CPU_testbed", testbed),
    ("SD_compare_reps", sd_compare_reps),
    ("Table1_detection", table1),
    ("DiT_testbed", dit),
    ("EDM_testbed", other_column("cifar10", "CIFAR10", "EDM_testbed")),
    ("SD_steering", sd_steering),
)

NOTE = ("Paper: the ICLR camera-ready (Table 1: 500 + 500 samples on LAION and ImageNet, 100 + 100 on CIFAR10); "
        "† read off the official repository's released figure; — no such number; \"(theirs)\": the row's own paper, "
        "on SD v1.4. Stand-ins: LFW faces for CelebA, the CPU testbed for SD v1.4, the EDM testbed (photo crops) for "
        "CIFAR10, the DiT testbed (drawn scenes) for ImageNet. "
        "\"run on\" names the model or data and, for detection, the memorized + generalized sample counts. Testbed "
        "numbers: the default run (seed 0); \"seeds a–b\": the range over training seeds 0–2 (`make sweeps`).")


def rows(results_dir: Path = RESULTS_DIR) -> list[Row]:
    out = []
    for stem, make in SECTIONS:
        path = Path(results_dir) / f"{stem}.json"
        if not path.is_file():
            out.append(Row(f"({path.name} not written yet: run `make figures`)", "", "", "", stem))
            continue
        try:
            out += make(json.loads(path.read_text()))
        except (KeyError, ValueError, TypeError) as err:     # a run that wrote fewer keys (SMOKE, a METHODS subset)
            out.append(Row(f"({path.name}: no {err} to report)", "", "", "", stem))
    return out


def render(results_dir: Path = RESULTS_DIR) -> str:
    """The table in Markdown, with its note."""
    lines = ["| what | paper | here | run on | notebook |", "|---|---|---|---|---|"]
    lines += [f"| {r.what} | {r.paper} | {r.here} | {r.on} | `{r.notebook}` |" for r in rows(results_dir)]
    return "\n".join(lines) + "\n\n" + NOTE + "\n"


# ----------------------------------------------------------------------------------------------------
# Run times: the last in-place run of each notebook, and the training its JSON records
# ----------------------------------------------------------------------------------------------------
def _sum(*values):
    return None if any(v is None for v in values) else sum(values)


# Seconds of training each notebook's models took when they were trained (the JSON keeps it when a later run loads
# them from the cache), or a few words where the notebook trains nothing of its own or retrains every run.
TRAINING: dict[str, Callable[[dict], float | str | None]] = {
    "ReLU_DAE": lambda r: _sum(r["train_seconds"]["mem"], r["train_seconds"]["gen"]),
    "ReLU_Diffusion": lambda r: r["train_seconds"]["total"],
    "ReLU_DAE_regimes": lambda r: "retrains every run",
    "CPU_testbed": lambda r: r["train_seconds"],
    "SD_compare_reps": lambda r: "the CPU testbed's",
    "Table1_detection": lambda r: "the CPU testbed's",
    "DiT_testbed": lambda r: r["train_seconds"],
    "EDM_testbed": lambda r: r["train_seconds"],
    "SD_steering": lambda r: "the CPU testbed's",
}


def minutes(seconds) -> str:
    if seconds is None:
        return "—"
    if isinstance(seconds, str):
        return seconds
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def render_times(results_dir: Path = RESULTS_DIR) -> str:
    """Each notebook's wall time in the last `make figures` (its models and generations cached or not, as that
    run found them) and the training time its JSON records, in Markdown."""
    path = Path(results_dir) / "make_figures.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    wall = record.get("seconds", {})
    lines = ["| notebook | last `make figures` | training, when not cached |", "|---|---|---|"]
    for stem, _ in SECTIONS:
        result = Path(results_dir) / f"{stem}.json"
        try:
            trained = TRAINING[stem](json.loads(result.read_text())) if result.is_file() else None
        except (KeyError, TypeError):
            trained = None
        lines.append(f"| `{stem}` | {minutes(wall.get(stem))} | {minutes(trained)} |")
    total = sum(wall.get(stem, 0) for stem, _ in SECTIONS)
    lines.append(f"| all | {minutes(total) if wall else '—'} | |")
    machine = (f"{record.get('cpu_count')} cores ({record.get('cpu', '?')}), {record.get('threads')} torch threads"
               if record else "not recorded yet")
    return "\n".join(lines) + f"\n\nMachine of the last run: {machine}.\n"


def replace_between_markers(text: str, table: str, start: str = START, end: str = END) -> str:
    """`text` with what lies between `start` and `end` replaced by `table`; an error if the markers are missing."""
    head, found_start, rest = text.partition(start)
    _, found_end, tail = rest.partition(end)
    if not found_start or not found_end:
        raise ValueError(f"the markers {start} and {end} are not both in the file")
    return f"{head}{start}\n{table}{end}{tail}"


def between_markers(text: str, start: str = START, end: str = END) -> str:
    return text.partition(start)[2].partition(end)[0].removeprefix("\n")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.cli.summary", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="the folder of results JSON (default: results/)")
    p.add_argument("--write", type=Path, metavar="FILE", help="replace the table between the markers in FILE")
    args = p.parse_args(argv)
    table = render(args.results)
    if args.write is None:
        print(table + "\n" + render_times(args.results), end="")
    else:
        text = replace_between_markers(args.write.read_text(), table)
        text = replace_between_markers(text, render_times(args.results), TIMES_START, TIMES_END)
        args.write.write_text(text)
        print(f"{args.write}: summary table ({len(table.splitlines()) - 4} rows) and run times written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
