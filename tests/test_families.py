"""The registry of model families: every name, folder and loaded model finds its one family; the detectors reach
every family's network through it."""
import json

import pytest
import torch

from common import families
from common.detectors import lid
from common.models import dit, edm, pipelines
from common.testbeds import edm_testbed


def test_names_and_hub_ids_find_their_family():
    assert families.family_of("tiny").name == families.family_of("sd14").name == "random-sd"
    assert families.family_of("testbed").name == "cpu-testbed"                     # the name alone: nothing trained
    assert families.family_of("edm-testbed").name == "edm" and families.family_of("dit-testbed").name == "dit"
    assert families.family_of(pipelines.SD14_HUB_ID).name == "sd"                  # the last resort
    assert families.family_of(edm.DDPM_CIFAR10_HUB_ID).name == "edm"
    assert families.model_label("tiny") == "tiny" and families.model_label(pipelines.SD14_HUB_ID) == pipelines.SD14_HUB_ID


def test_folders_find_their_family_by_what_they_hold(tmp_path):
    sd_folder, edm_folder, dit_folder = tmp_path / "my-sd", tmp_path / "my-edm", tmp_path / "my-dit"
    for folder in (sd_folder, edm_folder, dit_folder / "transformer"):
        folder.mkdir(parents=True)
    (sd_folder / "model_index.json").write_text("{}")
    (edm_folder / edm.CONFIG_NAME).write_text("{}")
    (edm_folder / "testbed.json").write_text("{}")            # a testbed record too: still EDM, not the CPU testbed
    (dit_folder / "transformer" / "config.json").write_text("{}")
    assert [families.family_of(f).name for f in (sd_folder, edm_folder, dit_folder)] == ["sd", "edm", "dit"]
    assert families.model_label(str(sd_folder)) == "my-sd" and families.model_label(str(edm_folder)) == "edm-testbed"


def test_loaded_models_find_their_family_and_interface(tiny_pipe):
    denoiser = edm_testbed.build_denoiser(edm_testbed.SMOKE_CONFIG)
    transformer_config = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, num_layers=2,
                              sample_size=4, patch_size=2, num_embeds_ada_norm=5)
    from diffusers import DiTTransformer2DModel

    model = dit.DiTModel(DiTTransformer2DModel(**transformer_config), vae=None)
    found = [families.family_of(m) for m in (tiny_pipe, denoiser, model)]
    assert [f.name for f in found] == ["sd", "edm", "dit"]
    assert [f.interface for f in found] == ["sd-pipeline", "edm-denoiser", "dit"]
    with pytest.raises(TypeError, match="not a model of any family"):
        families.family_of(torch.nn.Linear(2, 2))


def test_every_interface_is_reached_by_the_detectors_that_branch_on_it():
    assert {f.interface for f in families.FAMILIES.values()} == set(families.INTERFACES)
    assert set(lid.LID_BY_INTERFACE) == set(families.INTERFACES)
    with pytest.raises(ValueError, match="interface"):
        families.ModelFamily("x", "onnx", str, str, str, str, str)


def test_what_a_family_does_not_offer_is_an_error_naming_it():
    with pytest.raises(ValueError, match="edm-testbed: this model family has no detection prompt sets"):
        families.family_of("edm-testbed").detection_prompts("edm-testbed", 5, 5)
    with pytest.raises(ValueError, match="no calibration prompts"):
        families.family_of("tiny").calibration_prompts("tiny")
    assert families.family_of("tiny").steering_task("tiny").name == "age_old"


def test_resolving_the_testbed_name_gives_its_trained_folder(monkeypatch, tmp_path):
    from common.testbeds import cpu_testbed

    monkeypatch.setattr(cpu_testbed, "ensure_testbed", lambda: tmp_path / "cpu-testbed-abc")
    assert families.resolve_model("testbed") == str(tmp_path / "cpu-testbed-abc")
    assert families.resolve_model("tiny") == "tiny"
    monkeypatch.setenv("DGR_SD_MODEL", "/data/sd-v1-4")
    assert families.resolve_model(None) == "/data/sd-v1-4"
