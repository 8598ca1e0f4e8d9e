"""The CPU testbed's verdicts for one trained model, as its three notebooks measure them — the seed spread's unit
(`training_sweep`, testbed "cpu").

    memorized_by_kind   per kind (verbatim, template, ordinary) the share of its generations that its criterion
                        calls memorized (`CPU_testbed.ipynb`, section 4); memorized_fraction: all kinds pooled
    gen_copy_fraction   held-out captions whose generation copies a training image after all
    methods             every Table 1 method on the same generations (`Table1_detection.ipynb`): the LAION column
                        (verbatim titles vs held-out captions: AUROC, CI, TPR@1%FPR) and its AUROC by kind
    std, lid            the column's std and (prompt-free) LID rows, as the other testbeds' sweeps name them
    steering_ratio      memorized over generalized pixel change at α = 0.5 (`SD_steering.ipynb`), and by α

The settings are the notebooks' defaults (generation: DDIM 50, CFG 7.5, caption i of a set seeded with its seed + i;
steering: the official window, 50 references a side, 3 seeds per prompt). Generations and scores go to the same
cache folders as the notebooks', keyed by the model, so the default model's numbers are read, not recomputed.
"""
from __future__ import annotations

import time

import numpy as np

from . import get as get_detector
from . import TABLE_ROWS, metrics, nemo, table1

SET_SEEDS = {"mem": 0, "gen": 10}   # Table1_detection's MEM_SEED, GEN_SEED (the kinds' seeds: cpu_testbed.KIND_SETS)
CARLINI_TAU = 0.1                   # Table1_detection's CARLINI_TAU


def steering_ratios(pipe, model_name: str, n_ref: int = 50, num_inference_steps: int = 40, last_n: int = 20,
                    skip_last: int = 2, seeds_per_prompt: int = 3, batch_size: int = 4,
                    extract_batch: int = 16) -> dict[float, float | None]:
    """SD_steering.ipynb's pixel ratio (memorized over generalized change) at each α of the model's steering task;
    the defaults are the notebook's (`steerability`, `steerer`: the official window, steps 18-37 of 40)."""
    from ..families import family_of
    from ..models import generate, representations
    from ..steering import steerability, steerer

    task = family_of(model_name).steering_task(model_name)
    resolution = representations.pipeline_resolution(pipe)
    references = {}
    for side, prompt, seed in (("POS", task.pos_prompt, steerability.POS_SEED),
                               ("NEG", task.neg_prompt, steerability.NEG_SEED)):
        config = generate.GenerationConfig(model=model_name, num_inference_steps=num_inference_steps,
                                           guidance_scale=steerability.REFERENCE_GUIDANCE, seed=seed)
        rows = steerability.generate_references(pipe, prompt, n_ref, config,
                                                batch_size=batch_size, progress=False)
        references[side] = representations.load_images([r["path"] for r in rows], resolution)   # [N, 3, H, W]
    vectors = steerer.concept_vectors(pipe, references["POS"], task.pos_prompt, steerer.STEERING_LAYERS,
                                      batch_size=extract_batch, progress=False)                # {layer: [C]}
    reps = steerability.reference_representations(pipe, references, extract_batch)           # {side: [N, C]}
    window = steerer.StepWindow.last(num_inference_steps, last_n, skip_last)
    measures = {}
    for group, prompts, seed in (("gen", task.gen_prompts, steerability.GEN_SEED),
                                 ("mem", task.mem_prompts, steerability.MEM_SEED)):
        config = generate.GenerationConfig(model=model_name, num_inference_steps=num_inference_steps,
                                           guidance_scale=steerability.STEERING_GUIDANCE, seed=seed)
        rows = steerability.generate_steered(
            pipe, steerability.group_prompts(prompts, seeds_per_prompt), vectors,
            [float(a) for a in task.alphas], window, config, group, batch_size=batch_size, progress=False)
        measures[group] = steerability.measure_group(pipe, rows, reps["POS"].mean(axis=0), reps["NEG"].mean(axis=0),
                                                     batch_size=extract_batch, progress=False)
    return steerability.pixel_ratio_by_alpha(measures["mem"], measures["gen"])


