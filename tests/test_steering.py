"""The steerer: what it changes (the conditional half, inside its window, by α·v), what it leaves alone (everything
else, bit for bit, and the model after it exits), and the errors bad input gets."""
import math

import numpy as np
import pytest
import torch

from common.models import representations as reps
from common.models.hooks import RepresentationRecorder, UnknownModuleError
from common.steering.steerer import (MEAN_OF_POS, POS_MINUS_NEG, STEERING_LAYERS, RepresentationSteerer, StepWindow,
                             concept_vectors)
from test_hooks import all_hooks, unet_inputs

STEPS = 6
WINDOW = StepWindow.last(STEPS, last_n=3, skip_last=1)          # steps 2, 3, 4 of 6
FIRST = "up_blocks.0.resnets.0"                                  # the first steered layer: its input is unsteered


def layer_widths(pipe):
    modules = dict(pipe.unet.named_modules())
    return {name: modules[name].out_channels for name in STEERING_LAYERS}


def random_vectors(pipe, seed=0, scale=20.0):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(c, generator=g) * scale for name, c in layer_widths(pipe).items()}   # [C] each


def run(pipe, guidance_scale=3.5, prompts=("an old face", "a tree")):
    generators = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
    return pipe(list(prompts), num_inference_steps=STEPS, guidance_scale=guidance_scale, generator=generators,
                output_type="np").images                                                    # [B, H, W, 3]


@pytest.fixture(scope="module")
def unsteered(tiny_pipe):
    return run(tiny_pipe)


def test_the_official_window_is_steps_18_to_37_of_40():
    window = StepWindow.last()
    assert window.steps == tuple(range(18, 38)) and window.num_inference_steps == 40
    assert str(window) == "steps 18-37 of 40"
    assert WINDOW.steps == (2, 3, 4)
    assert StepWindow.last(5, last_n=0).steps == ()
    assert StepWindow((4, 1, 1), 5).steps == (1, 4)


def test_alpha_zero_and_an_empty_window_leave_the_output_bitwise_equal(tiny_pipe, unsteered):
    vectors = random_vectors(tiny_pipe)
    with RepresentationSteerer(tiny_pipe.unet, vectors, 0.0, WINDOW, cfg=True) as steerer:
        assert np.array_equal(run(tiny_pipe), unsteered)
    assert steerer.steered_steps == [2, 3, 4]                        # alpha = 0 went through the addition
    with RepresentationSteerer(tiny_pipe.unet, vectors, 0.5, StepWindow.last(STEPS, last_n=0), cfg=True) as steerer:
        assert np.array_equal(run(tiny_pipe), unsteered)
    assert steerer.calls == STEPS and steerer.steered_steps == []
    with RepresentationSteerer(tiny_pipe.unet, vectors, 0.5, WINDOW, cfg=True):
        assert not np.allclose(run(tiny_pipe), unsteered, atol=1e-4)  # the same vectors in the window do act


@torch.no_grad()
def test_only_the_conditional_half_changes_and_only_inside_the_window(tiny_pipe):
    vectors, alpha = random_vectors(tiny_pipe), 0.5
    layers = list(STEERING_LAYERS)
    with RepresentationRecorder(tiny_pipe.unet, layers, keep="all") as plain:
        run(tiny_pipe)
    with RepresentationSteerer(tiny_pipe.unet, vectors, alpha, WINDOW, cfg=True):
        with RepresentationRecorder(tiny_pipe.unet, layers, keep="all") as steered:   # hooks after the steerer's
            run(tiny_pipe)
    start = WINDOW.steps[0]
    for layer in layers:
        for step in range(start):                                    # before the window: nothing differs
            assert torch.equal(steered.outputs[layer][step], plain.outputs[layer][step]), (layer, step)
        uncond, cond = steered.outputs[layer][start].chunk(2)        # [B, C, H, W] each; batch [uncond; cond]
        plain_uncond, plain_cond = plain.outputs[layer][start].chunk(2)
        assert torch.equal(uncond, plain_uncond), layer              # the unconditional half is untouched
        assert not torch.allclose(cond, plain_cond, atol=1e-3), layer
    uncond, cond = steered.outputs[FIRST][start].chunk(2)
    plain_cond = plain.outputs[FIRST][start].chunk(2)[1]
    torch.testing.assert_close(cond - plain_cond, (alpha * vectors[FIRST])[None, :, None, None].expand_as(cond),
                               rtol=1e-4, atol=1e-4)                 # + alpha v at every position


