"""Score a generation folder with detectors of the family, on one process or sharded over many; the scores are
cached beside the images (`detectors/scores.py`), so a notebook or a rerun finds them.

    python -m common.cli.score .cache/generations/cpu-testbed-...-mem-... --detector std wen
    accelerate launch --multi_gpu --num_processes 8 -m common.cli.score <folder> --detector carlini \
        --option n_generations=10
    torchrun --nproc_per_node 2 -m common.cli.score <folder> --cpu --detector std --chunk 8

The model is the one that made the images (the folder's generation.json). Images are split between the processes in
whole chunks of --chunk consecutive images; each process writes its own score file. Options go to the detector as
key=value (values read as JSON); re-sampling detectors run the generation's steps and guidance unless told. The
scores land where the notebooks look (`<folder>/scores/`): `SD_compare_reps` and `Table1_detection` read them
instead of computing them again when the options agree (an option equal to its default counts as not given; pass no
batch_size to share them).
NeMo ("nemo") needs reference statistics: --statistics released (SD v1.4's, downloaded once), a .pt file, or
calibration (the CPU testbed: computed from its pool captions, as Table1_detection does, so the scores match).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from ..families import family_of, load
from ..detectors.scores import DEFAULT_CHUNK, SCORES_DIR, read_scores, score_files, score_folder
from ..plumbing.shard import current_shard
from . import parse_option, remove_stale_temporaries, add_runtime_arguments, set_threads


def parser() -> argparse.ArgumentParser:
    from ..detectors import DETECTORS

    p = argparse.ArgumentParser(prog="python -m common.cli.score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path, help="generation folders (each with generation.json)")
    p.add_argument("--detector", nargs="+", required=True, choices=list(DETECTORS), help="one or more detectors")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a detector option (repeatable)")
    p.add_argument("--statistics", help="NeMo's reference statistics: 'released', a .pt file, or 'calibration' "
                                        "(CPU testbed: from its pool captions)")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="images per detector call and per unit of work")
    add_runtime_arguments(p)
    return p


def calibration_statistics(statistics: str | None, model: str, pipe) -> dict:
    """{"statistics": NeMo's reference statistics from the testbed's calibration captions} for --statistics
    calibration (the same values `Table1_detection` computes, so the cache keys agree), else {}."""
    if statistics != "calibration":
        return {}
    from ..detectors.nemo import reference_statistics

    try:
        calibration = family_of(model).calibration_prompts(model)
    except ValueError as err:
        raise SystemExit(f"--statistics calibration is for a model with calibration prompts (the CPU testbed): {err} "
                         "(SD v1.4: --statistics released)") from None
    return {"statistics": reference_statistics(pipe, calibration)}


def main(argv: Sequence[str] | None = None) -> int:
    from ..models.generate import CONFIG_NAME
    args = parser().parse_args(argv)
    set_threads(args.threads)
    options = dict(parse_option(o) for o in args.option)
    shard = current_shard(cpu=True if args.cpu else None)
    with shard.main_first():                # the main process clears a killed run's leftovers, downloads once
        if shard.main:
            for folder in args.folders:
                remove_stale_temporaries(folder / SCORES_DIR)
        if args.statistics and args.statistics != "calibration":
            from ..detectors.nemo import load_statistics

            options["statistics"] = load_statistics(None if args.statistics == "released" else args.statistics)
    pipes, model_options, folder_options = {}, {}, {}
    for folder in args.folders:
        model = json.loads((folder / CONFIG_NAME).read_text())["model"]
        if model not in pipes:
            pipes[model] = load(model, device=shard.device, dtype=args.dtype)
            model_options[model] = {**options, **calibration_statistics(args.statistics, model, pipes[model])}
        folder_options[folder] = model_options[model]
        for name in args.detector:
            score_folder(pipes[model], folder, name, folder_options[folder], args.chunk, shard, progress=shard.main)
    shard.wait()
    if shard.main:
        for folder, options in folder_options.items():
            for name in args.detector:
                scores = list(read_scores(folder, name, options).values())
                files = ", ".join(p.name for p in score_files(folder, name, options))
                print(f"{folder.name} {name}: {len(scores)} scores, median {np.median(scores):.6g} ({files})",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
