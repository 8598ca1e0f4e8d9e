"""The training-length and seed sweep (`detectors.training_sweep`): its variants, its spread, its file round trip, and that it
measures with the testbed notebooks' settings. (Its end-to-end run is the SMOKE run of the two testbed notebooks.)"""
import json

import numpy as np
import pytest

from common.detectors import training_sweep
from common.testbeds import cpu_testbed, dit_testbed, edm_testbed
from test_parameter_cells import parameters

NOTEBOOK_SETTINGS = [   # (testbed, notebook, the sweep's setting -> the notebook parameter it must equal)
    ("edm", "EDM_testbed", {"n_samples": "N_SAMPLES", "num_steps": "NUM_STEPS", "n_detect": "N_DETECT",
                            "sigma": "SIGMA", "layer": "LAYER", "pooling": "POOLING", "lid_trace": "LID_TRACE",
                            "n_jacobian": "N_JACOBIAN", "n_boot": "N_BOOTSTRAP"}),
    ("dit", "DiT_testbed", {"n_rare": "N_RARE", "n_common": "N_COMMON", "num_steps": "NUM_STEPS",
                            "guidance": "GUIDANCE", "timestep": "TIMESTEP", "pooling": "POOLING",
                            "lid_trace": "LID_TRACE", "n_steer": "N_STEER", "steer_class": "STEER_CLASS",
                            "n_boot": "N_BOOTSTRAP"}),
    ("cpu", "Table1_detection", {"methods": "METHODS", "num_inference_steps": "NUM_INFERENCE_STEPS",
                                 "guidance_scale": "GUIDANCE_SCALE", "lid_trace": "LID_TRACE",
                                 "carlini_generations": "CARLINI_GENERATIONS", "n_boot": "N_BOOTSTRAP",
                                 "gen_batch": "GEN_BATCH"}),
    ("cpu", "SD_steering", {"steer_n_ref": "N_REF_PER_SIDE", "steer_steps": "NUM_INFERENCE_STEPS",
                            "steer_last_n": "STEER_LAST_N", "steer_skip_last": "STEER_SKIP_LAST",
                            "steer_seeds_per_prompt": "SEEDS_PER_PROMPT"}),
]


@pytest.mark.parametrize("testbed, notebook, names", NOTEBOOK_SETTINGS, ids=[n for _, n, _ in NOTEBOOK_SETTINGS])
def test_the_sweep_measures_with_the_notebooks_defaults(testbed, notebook, names):
    defaults, params = training_sweep.measured_settings(testbed, {}), parameters(notebook)
    assert {k: defaults[k] for k in names} == {k: params[v] for k, v in names.items()}
    if testbed == "dit":     # the steering ratio is read at an alpha the notebook also steers with
        assert defaults["steer_alphas"][-1] in params["STEER_ALPHAS"]
    if notebook == "Table1_detection":   # the sets' seeds and Carlini's threshold, which are not settings
        from common.detectors import cpu_testbed_verdicts as cpu

        assert cpu.SET_SEEDS == {"mem": params["MEM_SEED"], "gen": params["GEN_SEED"]}
        assert cpu.CARLINI_TAU == params["CARLINI_TAU"]
        assert params["KIND_SETS"] == cpu_testbed.KIND_SETS
    if notebook == "SD_steering":        # the ratio is read at the largest alpha of the official grid
        from common.steering import steerability

        assert defaults["steering_alpha"] == steerability.ALPHAS[-1]


def test_unknown_setting_is_refused():
    with pytest.raises(TypeError, match="n_sample"):
        training_sweep.measured_settings("edm", {"n_sample": 10})


@pytest.mark.parametrize("config", [edm_testbed.EDMTestbedConfig(), dit_testbed.DiTTestbedConfig()])
def test_variants_change_one_setting_each(config):
    runs = training_sweep.variants(config, lengths=(1, 2, 4), seeds=(0, 1, 2))
    assert [runs[f"steps x{k}"][1].steps for k in (1, 2, 4)] == [config.steps, 2 * config.steps, 4 * config.steps]
    assert {runs[f"seed {s}"][1].seed for s in (0, 1, 2)} == {0, 1, 2}
    for _, variant in runs.values():        # the data, and everything but steps and seed, stay as they are
        assert variant.data == config.data
        assert {k: v for k, v in variant.to_dict().items() if k not in ("steps", "seed")} == \
               {k: v for k, v in config.to_dict().items() if k not in ("steps", "seed")}
    assert runs["steps x1"][1] == runs["seed 0"][1] == config      # the default model belongs to both
    keys = {training_sweep.default_key(v) for _, v in runs.values()}
    assert len(keys) == 5                                           # five distinct models (x1 = seed 0)


