"""Pipeline loading: the tiny builder, a local folder, and the fast offline failure."""
import time

import pytest
import torch
from diffusers import DDIMScheduler

from common import families
from common.models import pipelines
from common.models.pipelines import PipelineUnavailableError


def test_tiny_pipeline_has_the_sd_layout(tiny_pipe):
    modules = dict(tiny_pipe.unet.named_modules())
    assert "up_blocks.0.resnets.2.nonlinearity" in modules
    assert type(tiny_pipe.unet.up_blocks[0]).__name__ == "UpBlock2D"          # as SD v1.4: no attention at 8x8
    assert tiny_pipe.vae_scale_factor == 2 and tiny_pipe.unet.config.sample_size == 16
    assert isinstance(tiny_pipe.scheduler, DDIMScheduler) and tiny_pipe.safety_checker is None
    assert tiny_pipe.text_encoder.config.hidden_size == tiny_pipe.unet.config.cross_attention_dim


def test_character_tokenizer_keeps_every_character():
    tok = pipelines.build_character_tokenizer()
    assert len(tok) == 514
    ids = tok("Hi, you!").input_ids                                             # lower-cased by CLIP
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.convert_ids_to_tokens(ids[1:-1]) == ["h", "i</w>", ",</w>", "y", "o", "u</w>", "!</w>"]  # word ends marked
    assert tok("", padding="max_length", max_length=77).input_ids[1:] == [tok.eos_token_id] * 76


def test_local_folder_loads_offline(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "sd")
    assert pipelines.weights_missing_reason(tmp_path / "sd") is None
    pipe = pipelines.load_pipeline(str(tmp_path / "sd"), device="cpu")
    assert isinstance(pipe.scheduler, DDIMScheduler) and pipe.safety_checker is None
    assert pipe.unet.dtype == torch.float32
    for (name, a), (_, b) in zip(tiny_pipe.unet.state_dict().items(), pipe.unet.state_dict().items()):
        assert torch.equal(a, b), name


def test_folder_without_a_pipeline_is_named(tmp_path):
    assert "is not a diffusers pipeline folder" in pipelines.weights_missing_reason(tmp_path)
    with pytest.raises(PipelineUnavailableError, match="not a diffusers pipeline folder"):
        pipelines.load_pipeline(str(tmp_path), device="cpu")


def test_hub_id_offline_fails_fast_naming_the_local_folder(monkeypatch):
    monkeypatch.delenv(pipelines.MODEL_ENV_VAR, raising=False)
    t0 = time.perf_counter()
    with pytest.raises(PipelineUnavailableError) as err:
        pipelines.load_pipeline(device="cpu")                                   # HF_HUB_OFFLINE=1 (conftest)
    assert time.perf_counter() - t0 < 5
    message = str(err.value)
    assert pipelines.SD14_HUB_ID in message and "HF_HUB_OFFLINE" in message
    assert "MODEL='/path/to/sd-v1-4'" in message and "DGR_SD_MODEL" in message
    assert "needs the CompVis/stable-diffusion-v1-4 weights" in pipelines.weights_missing_reason()


def test_unreachable_hub_fails_fast_without_offline_flags(monkeypatch):
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", pipelines.MODEL_ENV_VAR):
        monkeypatch.delenv(flag, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1")                     # nothing listens on 443
    t0 = time.perf_counter()
    with pytest.raises(PipelineUnavailableError, match="not reachable"):
        pipelines.load_pipeline("some-org/some-model", device="cpu", timeout=2.0)
    assert time.perf_counter() - t0 < 5


def test_model_resolution_and_dtypes(monkeypatch):
    monkeypatch.setenv(pipelines.MODEL_ENV_VAR, "/data/sd-v1-4")
    assert pipelines.resolve_model() == "/data/sd-v1-4"
    assert pipelines.resolve_model("tiny") == "tiny"
    monkeypatch.delenv(pipelines.MODEL_ENV_VAR)
    assert pipelines.resolve_model() == pipelines.SD14_HUB_ID
    assert pipelines.resolve_dtype("cuda") == torch.float16 and pipelines.resolve_dtype("cpu") == torch.float32
    with pytest.warns(UserWarning, match="fp16 was requested on the CPU"):
        assert pipelines.resolve_dtype("cpu", "float16") == torch.float32
    with pytest.warns(UserWarning, match="fp16"):
        assert pipelines.load_pipeline("tiny", device="cpu", dtype=torch.float16).unet.dtype == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answer")
def test_default_model_is_the_sd_folder_where_it_may_run_else_the_testbed(tmp_path, monkeypatch):
    """MODEL = None: $DGR_SD_MODEL when its weights are there and a GPU (or $DGR_SD_ON_CPU=1) is; else the testbed."""
    folder = tmp_path / "sd-v1-4"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    monkeypatch.setenv("DGR_SD_MODEL", str(folder))
    monkeypatch.delenv("DGR_SD_ON_CPU", raising=False)
    assert pipelines.stable_diffusion_missing_reason() == "needs a CUDA GPU (or DGR_SD_ON_CPU=1 to run on the CPU)"
    assert families.choose_model(None) == families.TESTBED_MODEL
    monkeypatch.setenv("DGR_SD_ON_CPU", "1")
    assert pipelines.stable_diffusion_missing_reason() is None
    assert families.choose_model(None) == str(folder)
    assert families.choose_model("tiny") == "tiny"
