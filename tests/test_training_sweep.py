"""The training-length and seed sweep (`detectors.training_sweep`): its variants, its spread, its file round trip, and that it
measures with the testbed notebooks' settings. (Its end-to-end run is the SMOKE run of the two testbed notebooks.)"""
import json

import numpy as np
import pytest

from common.detectors import training_sweep
from common.testbeds import dit_testbed, edm_testbed
from test_parameter_cells import parameters

NOTEBOOK_SETTINGS = {   # the sweep's setting -> the notebook parameter it must equal
    "edm": ("EDM_testbed", {"n_samples": "N_SAMPLES", "num_steps": "NUM_STEPS", "n_detect": "N_DETECT",
                            "sigma": "SIGMA", "layer": "LAYER", "pooling": "POOLING", "lid_trace": "LID_TRACE",
                            "n_jacobian": "N_JACOBIAN", "n_boot": "N_BOOTSTRAP"}),
    "dit": ("DiT_testbed", {"n_rare": "N_RARE", "n_common": "N_COMMON", "num_steps": "NUM_STEPS",
                            "guidance": "GUIDANCE", "timestep": "TIMESTEP", "pooling": "POOLING",
                            "lid_trace": "LID_TRACE", "n_steer": "N_STEER", "steer_class": "STEER_CLASS",
                            "n_boot": "N_BOOTSTRAP"}),
}


@pytest.mark.parametrize("testbed", sorted(NOTEBOOK_SETTINGS))
def test_the_sweep_measures_with_the_notebooks_defaults(testbed):
    notebook, names = NOTEBOOK_SETTINGS[testbed]
    defaults, params = training_sweep.measured_settings(testbed, {}), parameters(notebook)
    assert {k: defaults[k] for k in names} == {k: params[v] for k, v in names.items()}
    if testbed == "dit":     # the steering ratio is read at an alpha the notebook also steers with
        assert defaults["steer_alphas"][-1] in params["STEER_ALPHAS"]


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
