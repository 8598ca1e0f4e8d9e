"""Generate a prompt set into the cache folder the notebooks use, on one process or sharded over many.

    python -m common.cli.generate --model testbed --prompts mem
    python -m common.cli.generate --model tiny --prompts my_prompts.txt --steps 4
    accelerate launch --multi_gpu --num_processes 8 -m common.cli.generate --model CompVis/stable-diffusion-v1-4 \
        --prompts mem
    torchrun --nproc_per_node 2 -m common.cli.generate --cpu --model tiny --prompts my_prompts.txt

--prompts "mem" / "gen" is the model's detection set, as the notebooks draw it: for SD, Wen et al.'s memorized LAION
captions / the Gustavosta prompts (seeds 0 / 10); for the CPU testbed, its memorized titles / held-out captions. A
file (.txt, .jsonl, .csv) is read by `prompts.read_prompt_file` (seed 0). The folder is
`generate.generation_folder(set, config)`, the notebooks' own for the same settings. The prompts are split between
the processes in whole batches of --batch-size (`plumbing/shard.py`); each process writes its images and its own manifest,
`manifest.rank<k>.jsonl`. Rerunning the command finishes only what is missing; another config in the same folder
is refused.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from ..families import choose_model, family_of, load, resolve_model
from ..models.generate import (GUIDANCE_SCALE, GEN_SEED, MANIFEST_NAME, MEM_SEED, NUM_INFERENCE_STEPS, GenerationConfig,
                        generate_images, generation_folder, read_manifest)
from ..models.prompts import read_prompt_file
from ..plumbing.paths import GENERATION_CACHE
from ..plumbing.shard import Shard, current_shard, unit_batches
from . import remove_stale_temporaries, add_runtime_arguments, set_threads

NAMED_SETS = {"mem": MEM_SEED, "gen": GEN_SEED}      # the detection sets and the notebooks' seeds


def load_prompt_set(model: str, which: str, n: int | None = None) -> list[str]:
    """The first `n` prompts (all if None) of the named set "mem"/"gen" of `model` (a resolved model name: its
    family's `prompt_set`), or of a prompt file."""
    if which not in NAMED_SETS:
        texts = [r.prompt for r in read_prompt_file(which)]
        return texts if n is None else texts[:n]
    return family_of(model).prompt_set(model, which, n)


def run(pipe, prompts: Sequence[str], folder, config: GenerationConfig, batch_size: int, shard: Shard = Shard(),
        progress: bool = True) -> list[dict]:
    """This process's share of `prompts` (whole batches, `shard.unit_batches`) generated into `folder`, its rows
    written to its own manifest. One process: exactly `generate.generate_images`."""
    if shard.count == 1:
        return generate_images(pipe, prompts, folder, config, batch_size, progress)
    mine = [i for batch in shard.split(unit_batches(len(prompts), batch_size)) for i in batch]
    return generate_images(pipe, prompts, folder, config, batch_size, progress, indices=mine,
                           manifest=shard.file_name(MANIFEST_NAME))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m common.cli.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="hub id, diffusers folder, 'testbed' or 'tiny' (default: SD v1.4 where it can "
                                   "run, else the CPU testbed, as the notebooks)")
    p.add_argument("--prompts", required=True, help="'mem', 'gen' or a prompt file (.txt, .jsonl, .csv)")
    p.add_argument("--n", type=int, help="the first n prompts (default: all; 500 for SD's 'gen')")
    p.add_argument("--set", dest="set_name", help="the set's name in the folder name (default: mem, gen or the "
                                                  "file's stem)")
    p.add_argument("--seed", type=int, help="prompt i uses seed + i (default: 0 for mem and files, 10 for gen)")
    p.add_argument("--steps", type=int, default=NUM_INFERENCE_STEPS, help="DDIM steps (default %(default)s)")
    p.add_argument("--guidance", type=float, default=GUIDANCE_SCALE, help="CFG scale (default %(default)s)")
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--batch-size", type=int, default=4, help="prompts per pipeline call and per unit of work")
    p.add_argument("--cache", type=Path, default=GENERATION_CACHE, help="root of the generation folders")
    add_runtime_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    set_threads(args.threads)
    shard = current_shard(cpu=True if args.cpu else None)
    named = args.prompts in NAMED_SETS
    seed = args.seed if args.seed is not None else NAMED_SETS.get(args.prompts, 0)
    set_name = args.set_name or (args.prompts if named else Path(args.prompts).stem)
    with shard.main_first():                # the testbed is trained and the lists downloaded once, by the main process
        model = resolve_model(choose_model(args.model))
        prompts = load_prompt_set(model, args.prompts, args.n)
        config = GenerationConfig(model=model, num_inference_steps=args.steps, guidance_scale=args.guidance,
                                  height=args.height, width=args.width, seed=seed)
        folder = generation_folder(set_name, config, args.cache)
        if shard.main:
            remove_stale_temporaries(folder)
    pipe = load(model, device=shard.device, dtype=args.dtype)
    t0 = time.perf_counter()
    mine = run(pipe, prompts, folder, config, args.batch_size, shard, progress=shard.main)
    print(f"process {shard.index} of {shard.count}: {len(mine)} prompts done in {time.perf_counter() - t0:.2f} s",
          flush=True)
    shard.wait()
    if shard.main:
        rows, _ = read_manifest(folder)
        done = sum(1 for r in rows if r["index"] < len(prompts))
        print(f"{folder}: {done} of {len(prompts)} images", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
