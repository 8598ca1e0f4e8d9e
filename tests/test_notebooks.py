"""Every notebook runs top to bottom in SMOKE mode and writes its figures and results keys; `make figures`
skips a notebook whose requirements are unmet with one line.

Outputs (figures, results JSON, checkpoints) go to a temporary folder, never over the committed ones.
"""
import json

import pytest

from common.cli import notebooks
from common.cli.notebooks import Availability, all_notebooks, run_notebook, smoke_parameters
from common.plumbing.results import get_dotted
from conftest import SHARED_PROMPTS

@pytest.fixture(autouse=True)
def smoke_figure_resolution(monkeypatch):
    """Figures at 100 dpi: these runs check the code path, not the pixels (the kernels inherit the environment)."""
    monkeypatch.setenv("DGR_FIG_DPI", "100")


EXPECTED = {
    "ReLU_DAE": {
        "figures": ["fig3_dae_weights_lfw_standin", "fig4_dae_reps_lfw_standin", "dae_denoising_lfw_standin"],
        "keys": ["data_source", "mem.live_units", "mem.max_cos_live", "mem.col_norms_live",
                 "mem.predicted_col_norms", "gen.units_norm_gt_0_5", "gen.median_max_cos",
                 "mem.rep_std_mean", "gen.rep_std_mean", "train_seconds.mem", "train_seconds.gen"],
    },
    "ReLU_Diffusion": {
        "figures": ["fig2_sampling_mem_lfw_standin", "fig2_sampling_gen_lfw_standin",
                    "fig2_memorization_rates_lfw_standin", "diffusion_reps_lfw_standin",
                    "diffusion_mem_seeds_lfw_standin"],
        "keys": ["data_source", "mem.memorized_fraction_nn_ratio_unit_norm", "gen.memorized_fraction_nn_ratio_unit_norm",
                 "mem.memorized_fraction_cos", "gen.memorized_fraction_cos", "mem.memorized_fraction_nn_ratio",
                 "mem.norm_over_nn_norm_quantiles", "mem.rep_std_mean", "gen.rep_std_mean", "mem.live_units",
                 "gen.live_units", "mem_seed", "mem_headline_clean", "mem_seeds", "mem_ghost_fraction",
                 "mem_clean_fraction", "train_seconds.mem", "train_seconds.gen", "train_seconds.total"],
    },
    "ReLU_DAE_regimes": {
        "figures": ["fig4_mog_blocks", "cor32_columns_lfw_standin", "cor32_closed_form_lfw_standin",
                    "fig6_hybrid_regime", "transition_faces_and_mog", "transition_convergence"],
        "keys": ["data_source", "mog.mean_principal_angle_deg", "cor32.max_rel_norm_error",
                 "hybrid.duplicated_with_copy_column_fraction", "hybrid.rep_std_duplicated", "hybrid.rep_std_other",
                 "sweep.n", "sweep.copy_fraction", "sweep_mog.n", "sweep_mog.copy_fraction", "seconds.mog",
                 "seconds.cor32", "seconds.hybrid", "seconds.sweep_faces", "seconds.sweep_mog", "seconds.total"],
    },
    "CPU_testbed": {
        "results": "CPU_testbed",
        "figures": ["cpu_testbed_data", "cpu_testbed_ground_truth", "cpu_testbed_kinds", "cpu_testbed_dose_response",
                    "cpu_testbed_seed_spread"],
        "keys": ["model", "memorized_caption_copy_fraction", "generalizing_caption_copy_fraction", "copy_threshold",
                 "duplication_factor", "train_seconds", "copy_fraction_by_duplication", "criterion_false_copy_rate",
                 *[f"ground_truth_by_kind.{kind}.{key}" for kind in ("verbatim", "template", "ordinary")
                   for key in ("n_captions", "n_generations", "memorized_fraction",
                               "captions_with_a_memorized_generation", "criterion", "criterion_false_copy_rate")],
                 "kind_sets.template", "template_criterion_best_correlation_quantiles",
                 "seed_spread.std_beats_lid.runs"],
    },
    "EDM_testbed": {
        "figures": ["edm_testbed_data", "edm_testbed_ground_truth", "appC2_reps_edm_testbed",
                    "appC2_separation_edm_testbed", "edm_testbed_roc", "appB3_jacobian_edm_testbed"],
        "keys": ["model", "data_source", "train_seconds", "n_memorized", "n_generalized", "criterion_false_copy_rate",
                 "dose_response", *[f"cifar10.{method}.{key}" for method in ("std", "lid")
                                    for key in ("auroc", "auroc_ci", "tpr_at_1pct_fpr", "seconds_per_sample",
                                                "prompt_free")], "cifar10.lid.probe_scheme", "sweep", "jacobian.Mem.effective_rank"],
    },
    "DiT_testbed": {
        "figures": ["dit_testbed_data", "dit_testbed_ground_truth", "fig5_reps_dit_testbed", "dit_testbed_roc",
                    "dit_testbed_steering"],
        "keys": ["model", "data_source", "train_seconds", "rare_copy_fraction", "common_copy_fraction",
                 "criterion_false_copy_rate", "dose_response", "n_mem", "n_gen", "detector.layer",
                 *[f"{group}.{method}.{key}" for group in ("imagenet", "class_label") for method in ("std", "lid")
                   for key in ("auroc", "auroc_ci", "tpr_at_1pct_fpr", "seconds_per_sample")],
                 "sweep", "steering.ratio_rare_over_common"],
    },
    "SD_compare_reps": {
        "figures": [f"{name}_tiny_sd_folder" for name in ("fig5_reps", "fig5_separation", "roc_std_vs_wen",
                                                            "layer_sweep")],
        "keys": ["model", "n_mem", "n_gen", "layer", "timestep", "pooling", "auroc", "auroc_ci",
                 "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_official", "vm.auroc", "tm.auroc", "baseline_wen.auroc",
                 "baseline_wen.tpr_at_1pct_fpr", "seconds_per_image", "layer_calls_per_pass", "sweep"],
        # the real prompt lists when the reference copies are beside the repo (else the SMOKE placeholders)
        "parameters": {"MEM_PROMPTS": SHARED_PROMPTS / "sdv1_500_memorized.jsonl",
                       "VM_TM_LABELS": SHARED_PROMPTS / "memorized_laion_prompts.csv",
                       "GEN_PROMPTS": SHARED_PROMPTS / "unmemorized_laion_prompts.csv"},
    },
    "Table1_detection": {
        "figures": ["table1_roc", "table1_by_kind", "table1_control", "table1_wen_steps"],
        "keys": ["model", "n.mem", "n.gen", "n.control", "std_rank_by_auroc", "paper.std.laion.auroc",
                 *[f"laion.{method}.{key}" for method in ("carlini", "wen", "wen-4x50", "nemo", "nemo-ssim", "lid",
                                                          "lid-cond", "std", "sharpness", "sharpness-4",
                                                          "anisotropy", "anisotropy-4")
                   for key in ("auroc", "auroc_ci", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_official",
                               "seconds_per_sample", "prompt_free", "auroc_vs_low_dose_titles", "time_ratio_to_std")],
                 *[f"laion.{method}.by_kind.{kind}.{key}" for method in ("carlini", "wen", "nemo", "lid", "std",
                                                                         "sharpness", "anisotropy")
                   for kind in ("verbatim", "template", "ordinary", "all")
                   for key in ("auroc", "auroc_ci", "tpr_at_1pct_fpr")],
                 "claim_by_kind.all.matches", "memorized_by_kind.template.n_memorized", "rank_by_auroc_with_since_paper",
                 "laion.carlini.verdict_fraction_mem", "laion.std.scores_read_from_cache", "settings.score_cache",
                 "settings.lid_probe_scheme", "settings.nemo_ssim.seeds", "settings.nemo_ssim.data_range"],
        "parameters": {"MEM_PROMPTS": SHARED_PROMPTS / "sdv1_500_memorized.jsonl",
                       "VM_TM_LABELS": SHARED_PROMPTS / "memorized_laion_prompts.csv",
                       "GEN_PROMPTS": SHARED_PROMPTS / "unmemorized_laion_prompts.csv"},
    },
    "SD_steering": {
        "figures": [f"{name}_tiny_sd_folder" for name in ("fig7_steering_gen", "fig7_steering_mem",
                                                            "steering_rep_traj", "steerability")],
        "keys": ["model", "alphas", "vector_norms", "gen.change_by_alpha", "mem.change_by_alpha",
                 "gen.projection_by_alpha", "mem.projection_by_alpha", "gen.monotone", "mem.monotone",
                 "steerability_ratio_mem_over_gen", "steerability_ratio_by_alpha", "steering.steps",
                 "trajectory.gen_path_pc"],
    },
}