def cpu_verdicts(config, methods=TABLE_ROWS, num_inference_steps: int = 50, guidance_scale: float = 7.5,
                 lid_trace: str = "auto", carlini_generations: int = 10, steering_alpha: float = 0.5,
                 steer_n_ref: int = 50, steer_steps: int = 40, steer_last_n: int = 20, steer_skip_last: int = 2,
                 steer_seeds_per_prompt: int = 3, n_boot: int = 1000, n_pictures: int = 8,
                 gen_batch: int = 8, n_held_out: int | None = None) -> dict:
    """The verdicts of the CPU testbed trained with `config` (trained on first use, then cached); "pictures": the
    first `n_pictures` held-out generations [n, 3, H, W] in [-1, 1]. The defaults are the notebooks'; n_held_out
    (None: all held-out captions, as Table 1) makes a SMOKE run short."""
    from ..families import family_of, load
    from ..models.representations import pipeline_resolution
    from ..testbeds import cpu_testbed
    from ..testbeds.training import read_info

    folder = cpu_testbed.ensure_testbed(config, progress=False)
    model_name, info = str(folder), read_info(folder)
    pipe, data = load(model_name, device="cpu"), cpu_testbed.load_data(folder)
    resolution = pipeline_resolution(pipe)
    settings = dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, batch_size=gen_batch)
    mem, gen = cpu_testbed.prompt_records(folder)            # every memorized title and held-out caption
    gen = gen[:n_held_out]
    folders, rows = {}, {}
    for name, records in (("mem", mem), ("gen", gen)):
        folders[name], rows[name] = table1.generate_set(pipe, model_name, name, [r.prompt for r in records],
                                                        SET_SEEDS[name], **settings)
    memorized = {}                                           # kind -> bool [generations of its set]
    for kind, (set_name, seed, per_caption) in cpu_testbed.KIND_SETS.items():
        captions, named = cpu_testbed.kind_prompts(data, kind, per_caption)
        if set_name not in rows:
            folders[set_name], rows[set_name] = table1.generate_set(pipe, model_name, set_name, captions, seed,
                                                                    **settings)
        images = table1.as_samples(rows[set_name], resolution).images                    # [n, 3, H, W]
        memorized[kind] = cpu_testbed.kind_ground_truth(images, data, kind, named)["memorized"]
    held_out = table1.as_samples(rows["gen"], resolution).images                           # [n, 3, H, W]
    gen_copies = family_of(model_name).copies_training_image(model_name, held_out)

    t0 = time.perf_counter()
    options = {"lid": dict(trace=lid_trace), "lid-cond": dict(trace=lid_trace),
               "carlini": dict(n_generations=carlini_generations, tau=CARLINI_TAU)}
    if "nemo" in methods:
        options["nemo"] = dict(statistics=nemo.reference_statistics(pipe, cpu_testbed.calibration_prompts(folder)))
    scores, seconds, _ = table1.score_methods(pipe, folders, rows, methods, options)
    kind_set = {kind: set_name for kind, (set_name, _, _) in cpu_testbed.KIND_SETS.items()}
    table = {}
    for name in methods:
        by_kind = table1.summarize_by_kind({k: scores[name][s][memorized[k]] for k, s in kind_set.items()},
                                           scores[name]["gen"], n_boot, negatives_copy=gen_copies)
        table[name] = {**metrics.detection_row(scores[name]["mem"], scores[name]["gen"], n_boot),
                       "prompt_free": get_detector(name).prompt_free, "seconds_per_sample": seconds[name],
                       "by_kind": {k: row["auroc"] for k, row in by_kind.items()}}
    pooled = np.concatenate(list(memorized.values()))
    out = {"steps": config.steps, "seed": config.seed, "train_seconds": info["train_seconds"],
           "memorized_by_kind": {k: float(v.mean()) for k, v in memorized.items()},
           "memorized_fraction": float(pooled.mean()), "gen_copy_fraction": float(gen_copies.mean()),
           "methods": table, "scoring_seconds": time.perf_counter() - t0,
           "pictures": held_out[:n_pictures].numpy()}
    out.update({k: table[k] for k in ("std", "lid") if k in table})
    if "std" in table and "lid" in table:
        out["std_beats_lid"] = bool(table["std"]["auroc"] > table["lid"]["auroc"])
    by_alpha = steering_ratios(pipe, model_name, steer_n_ref, steer_steps, steer_last_n, steer_skip_last,
                               steer_seeds_per_prompt, batch_size=min(gen_batch, 4))
    out["steering_ratio_by_alpha"] = {str(a): r for a, r in by_alpha.items()}
    out["steering_ratio"] = by_alpha.get(steering_alpha)
    out["steering_alpha"] = steering_alpha
    return out
