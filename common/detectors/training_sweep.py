"""Training length and training seed against a testbed's verdicts: is a number a finding, or one short CPU run?

Each variant retrains a testbed with one setting changed — `steps` × 1, 2, 4 (the length sweep) or `seed` 0, 1, 2
(the seed spread; the data stay the same, only the initialization and the batches change) — and measures the
verdicts its notebook reports, with the notebook's settings and the same library calls:

    memorized_fraction      samples that copy a training image by the testbed's criterion (EDM: all samples; DiT:
                            rare-class samples copying their class's scene; CPU testbed: the generations of its
                            three kinds, each by its kind's criterion, also per kind)
    gen_nn_correlation      sample quality of the generalizing regime: the median Pearson correlation of the
                            generalized samples (EDM: not copies; DiT: common classes) with their nearest training
                            image — a smeared sample correlates with nothing
    std, lid                AUROC (bootstrap CI) and TPR@1%FPR of Mem vs Gen; std_beats_lid their order
    jacobian (EDM, lengths) App. B.3's numbers on `n_jacobian` samples per group
    steering_ratio          DiT: rare-class over common-class pixel change at α = 1; CPU testbed: memorized over
                            generalized at α = 0.5 (SD_steering)
    methods (CPU testbed)   every Table 1 method's AUROC, CI, TPR@1%FPR and AUROC by kind (`cpu_testbed_verdicts`)

The CPU testbed has the seed spread only (its length is fixed by the 45-minute budget of `make figures`).

Models are cached by config (`ensure_*_testbed`); the ×1 seed-0 variant is the default model, so its numbers are
the notebook's. `python -m common.cli.sweeps` (`make sweeps`) runs them and writes `results/sweeps/<testbed>.json`;
the testbed notebook reads that file when its default config key matches and reports it.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import time
from pathlib import Path

import numpy as np
import torch

from . import get as get_detector
from . import lid, metrics
from .base import Samples
from .cpu_testbed_verdicts import cpu_verdicts
from ..plumbing.checkpoints import config_key
from ..testbeds.copies import pearson_nearest

LENGTHS = (1, 2, 4)                 # multiples of the default `steps`
SEEDS = (0, 1, 2)                   # training seeds (seed 0 is the default run)
TESTBEDS = ("edm", "dit", "cpu")
RESULT_NAMES = {"edm": "EDM_testbed", "dit": "DiT_testbed", "cpu": "CPU_testbed"}
DEFAULT_LENGTHS = {"edm": LENGTHS, "dit": LENGTHS, "cpu": ()}   # the CPU testbed: the seed spread only


def variants(config, lengths=LENGTHS, seeds=SEEDS) -> dict[str, tuple[str, object]]:
    """name -> (sweep, config): "steps x<k>" for the length sweep at seed `config.seed`, "seed <s>" for the seed
    spread at the default length. The default model belongs to both."""
    out = {f"steps x{k}": ("length", dataclasses.replace(config, steps=k * config.steps)) for k in lengths}
    out.update({f"seed {s}": ("seed", dataclasses.replace(config, seed=s)) for s in seeds})
    return out


def default_key(config) -> str:
    """The config key of the default model the sweep was run around (the notebook compares it with its own)."""
    return config_key(config.to_dict())


def edm_verdicts(config, n_samples: int = 1000, num_steps: int = 18, n_detect: int = 100, sigma: float = 0.17,
                 layer: str = "up_blocks.0.resnets.2.nonlinearity", pooling: str = "spatial_max",
                 lid_trace: str = "hutchinson", n_jacobian: int = 4, n_boot: int = 1000,
                 n_pictures: int = 8, untrained_split: bool = False) -> dict:
    """The EDM notebook's verdicts for the model of `config` (trained on first use). n_jacobian 0 skips App. B.3.
    untrained_split: where too few samples copy (a SMOKE model), Mem/Gen = the lower/upper half by the criterion's
    ratio, as the notebook's SMOKE run (checks the code, measures nothing)."""
    from ..testbeds import edm_testbed

    denoiser, data, info = edm_testbed.open_model(None, None, config)
    samples, _ = edm_testbed.cached_samples(info["model"], n_samples, num_steps, progress=False)   # [N, 3, H, W]
    truth = edm_testbed.ground_truth(samples, data)
    mem, gen = np.flatnonzero(truth["memorized"]), np.flatnonzero(~truth["memorized"])
    if min(len(mem), len(gen)) < 2 and untrained_split:
        order = np.argsort(truth["ratio"])
        mem, gen = np.sort(order[:len(order) // 2]), np.sort(order[len(order) // 2:])
    n = min(n_detect, len(mem), len(gen))
    if n < 2:
        raise RuntimeError(f"{config}: {len(mem)} memorized and {len(gen)} generalized samples, no detection set")
    sets = {"Mem": samples[mem[:n]], "Gen": samples[gen[:n]]}
    correlation, _ = pearson_nearest(samples[gen], data.model_space())
    std = {k: get_detector("std").score(denoiser, Samples(v), layer=layer, pooling=pooling, sigma=sigma)
           for k, v in sets.items()}
    lid_scores = {k: get_detector("lid").score(denoiser, Samples(v), trace=lid_trace) for k, v in sets.items()}
    out = {"steps": config.steps, "seed": config.seed, "train_seconds": info["train_seconds"],
           "memorized_fraction": float(truth["memorized"].mean()), "n_detect": n,
           "gen_nn_correlation": float(np.median(correlation)),
           **{k: metrics.detection_row(v["Mem"], v["Gen"], n_boot) for k, v in (("std", std), ("lid", lid_scores))},
           "pictures": samples[gen[:n_pictures]].numpy()}
    out["std_beats_lid"] = bool(out["std"]["auroc"] > out["lid"]["auroc"])
    if n_jacobian:
        spectra = {k: [lid.jacobian_spectrum(lambda rows: denoiser(rows, sigma), v[i]) for i in range(n_jacobian)]
                   for k, v in sets.items()}
        out["jacobian"] = {k: {"effective_rank_median": float(np.median([r["effective_rank"] for r in runs])),
                               "top_vector_cos_median": float(np.median([r["top_vector_cos_with_sample"]
                                                                         for r in runs])),
                               "n": len(runs)}
                           for k, runs in spectra.items()}
    return out


def dit_verdicts(config, n_rare: int = 500, n_common: int = 500, num_steps: int = 50, guidance: float = 4.0,
                 timestep: int = 50, pooling: str = "spatial_max", lid_trace: str = "hutchinson",
                 steer_alphas=(0.0, 1.0), n_steer: int = 20, steer_class: int = 4, n_boot: int = 1000,
                 n_pictures: int = 8, untrained_split: bool = False) -> dict:
    """The DiT notebook's verdicts (null label, its default block) for the model of `config`. untrained_split:
    where too few samples copy (a SMOKE model), Mem/Gen = rare-/common-class samples, as the notebook's SMOKE run."""
    from ..models import dit
    from ..steering import dit_steering
    from ..steering.steerer import StepWindow
    from ..testbeds import dit_testbed

    folder = dit_testbed.ensure_dit_testbed(config, progress=False)
    model, info, data = dit.DiTModel.from_pretrained(folder), dit_testbed.read_info(folder), dit_testbed.load_data(folder)
    labels, seeds = dit_testbed.sample_plan(data, n_rare, n_common)
    samples, _ = dit_testbed.cached_samples(folder, labels, seeds, num_steps, guidance, progress=False)
    truth = dit_testbed.ground_truth(samples, labels, data)
    common = ~truth["rare"]
    mem, gen = np.flatnonzero(truth["memorized"]), np.flatnonzero(common & ~truth["copies"])
    if min(len(mem), len(gen)) < 2 and untrained_split:
        mem, gen = np.flatnonzero(truth["rare"]), np.flatnonzero(common)
    if min(len(mem), len(gen)) < 2:
        raise RuntimeError(f"{config}: {len(mem)} memorized and {len(gen)} generalized samples, no detection set")
    layer = dit.ff_layer(dit.default_block(model.num_layers))
    sets = {"Mem": samples[mem], "Gen": samples[gen]}
    std = {k: get_detector("std").score(model, Samples(v), layer=layer, timestep=timestep, pooling=pooling)
           for k, v in sets.items()}
    lid_scores = {k: get_detector("lid").score(model, Samples(v), trace=lid_trace, conditional=False,
                                               labels=labels[i])
                  for (k, v), i in zip(sets.items(), (mem, gen))}
    out = {"steps": config.steps, "seed": config.seed, "train_seconds": info["train_seconds"],
           "memorized_fraction": float(truth["memorized"][truth["rare"]].mean()),
           "common_copy_fraction": float(truth["copies"][common].mean()),
           "gen_nn_correlation": float(np.median(truth["correlation"][common])),
           **{k: metrics.detection_row(v["Mem"], v["Gen"], n_boot) for k, v in (("std", std), ("lid", lid_scores))},
           "pictures": samples[np.flatnonzero(common)[:n_pictures]].numpy()}
    out["std_beats_lid"] = bool(out["std"]["auroc"] > out["lid"]["auroc"])
    block = dit.default_block(model.num_layers)
    vectors = dit_steering.dit_concept_vectors(
        model, samples[(labels == steer_class) & common][:50],
        [dit.ff_layer(b) for b in range(block, model.num_layers)], timestep, steer_class)
    groups = {"rare": mem[:n_steer], "common": gen[labels[gen] != steer_class][:n_steer]}
    window = StepWindow.last(num_steps, last_n=min(20, num_steps - 2), skip_last=min(2, num_steps - 1))
    steered = dit_steering.steer_dit_groups(model, vectors, steer_alphas, window,
                                            {g: (labels[i], seeds[i]) for g, i in groups.items()},
                                            num_steps, guidance)
    moved = dit_steering.moved_per_alpha(steered, steer_alphas)
    out["steering_ratio"] = dit_steering.ratio_per_alpha(moved, "rare", "common", steer_alphas)[steer_alphas[-1]]
    out["steering_alpha"] = float(steer_alphas[-1])
    return out


VERDICTS = {"edm": edm_verdicts, "dit": dit_verdicts, "cpu": cpu_verdicts}
SPREAD_KEYS = ("memorized_fraction", "gen_nn_correlation", "std.auroc", "lid.auroc", "std.tpr_at_1pct_fpr",
               "lid.tpr_at_1pct_fpr", "steering_ratio")


def spread_keys(run: dict) -> list[str]:
    """`SPREAD_KEYS`, and for a run with them (the CPU testbed) its memorized share by kind, the held-out copy share,
    and every method's AUROC, TPR@1%FPR and AUROC by kind."""
    keys = [*SPREAD_KEYS, *(f"memorized_by_kind.{k}" for k in run.get("memorized_by_kind", {}))]
    keys += ["gen_copy_fraction"] if "gen_copy_fraction" in run else []
    for name, row in run.get("methods", {}).items():
        keys += [f"methods.{name}.auroc", f"methods.{name}.tpr_at_1pct_fpr",
                 *(f"methods.{name}.by_kind.{k}" for k in row["by_kind"])]
    return keys


def _get(run: dict, dotted: str):
    for part in dotted.split("."):
        run = run.get(part) if isinstance(run, dict) else None
    return run


def spread(runs: list[dict], keys=None) -> dict:
    """Per verdict that the runs have (`keys`, default `spread_keys` of the first run): {"values", "mean", "min",
    "max"} over the runs, and how many of them find std above LID."""
    out = {}
    for key in keys or spread_keys(runs[0]):
        values = [_get(r, key) for r in runs]
        if all(v is not None for v in values):
            out[key] = {"values": values, "mean": float(np.mean(values)), "min": float(np.min(values)),
                        "max": float(np.max(values))}
    out["std_beats_lid"] = {"runs": len(runs), "count": sum(bool(r.get("std_beats_lid")) for r in runs)}
    return out


def measured_settings(testbed: str, overrides: dict) -> dict:
    """The settings a sweep measures with: `VERDICTS[testbed]`'s defaults, updated with `overrides`."""
    parameters = inspect.signature(VERDICTS[testbed]).parameters
    unknown = set(overrides) - set(parameters)
    if unknown:
        raise TypeError(f"{testbed} sweep: unknown settings {sorted(unknown)}")
    defaults = {k: p.default for k, p in parameters.items() if k != "config"}
    return {**defaults, **overrides}


def settings_differ(result: dict, settings: dict) -> dict:
    """{name: (the sweep's value, the given one)} for each of `settings` the sweep measured with another value."""
    from ..plumbing.results import to_jsonable

    recorded = result.get("settings", {})
    return {k: (recorded.get(k), v) for k, v in to_jsonable(settings).items() if recorded.get(k) != v}


def cached_verdicts(testbed: str, config, settings: dict) -> dict:
    """`VERDICTS[testbed](config, **settings)`, kept in the cache (`<cache>/sweeps/`, keyed by the model's config and
    the settings) so that a sweep stopped part-way, or widened later, measures only what it lacks."""
    from ..plumbing.paths import REPO_CACHE
    from ..plumbing.results import save_npz_atomic, write_json_atomic

    key = config_key({"model": config.to_dict(), "settings": settings})
    json_path = REPO_CACHE / "sweeps" / f"{testbed}-{key}.json"
    npz_path = json_path.with_suffix(".npz")
    if json_path.is_file() and npz_path.is_file():
        with np.load(npz_path, allow_pickle=False) as stored:
            return {**json.loads(json_path.read_text()), "pictures": stored["pictures"]}
    result = VERDICTS[testbed](config, **settings)
    save_npz_atomic(npz_path, pictures=np.asarray(result["pictures"], dtype=np.float32))
    write_json_atomic(json_path, {k: v for k, v in result.items() if k != "pictures"})
    return result


def run_sweep(testbed: str, config, lengths=None, seeds=SEEDS, progress: bool = True, **settings) -> dict:
    """Every variant's verdicts (`cached_verdicts`; models trained on first use, then cached), as the JSON the
    testbed notebook reads: the length sweep, the seed spread, the default config's key. The Jacobian (EDM) is
    measured along the length sweep only. Pictures are returned under "pictures" (not for the JSON)."""
    settings = measured_settings(testbed, settings)
    lengths = DEFAULT_LENGTHS[testbed] if lengths is None else lengths
    runs, pictures = {}, {}
    for name, (sweep, variant) in variants(config, lengths, seeds).items():
        if sweep == "seed" and variant.seed == config.seed and "steps x1" in runs:
            runs[name] = runs["steps x1"]                  # the default model: measured once
            continue
        t0 = time.perf_counter()
        extra = {"n_jacobian": 0} if testbed == "edm" and sweep == "seed" else {}   # App. B.3: lengths only
        result = dict(cached_verdicts(testbed, variant, {**settings, **extra}))
        pictures[name] = result.pop("pictures")
        runs[name] = result
        if progress:
            print(f"{testbed} {name}: memorized {result['memorized_fraction']:.3f}, std {result['std']['auroc']:.3f}, "
                  f"LID {result['lid']['auroc']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"testbed": testbed, "default_config_key": default_key(config), "default_steps": config.steps,
            "torch_threads": torch.get_num_threads(), "settings": settings,
            "training_length_sweep": {f"x{k}": runs[f"steps x{k}"] for k in lengths},
            "seed_spread": {"runs": {f"seed {s}": runs[f"seed {s}"] for s in seeds},
                            **spread([runs[f"seed {s}"] for s in seeds])},
            "pictures": pictures}


# ----------------------------------------------------------------------------------------------------
# The committed result: results/sweeps/<testbed notebook>.json, its pictures beside it
# ----------------------------------------------------------------------------------------------------
def sweep_files(results_dir, testbed: str):
    """(JSON, pictures .npz) of a testbed's sweep under `results_dir`/sweeps."""
    folder = Path(results_dir) / "sweeps"
    return folder / f"{RESULT_NAMES[testbed]}.json", folder / f"{RESULT_NAMES[testbed]}_pictures.npz"


def write_sweep(result: dict, results_dir):
    """Write `run_sweep`'s result: the numbers as JSON, the pictures as uint8 [runs, n, H, W, 3] (small)."""
    from ..plumbing.results import save_npz_atomic, write_results

    json_path, npz_path = sweep_files(results_dir, result["testbed"])
    pictures = result["pictures"]
    names = list(pictures)
    images = np.stack([((np.asarray(pictures[n]).transpose(0, 2, 3, 1) + 1) * 127.5).round().clip(0, 255)
                       for n in names]).astype(np.uint8)                                   # [R, n, H, W, 3]
    save_npz_atomic(npz_path, images=images, names=np.array(names))
    return write_results(json_path.stem, {k: v for k, v in result.items() if k != "pictures"}, json_path.parent)


def read_sweep(results_dir, testbed: str, config) -> tuple[dict | None, str]:
    """The committed sweep of `testbed` when it was run around `config` (same key), with its pictures
    ({run name: uint8 [n, H, W, 3]}) under "pictures"; else None. The second value says which, in one line."""
    json_path, npz_path = sweep_files(results_dir, testbed)
    if not json_path.is_file():
        return None, f"no sweep in {json_path.parent.name}/: `make sweeps` runs it"
    result = json.loads(json_path.read_text())
    if result["default_config_key"] != default_key(config):
        return None, (f"the sweep in {json_path.parent.name}/ was run around another config "
                      f"({result['default_config_key']}, this one {default_key(config)}): `make sweeps` reruns it")
    if npz_path.is_file():
        with np.load(npz_path, allow_pickle=False) as stored:
            result["pictures"] = dict(zip(stored["names"].tolist(), stored["images"]))
    return result, f"sweep read from {json_path.parent.name}/{json_path.name} (config {result['default_config_key']})"


def cpu_sweep_lines(result: dict) -> list[str]:
    """The CPU testbed's seed spread: one row per seed (training, memorized by kind, steering ratio), then per method
    its AUROC at each seed and their range (Table 1's LAION column, then all kinds pooled)."""
    runs = result["seed_spread"]["runs"]
    kinds = list(next(iter(runs.values()))["memorized_by_kind"])
    lines = [f"{'run':<8} {'train s':>7} " + " ".join(f"{'mem ' + k[:8]:>13}" for k in kinds)
             + f" {'held-out copy':>13} {'steer':>6}"]
    for name, r in runs.items():
        steer = "" if r.get("steering_ratio") is None else f"{r['steering_ratio']:6.2f}"
        lines.append(f"{name:<8} {r['train_seconds']:>7.0f} "
                     + " ".join(f"{r['memorized_by_kind'][k]:>13.2f}" for k in kinds)
                     + f" {r['gen_copy_fraction']:>13.3f} {steer:>6}")
    spread_ = result["seed_spread"]
    for column, suffix in (("LAION column", "auroc"), ("all kinds pooled", "by_kind.all")):
        lines.append(f"\nAUROC, {column}: " + " ".join(f"{n:>7}" for n in runs) + "   range")
        for method in next(iter(runs.values()))["methods"]:
            s = spread_.get(f"methods.{method}.{suffix}")
            if s:
                lines.append(f"{method:>23} " + " ".join(f"{v:7.3f}" for v in s["values"])
                             + f"   {s['min']:.3f}–{s['max']:.3f}")
    beats = spread_["std_beats_lid"]
    lines.append(f"seeds: std above LID in {beats['count']} of {beats['runs']} runs")
    return lines


def read_cpu_testbed_sweep(results_dir, model_name: str) -> tuple[dict | None, str]:
    """`read_sweep` of the CPU testbed for a notebook that runs on `model_name`: the committed seed spread when the
    model is the default CPU testbed, else None; the second value says which, in one line."""
    from ..testbeds import cpu_testbed

    if not cpu_testbed.is_testbed(model_name) or Path(model_name).resolve() != cpu_testbed.testbed_folder().resolve():
        return None, "the model is not the default CPU testbed: no seed spread"
    return read_sweep(results_dir, "cpu", cpu_testbed.TestbedConfig())


def sweep_lines(result: dict) -> list[str]:
    """The sweep as a table: one row per run (lengths, then seeds), the seed spread's mean [min, max] last."""
    if result["testbed"] == "cpu":
        return cpu_sweep_lines(result)
    def row(name, r):
        jac = r.get("jacobian")
        rank = (f"{jac['Mem']['effective_rank_median']:7.0f} {jac['Gen']['effective_rank_median']:7.0f}"
                if jac else f"{'':>15}")
        steer = f"{r['steering_ratio']:6.2f}" if r.get("steering_ratio") is not None else f"{'':>6}"
        return (f"{name:<10} {r['steps']:>6} {r['train_seconds']:>6.0f} {r['memorized_fraction']:>6.3f} "
                f"{r['gen_nn_correlation']:>6.3f} {r['std']['auroc']:>6.3f} [{r['std']['auroc_ci'][0]:.2f}, "
                f"{r['std']['auroc_ci'][1]:.2f}] {r['lid']['auroc']:>6.3f} [{r['lid']['auroc_ci'][0]:.2f}, "
                f"{r['lid']['auroc_ci'][1]:.2f}] {rank} {steer}")
    lines = [f"{'run':<10} {'steps':>6} {'train s':>6} {'mem':>6} {'gen nn':>6} {'std AUROC [CI]':>19} "
             f"{'LID AUROC [CI]':>19} {'rank Mem/Gen':>15} {'steer':>6}"]
    lines += [row(f"x{k[1:]}", r) for k, r in result["training_length_sweep"].items()]
    lines += [row(name, r) for name, r in result["seed_spread"]["runs"].items()]
    spread_ = result["seed_spread"]
    for key, v in spread_.items():
        if key not in ("runs", "std_beats_lid"):
            lines.append(f"seeds: {key} mean {v['mean']:.3f} [{v['min']:.3f}, {v['max']:.3f}]")
    beats = spread_["std_beats_lid"]
    lines.append(f"seeds: std above LID in {beats['count']} of {beats['runs']} runs")
    lines.append("lengths: std above LID at " + ", ".join(
        f"{k}: {'yes' if r['std_beats_lid'] else 'no'}" for k, r in result["training_length_sweep"].items()))
    return lines


def results_keys(result: dict | None) -> dict:
    """What the testbed's results JSON keeps of its sweep: `training_length_sweep` (every length's verdicts) and
    `seed_spread` (per verdict its values, mean, min and max over the seeds, and how many runs find std above LID;
    the seed runs in full stay in `results/sweeps/`); both None without a sweep."""
    if result is None:
        return {"training_length_sweep": None, "seed_spread": None}
    return {"training_length_sweep": result["training_length_sweep"],
            "seed_spread": {k: v for k, v in result["seed_spread"].items() if k != "runs"}}