def run(seed, memorized, std_auroc, lid_auroc, ratio=None):
    return {"seed": seed, "steps": 10, "memorized_fraction": memorized, "gen_nn_correlation": 0.5,
            "std": {"auroc": std_auroc, "tpr_at_1pct_fpr": 0.1}, "lid": {"auroc": lid_auroc, "tpr_at_1pct_fpr": 0.2},
            "std_beats_lid": std_auroc > lid_auroc, "steering_ratio": ratio}


def test_spread_is_mean_and_range_over_the_seeds():
    out = training_sweep.spread([run(0, 0.2, 0.9, 0.7), run(1, 0.4, 0.8, 0.85), run(2, 0.3, 0.95, 0.6)])
    assert out["memorized_fraction"]["mean"] == pytest.approx(0.3)
    assert (out["memorized_fraction"]["min"], out["memorized_fraction"]["max"]) == (0.2, 0.4)
    assert out["std.auroc"]["values"] == [0.9, 0.8, 0.95]
    assert out["std_beats_lid"] == {"runs": 3, "count": 2}
    assert "steering_ratio" not in out                      # a verdict the runs do not have is left out


def cpu_run(seed, std_auroc, lid_auroc):
    methods = {name: {"auroc": auroc, "tpr_at_1pct_fpr": 0.5, "by_kind": {"verbatim": auroc, "ordinary": None,
                                                                          "all": auroc - 0.1}}
               for name, auroc in (("std", std_auroc), ("lid", lid_auroc))}
    return {"seed": seed, "train_seconds": 100.0 + seed, "memorized_by_kind": {"verbatim": 0.9, "ordinary": 0.3 + seed},
            "memorized_fraction": 0.6, "gen_copy_fraction": 0.02, "methods": methods, "std": methods["std"],
            "lid": methods["lid"], "std_beats_lid": std_auroc > lid_auroc, "steering_ratio": 1.0 + seed}


def test_the_cpu_testbeds_spread_covers_every_method_and_kind():
    runs = {f"seed {s}": cpu_run(s, a, b) for s, a, b in ((0, 0.9, 0.8), (1, 0.7, 0.75), (2, 0.95, 0.6))}
    out = training_sweep.spread(list(runs.values()))
    assert out["memorized_by_kind.ordinary"]["values"] == [0.3, 1.3, 2.3]
    assert out["methods.lid.auroc"]["values"] == [0.8, 0.75, 0.6]
    assert out["methods.std.by_kind.all"]["min"] == pytest.approx(0.6)
    assert "methods.std.by_kind.ordinary" not in out          # a kind without positives has no AUROC
    assert out["std_beats_lid"] == {"runs": 3, "count": 2}
    assert out["steering_ratio"]["max"] == 3.0
    lines = training_sweep.sweep_lines({"testbed": "cpu", "seed_spread": {"runs": runs, **out}})
    assert lines[1].split() == ["seed", "0", "100", "0.90", "0.30", "0.020", "1.00"]
    assert any(line.split() == ["std", "0.900", "0.700", "0.950", "0.700–0.950"] for line in lines), lines
    assert any(line.split() == ["lid", "0.700", "0.650", "0.500", "0.500–0.700"] for line in lines), lines
    assert lines[-1] == "seeds: std above LID in 2 of 3 runs"


def sweep_result(config):
    runs = {f"seed {s}": {**run(s, 0.1 * (s + 1), 0.9, 0.7, 0.3), "train_seconds": 5.0,
                          "std": {"auroc": 0.9, "auroc_ci": [0.8, 0.95], "tpr_at_1pct_fpr": 0.1},
                          "lid": {"auroc": 0.7, "auroc_ci": [0.6, 0.8], "tpr_at_1pct_fpr": 0.0}} for s in (0, 1)}
    pictures = {name: np.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4) for name in ("steps x1", "seed 1")}
    return {"testbed": "dit", "default_config_key": training_sweep.default_key(config), "default_steps": config.steps,
            "settings": training_sweep.measured_settings("dit", {}), "training_length_sweep": {"x1": runs["seed 0"]},
            "seed_spread": {"runs": runs, **training_sweep.spread(list(runs.values()))}, "pictures": pictures}


