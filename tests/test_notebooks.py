"""Every notebook runs top to bottom in SMOKE mode and writes its figures and results keys.

Outputs (figures, results JSON, checkpoints) go to a temporary folder, never over the committed ones.
"""
import json
import os

import pytest

from common.notebooks import all_notebooks, run_notebook
from common.results import get_dotted

EXPECTED = {
    "ReLU_DAE": {
        "figures": ["celeba_weights", "celeba_rep", "celeba_denoise"],
        "keys": ["data_source", "mem.live_units", "mem.max_cos_live", "mem.col_norms_live",
                 "mem.predicted_col_norms", "gen.units_norm_gt_0_5", "gen.median_max_cos",
                 "mem.rep_std_mean", "gen.rep_std_mean", "train_seconds.mem", "train_seconds.gen"],
    },
    "ReLU_Diffusion": {
        "figures": ["celeba_sampling_mem", "celeba_sampling_gen", "celeba_sampling_memorization",
                    "celeba_diffusion_rep"],
        "keys": ["data_source", "mem.memorized_fraction_nn_ratio", "gen.memorized_fraction_nn_ratio",
                 "mem.memorized_fraction_cos", "gen.memorized_fraction_cos", "mem.rep_std_mean",
                 "gen.rep_std_mean", "mem.live_units", "gen.live_units", "train_seconds.mem",
                 "train_seconds.gen", "train_seconds.total"],
    },
}


def test_every_notebook_has_expectations():
    assert {nb.stem for nb in all_notebooks()} == set(EXPECTED)


@pytest.mark.parametrize("notebook", all_notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(notebook, tmp_path, monkeypatch):
    monkeypatch.setenv("DGR_CACHE", str(tmp_path / "cache"))      # the kernel inherits the environment
    figs, res = tmp_path / "Figs", tmp_path / "results"
    run_notebook(notebook, tmp_path / notebook.name,
                 {"SMOKE": True, "FIGS_DIR": str(figs), "RESULTS_DIR": str(res)}, timeout=600)
    expected = EXPECTED[notebook.stem]
    for name in expected["figures"]:
        assert (figs / f"{name}.png").stat().st_size > 10_000, name
    payload = json.loads((res / f"{notebook.stem}.json").read_text())
    for key in expected["keys"]:
        get_dotted(payload, key)
    assert payload["smoke"] is True
