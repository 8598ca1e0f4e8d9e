"""The representation recorder: which call of a module it keeps, batches, and that it leaves no trace."""
import pytest
import torch
import torch.nn.functional as F

from common.models.hooks import RepresentationRecorder, UnknownModuleError, resolve_modules
from common.models.representations import DETECTION_LAYER, encode_prompt

BLOCK = "up_blocks.0.resnets.2"


def unet_inputs(pipe, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    side = pipe.unet.config.sample_size
    latents = torch.randn(batch, 4, side, side, generator=g)                 # [B, 4, 16, 16]
    return latents, torch.full((batch,), 10), encode_prompt(pipe, "", batch)


def all_hooks(module):
    return [h for m in module.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]


@torch.no_grad()
def test_keeps_the_last_of_the_three_silu_calls(tiny_pipe):
    unet, block = tiny_pipe.unet, tiny_pipe.unet.up_blocks[0].resnets[2]
    norm2_out = []
    handle = block.norm2.register_forward_hook(lambda m, i, o: norm2_out.append(o))   # an independent witness
    try:
        with RepresentationRecorder(unet, [DETECTION_LAYER]) as rec:
            unet(*unet_inputs(tiny_pipe))
    finally:
        handle.remove()
    assert rec.calls[DETECTION_LAYER] == 3                                   # norm1, temb, norm2
    h = rec.outputs[DETECTION_LAYER]
    assert h.shape == (2, block.norm2.num_channels, 8, 8)
    assert torch.equal(h, F.silu(norm2_out[0]))                              # the last call: SiLU(norm2(.))


@torch.no_grad()
def test_keep_all_returns_the_three_calls_in_order(tiny_pipe):
    unet, block = tiny_pipe.unet, tiny_pipe.unet.up_blocks[0].resnets[2]
    with RepresentationRecorder(unet, [DETECTION_LAYER], keep="all") as rec:
        unet(*unet_inputs(tiny_pipe, batch=3))
    shapes = [tuple(x.shape) for x in rec.outputs[DETECTION_LAYER]]
    assert shapes == [(3, block.norm1.num_channels, 8, 8), (3, block.time_emb_proj.in_features),
                      (3, block.norm2.num_channels, 8, 8)]


@torch.no_grad()
def test_hooks_are_removed_and_the_model_runs_as_if_never_hooked(tiny_pipe):
    unet = tiny_pipe.unet
    inputs = unet_inputs(tiny_pipe)
    assert all_hooks(unet) == []
    before = unet(*inputs).sample
    with RepresentationRecorder(unet, [DETECTION_LAYER, BLOCK, "up_blocks.1.attentions.0", ""]) as rec:
        assert len(all_hooks(unet)) == 4
        unet(*inputs)
    assert all_hooks(unet) == []
    after = unet(*inputs).sample
    assert torch.equal(before, after)
    assert rec.outputs[""].shape == before.shape                            # "" is the model itself (tuple output)
    with pytest.raises(RuntimeError, match="boom"):
        with RepresentationRecorder(unet, [DETECTION_LAYER]):
            raise RuntimeError("boom")
    assert all_hooks(unet) == []


@torch.no_grad()
def test_batched_recording_matches_one_sample_at_a_time(tiny_pipe):
    latents, t, emb = unet_inputs(tiny_pipe, batch=3)
    with RepresentationRecorder(tiny_pipe.unet, DETECTION_LAYER) as rec:
        tiny_pipe.unet(latents, t, emb)
    batched = rec.outputs[DETECTION_LAYER]
    for i in range(3):
        with RepresentationRecorder(tiny_pipe.unet, DETECTION_LAYER) as rec:
            tiny_pipe.unet(latents[i:i + 1], t[i:i + 1], emb[i:i + 1])
        torch.testing.assert_close(rec.outputs[DETECTION_LAYER][0], batched[i], rtol=1e-5, atol=1e-5)


def test_unknown_layer_lists_the_closest_valid_names(tiny_pipe):
    with pytest.raises(UnknownModuleError) as err:
        RepresentationRecorder(tiny_pipe.unet, ["up_blocks.0.resnet.2.nonlinearity"])
    message = str(err.value)
    assert "'up_blocks.0.resnet.2.nonlinearity' is not a module" in message
    assert "up_blocks.0.resnets.2.nonlinearity" in message
    assert resolve_modules(tiny_pipe.unet, [BLOCK])[BLOCK] is tiny_pipe.unet.up_blocks[0].resnets[2]
    with pytest.raises(ValueError, match="keep"):
        RepresentationRecorder(tiny_pipe.unet, [BLOCK], keep="first")