def test_written_sweep_is_read_back_for_its_config_only(tmp_path):
    config = dit_testbed.DiTTestbedConfig()
    training_sweep.write_sweep(sweep_result(config), tmp_path)
    json_path, npz_path = training_sweep.sweep_files(tmp_path, "dit")
    assert "pictures" not in json.loads(json_path.read_text())
    back, note = training_sweep.read_sweep(tmp_path, "dit", config)
    assert back["seed_spread"]["memorized_fraction"]["max"] == pytest.approx(0.2)
    image = back["pictures"]["steps x1"]                                   # [n, H, W, 3] uint8
    assert image.dtype == np.uint8 and image.shape == (2, 4, 4, 3)
    assert image[0, 0, 0, 0] == 0 and image[-1, -1, -1, -1] == 255        # [-1, 1] -> [0, 255], channels last
    assert training_sweep.settings_differ(back, training_sweep.measured_settings("dit", {})) == {}
    assert training_sweep.settings_differ(back, {"n_rare": 7}) == {"n_rare": (500, 7)}
    lines = training_sweep.sweep_lines(back)
    assert "0.900 [0.80, 0.95]" in lines[1] and "0.700 [0.60, 0.80]" in lines[1]    # the x1 row: std, LID
    assert lines[-2:] == ["seeds: std above LID in 2 of 2 runs", "lengths: std above LID at x1: yes"]
    other, note = training_sweep.read_sweep(tmp_path, "dit", dit_testbed.DiTTestbedConfig(steps=7))
    assert other is None and "another config" in note
    missing, note = training_sweep.read_sweep(tmp_path, "edm", edm_testbed.EDMTestbedConfig())
    assert missing is None and "make sweeps" in note


def test_results_keys_keep_the_spread_not_the_runs():
    result = sweep_result(dit_testbed.DiTTestbedConfig())
    keys = training_sweep.results_keys(result)
    assert set(keys) == {"training_length_sweep", "seed_spread"} and "runs" not in keys["seed_spread"]
    assert training_sweep.results_keys(None) == {"training_length_sweep": None, "seed_spread": None}


def test_verdicts_are_measured_once_per_model_and_settings(tmp_path, monkeypatch):
    from common.plumbing import paths

    monkeypatch.setattr(paths, "REPO_CACHE", tmp_path)
    calls = []

    def fake(config, **settings):
        calls.append((config.seed, settings["n_boot"]))
        return {"seed": config.seed, "auroc_ci": (0.1, 0.2), "pictures": np.full((2, 3, 4, 4), 0.5)}

    monkeypatch.setitem(training_sweep.VERDICTS, "dit", fake)
    config = dit_testbed.DiTTestbedConfig()
    first = training_sweep.cached_verdicts("dit", config, {"n_boot": 10})
    again = training_sweep.cached_verdicts("dit", config, {"n_boot": 10})
    assert calls == [(0, 10)] and again["auroc_ci"] == [0.1, 0.2] and again["seed"] == 0
    np.testing.assert_array_equal(again["pictures"], first["pictures"])
    training_sweep.cached_verdicts("dit", config, {"n_boot": 20})                 # other settings: measured
    training_sweep.cached_verdicts("dit", dit_testbed.DiTTestbedConfig(seed=1), {"n_boot": 10})   # another model
    assert calls == [(0, 10), (0, 20), (1, 10)]


def test_the_cpu_testbeds_sweep_is_read_for_the_default_testbed_only(tmp_path, monkeypatch):
    from common.testbeds import training

    monkeypatch.setattr(cpu_testbed, "TESTBED_CACHE", tmp_path / "testbed")
    default, other = cpu_testbed.testbed_folder(), cpu_testbed.testbed_folder(cpu_testbed.SMOKE_CONFIG)
    for folder in (default, other):
        folder.mkdir(parents=True)
        (folder / training.INFO_NAME).write_text("{}")
    runs = {f"seed {s}": cpu_run(s, 0.9, 0.8) for s in (0, 1)}
    result = {"testbed": "cpu", "default_config_key": training_sweep.default_key(cpu_testbed.TestbedConfig()),
              "seed_spread": {"runs": runs, **training_sweep.spread(list(runs.values()))},
              "pictures": {name: np.zeros((1, 3, 4, 4)) for name in runs}}
    training_sweep.write_sweep(result, tmp_path / "results")
    back, note = training_sweep.read_cpu_testbed_sweep(tmp_path / "results", str(default))
    assert back["seed_spread"]["steering_ratio"]["values"] == [1.0, 2.0] and "CPU_testbed.json" in note
    for model in (str(other), "tiny"):
        back, note = training_sweep.read_cpu_testbed_sweep(tmp_path / "results", model)
        assert back is None and "not the default CPU testbed" in note