def test_every_notebook_has_expectations():
    assert {nb.stem for nb in all_notebooks()} == set(EXPECTED)


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory):
    """The tiny random pipeline saved as a diffusers folder, as a local copy of SD v1.4 is laid out."""
    from common.models import pipelines

    folder = tmp_path_factory.mktemp("weights") / "tiny-sd-folder"
    pipelines.build_random_pipeline("tiny").save_pretrained(folder)
    return folder


def requires_sd(notebook) -> bool:
    return "stable-diffusion" in notebooks.notebook_settings(notebook).get("requires", [])


@pytest.mark.parametrize("notebook", all_notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(notebook, tmp_path, monkeypatch, tiny_sd_folder):
    """Every notebook in SMOKE mode. The SD notebooks take their default path (MODEL = None) with the SD v1.4 check
    made to pass — $DGR_SD_MODEL at a tiny diffusers folder, $DGR_SD_ON_CPU=1 — and must record that folder as their
    model, not the testbed."""
    monkeypatch.setenv("DGR_CACHE", str(tmp_path / "cache"))      # the kernel inherits the environment
    expected = EXPECTED[notebook.stem]
    extra = {k: str(v) for k, v in expected.get("parameters", {}).items() if v.exists()}
    parameters = {**smoke_parameters(notebook, tmp_path), **extra}
    if requires_sd(notebook):
        monkeypatch.setenv("DGR_SD_MODEL", str(tiny_sd_folder))
        monkeypatch.setenv("DGR_SD_ON_CPU", "1")
        parameters.pop("MODEL")
    run_notebook(notebook, tmp_path / notebook.name, parameters, timeout=600)
    for name in expected["figures"]:
        assert (tmp_path / "Figs" / f"{name}.png").stat().st_size > 10_000, name
    payload = json.loads((tmp_path / "results" / f"{expected.get('results', notebook.stem)}.json").read_text())
    for key in expected["keys"]:
        get_dotted(payload, key)
    assert payload["smoke"] is True
    if requires_sd(notebook):
        assert payload["model"] == payload["model_id"] == tiny_sd_folder.name


def _parameter_names(cell_source: str) -> dict:
    namespace = {}
    exec(compile(cell_source, "<parameters>", "exec"), {}, namespace)
    return namespace


@pytest.mark.parametrize("notebook", all_notebooks(), ids=lambda p: p.stem)
def test_committed_notebook_runs_as_its_parameter_cell_says(notebook):
    """The cells up to the last parameter-setting one, executed in order as Jupyter executes them, leave every
    parameter as the `parameters` cell sets it: no papermill injected-parameters cell of an earlier run is left."""
    import nbformat

    cells = [c for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"]
    tags = [c.metadata.get("tags", []) for c in cells]
    assert not any(notebooks.INJECTED_TAG in t for t in tags)
    last = max(i for i, t in enumerate(tags) if "parameters" in t or notebooks.INJECTED_TAG in t)
    declared = _parameter_names(next(c.source for c, t in zip(cells, tags) if "parameters" in t))
    in_order = _parameter_names("\n".join(c.source for c in cells[: last + 1]))
    assert {name: in_order[name] for name in declared} == declared


def test_runner_drops_a_stale_injected_cell(tmp_path):
    """A notebook saved with papermill's injected cell of an earlier run: run without parameters it uses its parameter
    cell and is saved without the stale cell; with parameters, they apply."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("X = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("X = 2", metadata={"tags": [notebooks.INJECTED_TAG]}),
                nbformat.v4.new_code_cell("import pathlib; pathlib.Path('x.txt').write_text(str(X))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "stale.ipynb"
    nbformat.write(nb, path)
    run_notebook(path, timeout=120)
    assert (tmp_path / "x.txt").read_text() == "1"
    saved = nbformat.read(path, as_version=4)
    assert [c.metadata.get("tags", []) for c in saved.cells] == [["parameters"], []]
    run_notebook(path, tmp_path / "out.ipynb", {"X": 3}, timeout=120)
    assert (tmp_path / "x.txt").read_text() == "3"


@pytest.mark.parametrize("name", ["SD_compare_reps", "SD_steering", "Table1_detection"])
def test_sd_notebook_smoke_run_is_on_the_tiny_pipeline_and_default_run_needs_the_weights(name):
    notebook = next(nb for nb in all_notebooks() if nb.stem == name)
    assert notebooks.notebook_settings(notebook) == {"requires": ["stable-diffusion"],
                                                     "smoke_parameters": {"MODEL": "tiny"}}


@pytest.mark.parametrize("name", ["SD_compare_reps", "SD_steering", "Table1_detection"])
def test_sd_notebook_runs_on_a_smoke_testbed_and_says_so(name, tmp_path, monkeypatch):
    """The path `make figures` takes without SD v1.4: the notebook on a (SMOKE-size) CPU testbed folder."""
    from common.testbeds import cpu_testbed as testbed

    monkeypatch.setenv("DGR_CACHE", str(tmp_path / "cache"))
    folder = testbed.ensure_testbed(testbed.SMOKE_CONFIG, progress=False, root=tmp_path / "testbed")
    notebook = next(nb for nb in all_notebooks() if nb.stem == name)
    run_notebook(notebook, tmp_path / notebook.name, {**smoke_parameters(notebook, tmp_path), "MODEL": str(folder)},
                 timeout=600)
    payload = json.loads((tmp_path / "results" / f"{name}.json").read_text())
    assert payload["model"] == "cpu-testbed" and payload["model_id"] == folder.name
    data = testbed.load_data(folder)
    if name == "SD_compare_reps":
        assert payload["n_mem"] == len(data.indices("memorized")) and payload["prompt_source"]["mem"].startswith("cpu-testbed")
    elif name == "Table1_detection":              # the control: the titles trained once or twice
        assert payload["n"]["control"] == sum(len(data.indices("dose", d)) for d in (1, 2)) > 0
        assert payload["settings"]["nemo_statistics"].endswith("calibration prompts")
        config = testbed.SMOKE_CONFIG.data      # every kind's set, per caption as KIND_SETS says
        assert {k: v["n_generations"] for k, v in payload["memorized_by_kind"].items()} == {
            "verbatim": config.n_memorized, "template": config.n_template * testbed.KIND_SETS["template"][2],
            "ordinary": config.n_ordinary * testbed.KIND_SETS["ordinary"][2]}
        assert set(payload["laion"]["std"]["by_kind"]) == {"verbatim", "template", "ordinary", "all"}
    else:
        assert payload["task"] == "dark background"


def write_notebook(path, requires):
    path.write_text(json.dumps({"cells": [], "metadata": {"dgr": {"requires": requires}}, "nbformat": 4,
                                "nbformat_minor": 5}))
    return path


def test_figures_skips_a_notebook_with_an_unmet_requirement_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(notebooks.REQUIREMENTS, "a", lambda: Availability(False, "needs A"))
    monkeypatch.setattr(notebooks, "run_notebook", lambda *a, **k: pytest.fail("a skipped notebook was executed"))
    nb = write_notebook(tmp_path / "needs_a.ipynb", ["a"])
    assert notebooks.main([str(nb)]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [f"-- skipped {nb}: needs A"]


def test_figures_runs_an_sd_notebook_on_the_cpu_testbed_without_the_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DGR_SD_MODEL", raising=False)
    ran = []
    monkeypatch.setattr(notebooks, "run_notebook", lambda nb, out, params, **k: ran.append(params))
    nb = write_notebook(tmp_path / "needs_sd.ipynb", ["stable-diffusion"])
    assert notebooks.main([str(nb)]) == 0
    assert ran == [{}]            # the notebook's own MODEL = None chooses the testbed: no injected parameters
    first = capsys.readouterr().out.strip().splitlines()[0]
    assert first.startswith(f"-- {nb}: SD v1.4 cannot run here (needs the CompVis/stable-diffusion-v1-4 weights")
    assert first.endswith("running on the CPU testbed")


def test_requirements_combine_into_one_line_and_pass_stand_in_parameters(tmp_path, monkeypatch):
    monkeypatch.setitem(notebooks.REQUIREMENTS, "a", lambda: Availability(False, "needs A"))
    monkeypatch.setitem(notebooks.REQUIREMENTS, "b", lambda: Availability(False, "needs B"))
    monkeypatch.setitem(notebooks.REQUIREMENTS, "c", lambda: Availability(True, "", {"MODEL": "testbed"}))
    assert notebooks.check_requirements(write_notebook(tmp_path / "x.ipynb", ["a", "b", "c"])).message == "needs A; needs B"
    ok = notebooks.check_requirements(write_notebook(tmp_path / "y.ipynb", ["c"]))
    assert ok.runnable and ok.parameters == {"MODEL": "testbed"}
    ran = []
    monkeypatch.setattr(notebooks, "run_notebook", lambda nb, out, params, **k: ran.append(params))
    assert notebooks.main([str(tmp_path / "y.ipynb")]) == 0 and ran == [{"MODEL": "testbed"}]
    with pytest.raises(KeyError, match="unknown requirement 'zzz'"):
        notebooks.check_requirements(write_notebook(tmp_path / "z.ipynb", ["zzz"]))


def _official_files(tmp_path, module, live):
    """Two checkpoints as the official notebooks write them (`torch.save(model.state_dict(), path)` of the official
    class), with `live[i]` weight rows of norm 0.6 and the rest of norm 1e-3, so the notebook's live-unit count shows
    which file it read."""
    import torch

    paths = []
    for name, n_live in zip(("mem", "gen"), live):
        torch.manual_seed(0)
        model = module()
        W = model.encoder[0].weight if isinstance(model.encoder, torch.nn.Sequential) else model.encoder.weight
        with torch.no_grad():
            W.mul_(torch.where(torch.arange(len(W)) < n_live, 0.6, 1e-3)[:, None] / W.norm(dim=1, keepdim=True))
        paths.append(tmp_path / f"official_{name}.pth")
        torch.save(model.state_dict(), paths[-1])
    return paths


@pytest.mark.parametrize("name", ["ReLU_DAE", "ReLU_Diffusion"])
def test_theory_notebook_evaluates_official_checkpoint_files(name, tmp_path, monkeypatch):
    """The documented OFFICIAL_MEM_CHECKPOINT / OFFICIAL_GEN_CHECKPOINT parameters, on files written by the official
    classes (`common.theory.official`: the real module nesting, key names and shapes)."""
    from common.theory import official

    monkeypatch.setenv("DGR_CACHE", str(tmp_path / "cache"))
    module = official.DAE if name == "ReLU_DAE" else official.DAECond
    mem_path, gen_path = _official_files(tmp_path, module, live=(3, 7))
    notebook = next(nb for nb in all_notebooks() if nb.stem == name)
    run_notebook(notebook, tmp_path / notebook.name, {**smoke_parameters(notebook, tmp_path),
                 "OFFICIAL_MEM_CHECKPOINT": str(mem_path), "OFFICIAL_GEN_CHECKPOINT": str(gen_path)}, timeout=600)
    payload = json.loads((tmp_path / "results" / f"{name}.json").read_text())
    assert payload["config"]["official_checkpoints"] == [mem_path.name, gen_path.name]     # portable names
    assert payload["mem"]["live_units"] == 3
    if name == "ReLU_DAE":
        assert payload["gen"]["units_norm_gt_0_5"] == 7
        assert payload["train_seconds"] == {"mem": None, "gen": None}
    else:
        assert payload["gen"]["live_units"] == 7 and payload["mem_seed"] is None


def _texts(node):
    """Every string in a notebook's JSON, with the path of keys to it."""
    if isinstance(node, dict):
        return [(f"{k}.{p}".rstrip("."), t) for k, v in node.items() for p, t in _texts(v)]
    if isinstance(node, list):
        return [(f"{i}.{p}".rstrip("."), t) for i, v in enumerate(node) for p, t in _texts(v)]
    return [("", node)] if isinstance(node, str) else []


@pytest.mark.parametrize("notebook", all_notebooks(), ids=lambda p: p.stem)
def test_committed_notebook_names_no_machine_path(notebook):
    """papermill's metadata names the notebook relative to the repo, and no output prints a path of the machine that
    ran it. (The theory notebooks' committed outputs still hold one stale tqdm IProgress warning naming the venv, from
    before that notice was silenced; it goes with their next run.)"""
    import re

    # an absolute path in any text; "/path/to/..." is the placeholder of the instructions, not a machine's path
    absolute = re.compile(r"""(?:^|[\s'"(\[=])(/[\w.-][^\s'")\]]*)""")
    payload = json.loads(notebook.read_text())
    relative = notebook.relative_to(notebook.parents[1]).as_posix()
    assert {k: payload["metadata"]["papermill"][k] for k in ("input_path", "output_path")} == \
        {"input_path": relative, "output_path": relative}
    found = [(where, text[:120]) for where, text in _texts(payload)
             if any(not m.startswith("/path/to/") for m in absolute.findall(text))
             and "TqdmWarning: IProgress not found" not in text]
    assert found == []


def test_runner_names_the_notebook_portably_in_its_metadata(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("X = 1", metadata={"tags": ["parameters"]})]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "a.ipynb")
    run_notebook(tmp_path / "a.ipynb", tmp_path / "b.ipynb", timeout=120)
    saved = nbformat.read(tmp_path / "b.ipynb", as_version=4)
    assert (saved.metadata.papermill.input_path, saved.metadata.papermill.output_path) == ("a.ipynb", "b.ipynb")


def test_an_in_place_run_of_a_repo_notebook_records_its_time(tmp_path):
    """`results/make_figures.json` keeps the last wall time of each repo notebook; a notebook elsewhere (a test's,
    a user's copy) is not recorded."""
    root = tmp_path / "repo"
    (root / "1-Theory").mkdir(parents=True)
    for name in ("A", "B"):
        write_notebook(root / "1-Theory" / f"{name}.ipynb", [])
    results_dir = root / "results"
    assert notebooks.record_time(root / "1-Theory" / "A.ipynb", 12.34, results_dir, root)
    assert notebooks.record_time(root / "1-Theory" / "B.ipynb", 5.0, results_dir, root)
    assert notebooks.record_time(root / "1-Theory" / "A.ipynb", 7.06, results_dir, root)
    record = json.loads((results_dir / "make_figures.json").read_text())
    assert record["seconds"] == {"A": 7.1, "B": 5.0}
    assert record["threads"] >= 1 and record["cpu_count"] >= 1 and record["cpu"]
    assert not notebooks.record_time(write_notebook(tmp_path / "C.ipynb", []), 1.0, results_dir, root)
    assert "C" not in json.loads((results_dir / "make_figures.json").read_text())["seconds"]