@torch.no_grad()
def test_cfg_off_steers_the_whole_batch_and_a_non_cfg_batch_with_cfg_on_is_refused(tiny_pipe):
    unet = tiny_pipe.unet
    latents, t, emb = unet_inputs(tiny_pipe, batch=2)
    v = {FIRST: torch.ones(layer_widths(tiny_pipe)[FIRST])}
    with RepresentationRecorder(unet, [FIRST]) as plain:
        unet(latents, t, emb)
    with RepresentationSteerer(unet, v, 2.0, StepWindow((0,), 1), cfg=False):
        with RepresentationRecorder(unet, [FIRST]) as steered:
            unet(latents, t, emb)
    torch.testing.assert_close(steered.outputs[FIRST] - plain.outputs[FIRST],
                               torch.full_like(plain.outputs[FIRST], 2.0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="not two equal halves"):                 # two different latents
        with RepresentationSteerer(unet, v, 2.0, StepWindow((0,), 1), cfg=True):
            unet(latents, t, emb)
    assert all_hooks(unet) == []


def test_after_the_context_the_model_is_unchanged(tiny_pipe, unsteered):
    vectors = random_vectors(tiny_pipe)
    assert all_hooks(tiny_pipe.unet) == []
    with RepresentationSteerer(tiny_pipe.unet, vectors, 0.5, WINDOW, cfg=True):
        assert len(all_hooks(tiny_pipe.unet)) == 1 + len(vectors)   # the step counter and one per layer
        run(tiny_pipe)
    assert all_hooks(tiny_pipe.unet) == []
    assert np.array_equal(run(tiny_pipe), unsteered)
    with pytest.raises(RuntimeError, match="boom"):
        with RepresentationSteerer(tiny_pipe.unet, vectors, 0.5, WINDOW, cfg=True):
            raise RuntimeError("boom")
    assert all_hooks(tiny_pipe.unet) == []
    assert np.array_equal(run(tiny_pipe), unsteered)


def test_steps_are_counted_per_run_and_a_run_of_another_length_is_flagged(tiny_pipe):
    vectors = random_vectors(tiny_pipe)
    with RepresentationSteerer(tiny_pipe.unet, vectors, 0.5, WINDOW, cfg=True) as steerer:
        run(tiny_pipe)
        run(tiny_pipe, prompts=("x",))
    assert steerer.calls == 2 * STEPS and steerer.steered_steps == [2, 3, 4, 2, 3, 4]
    with pytest.warns(UserWarning, match="ran 4 times, not a multiple of the window's 6 steps"):
        with RepresentationSteerer(tiny_pipe.unet, vectors, 0.5, WINDOW, cfg=True):
            tiny_pipe(["x"], num_inference_steps=4, guidance_scale=3.5, output_type="latent")


@torch.no_grad()
def test_fp16_vectors_on_an_fp32_model_and_fp32_vectors_on_an_fp16_model(tiny_pipe):
    from common.models.pipelines import build_random_pipeline

    widths = layer_widths(tiny_pipe)
    half_vectors = {name: torch.linspace(-1, 1, c, dtype=torch.float16) for name, c in widths.items()}
    float_vectors = {name: v.float() for name, v in half_vectors.items()}       # the same values, exactly
    latents, t, emb = unet_inputs(tiny_pipe, batch=1)
    cfg_batch = (torch.cat([latents, latents]), torch.cat([t, t]), torch.cat([emb, emb]))     # [2, 4, 16, 16]
    outputs = {}
    for name, vectors in [("fp16", half_vectors), ("fp32", float_vectors)]:
        with RepresentationSteerer(tiny_pipe.unet, vectors, 0.4, StepWindow((0,), 1), cfg=True):
            outputs[name] = tiny_pipe.unet(*cfg_batch).sample
    assert outputs["fp16"].dtype == torch.float32
    assert torch.equal(outputs["fp16"], outputs["fp32"])

    unet16 = build_random_pipeline("tiny").unet.to(torch.float16)
    inputs16 = [x.half() if x.is_floating_point() else x for x in cfg_batch]
    with RepresentationRecorder(unet16, [FIRST]) as plain:
        unet16(*inputs16)
    with RepresentationSteerer(unet16, float_vectors, 0.4, StepWindow((0,), 1), cfg=True):
        with RepresentationRecorder(unet16, [FIRST]) as steered:
            out16 = unet16(*inputs16).sample
    assert out16.dtype == torch.float16 and torch.isfinite(out16).all()
    shift = (0.4 * float_vectors[FIRST]).half()[None, :, None, None]                             # [1, C, 1, 1]
    torch.testing.assert_close(steered.outputs[FIRST][1:], plain.outputs[FIRST][1:] + shift)
    assert torch.equal(steered.outputs[FIRST][:1], plain.outputs[FIRST][:1])


def test_bad_input_gets_a_clear_error_naming_the_value(tiny_pipe):
    unet, vectors = tiny_pipe.unet, random_vectors(tiny_pipe)
    with pytest.raises(UnknownModuleError, match=r"'up_blocks.0.resnet.1' is not a module.*up_blocks.0.resnets.1"):
        RepresentationSteerer(unet, {"up_blocks.0.resnet.1": vectors[FIRST]}, 0.3, WINDOW, cfg=True)
    wrong = {FIRST: torch.ones(layer_widths(tiny_pipe)[FIRST] + 1)}
    with pytest.raises(ValueError, match=rf"'{FIRST}' has 65 channels, but the module outputs 64"):
        with RepresentationSteerer(unet, wrong, 0.3, WINDOW, cfg=True):
            run(tiny_pipe)                                           # fails at step 0, outside the window too
    with pytest.raises(ValueError, match=r"must have shape \[C\], not \(2, 64\)"):
        RepresentationSteerer(unet, {FIRST: torch.ones(2, 64)}, 0.3, WINDOW, cfg=True)
    with pytest.raises(ValueError, match="non-finite"):
        RepresentationSteerer(unet, {FIRST: torch.full((64,), math.nan)}, 0.3, WINDOW, cfg=True)
    for alpha in (math.nan, math.inf, -math.inf, "strong", None):
        with pytest.raises(ValueError, match=f"alpha must be a finite number, not {alpha!r}"):
            RepresentationSteerer(unet, vectors, alpha, WINDOW, cfg=True)
    with pytest.raises(ValueError, match=r"step 40 is outside the run's steps \[0, 40\)"):
        StepWindow((18, 40), 40)
    with pytest.raises(ValueError, match=r"step -1 is outside"):
        StepWindow((-1,), 40)
    with pytest.raises(ValueError, match=r"last_n=30 \+ skip_last=15 > num_inference_steps=40.*step -5"):
        StepWindow.last(40, last_n=30, skip_last=15)
    with pytest.raises(ValueError, match="skip_last must be a non-negative integer, not -2"):
        StepWindow.last(40, skip_last=-2)
    with pytest.raises(ValueError, match="num_inference_steps must be a positive integer, not 0"):
        StepWindow((), 0)
    with pytest.raises(TypeError, match="window must be a StepWindow"):
        RepresentationSteerer(unet, vectors, 0.3, range(18, 38), cfg=True)
    assert all_hooks(unet) == []


def reference_images(n, seed):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1   # [n, 3, 32, 32]


def test_concept_vectors_are_the_extractors_mean_with_the_concept_prompt(tiny_pipe):
    pos, neg = reference_images(3, 0), reference_images(2, 1)
    kwargs = dict(layers=STEERING_LAYERS, timestep=10, poolings=("spatial_mean",), progress=False)
    pos_reps = reps.extract_representations(tiny_pipe, pos, prompt="old", **kwargs)
    neg_reps = reps.extract_representations(tiny_pipe, neg, prompt="young", **kwargs)
    mean = concept_vectors(tiny_pipe, pos, "old", progress=False)
    diff = concept_vectors(tiny_pipe, pos, "old", rule=POS_MINUS_NEG, neg_images=neg, neg_prompt="young", progress=False)
    for layer, width in layer_widths(tiny_pipe).items():
        expected_mean = pos_reps[layer]["spatial_mean"].mean(axis=0)                 # [C]
        assert mean[layer].shape == (width,) and mean[layer].dtype == np.float32
        np.testing.assert_allclose(mean[layer], expected_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(diff[layer], expected_mean - neg_reps[layer]["spatial_mean"].mean(axis=0),
                                   rtol=1e-5, atol=1e-5)
    other_prompt = concept_vectors(tiny_pipe, pos, "a cat", progress=False)
    assert not np.allclose(other_prompt[FIRST], mean[FIRST])        # the prompt enters the representation
    with pytest.raises(ValueError, match="POS reference set is empty"):
        concept_vectors(tiny_pipe, pos[:0], "old", rule=MEAN_OF_POS)
    with pytest.raises(ValueError, match="needs NEG references"):
        concept_vectors(tiny_pipe, pos, "old", rule=POS_MINUS_NEG)
    with pytest.raises(ValueError, match="unknown rule 'median'"):
        concept_vectors(tiny_pipe, pos, "old", rule="median")
