"""The steering experiment's plumbing: cached references that are never reused for another prompt, seed or
model; steered sweeps whose α = 0 is the plain generation; the measures on hand-made arrays."""
import numpy as np
import pytest
import torch
from PIL import Image

from common.models import generate
from common.steering import steerability as st
from common.models.generate import GenerationConfig
from common.steering.steerer import STEERING_LAYERS, StepWindow
from test_generate import InterruptingPipe, pixels

CONFIG = GenerationConfig(model="tiny", num_inference_steps=4, guidance_scale=3.5, seed=0)
WINDOW = StepWindow.last(4, last_n=2, skip_last=1)


def test_pixel_and_latent_change_projection_and_monotone_on_hand_made_arrays():
    base = -torch.ones(2, 3, 4, 4)                                           # black, [-1, 1] scale
    images = base.clone()
    images[0] = 0.0                                                          # mid grey: |delta| = 0.5 on [0, 1]
    images[1, :, :2] = 1.0                                                   # half the pixels white: mean 0.5
    np.testing.assert_allclose(st.pixel_change(images, base), [0.5, 0.5])
    np.testing.assert_allclose(st.pixel_change(base, base), [0.0, 0.0])
    latents = torch.zeros(2, 4, 2, 2)
    moved = latents.clone()
    moved[0] += 3.0                                                          # every entry by 3: RMS 3
    moved[1, 0, 0, 0] = 4.0                                                  # one of 16 entries by 4: RMS 1
    np.testing.assert_allclose(st.latent_change(moved, latents), [3.0, 1.0])
    pos_mean, neg_mean = np.array([3.0, 1.0]), np.array([1.0, 1.0])         # axis d = (2, 0), |d|^2 = 4
    reps = np.array([[2.0, 7.0], [-1.0, 0.0], [3.0, 3.0]])
    np.testing.assert_allclose(st.concept_projection(reps, np.zeros((3, 2)), pos_mean, neg_mean), [1.0, -0.5, 1.5])
    assert st.is_monotone([0.0, 0.1, 0.1, 0.3]) and not st.is_monotone([0.0, 0.2, 0.1])


def group(pixel_at_max, prompts=("a", "a", "b", "b")):
    alphas = [0.0, 0.25, 0.5]
    pixel = np.array([[0.0] * 4, [0.01, 0.03, 0.02, 0.02], pixel_at_max])   # [A, M]
    return st.GroupMeasures(alphas, list(prompts), pixel, pixel * 10, pixel * 2, np.zeros((3, 4, 5)))


def test_group_summary_and_the_steerability_ratio():
    gen, mem = group([0.2, 0.4, 0.3, 0.3]), group([0.01, 0.0, 0.02, 0.01])
    summary = gen.summary()
    np.testing.assert_allclose(summary["change_by_alpha"]["pixel_mean_abs"], [0.0, 0.02, 0.3])
    np.testing.assert_allclose(summary["change_by_alpha"]["latent_rms"], [0.0, 0.2, 3.0])
    np.testing.assert_allclose(summary["projection_by_alpha"], [0.0, 0.04, 0.6])
    assert summary["monotone"] is True and summary["n_images"] == 4 and summary["n_prompts"] == 2
    assert [p["prompt"] for p in summary["per_prompt"]] == ["a", "b"]
    np.testing.assert_allclose(summary["per_prompt"][0]["pixel_mean_abs_by_alpha"], [0.0, 0.02, 0.3])
    assert st.steerability_ratio(mem, gen) == pytest.approx(0.01 / 0.3)
    mem_mid = group([0.01, 0.0, 0.02, 0.01])
    mem_mid.pixel[1] = [0.0, 0.01, 0.0, 0.01]                                 # mean 0.005 at α = 0.25
    assert st.steerability_ratio(mem_mid, gen, alpha=0.25) == pytest.approx(0.005 / 0.02)
    with pytest.raises(ValueError, match="alpha 0.3 was not swept"):
        st.steerability_ratio(mem, gen, alpha=0.3)
    assert group([0.0, 0.0, 0.01, 0.01]).summary()["monotone"] is False    # 0.02 then 0.005: decreases
    assert st.steerability_ratio(mem, group([0.0] * 4)) is None
    with pytest.raises(ValueError, match="different alphas"):
        st.steerability_ratio(mem, st.GroupMeasures([0.0, 1.0], [], np.zeros((2, 1)), np.zeros((2, 1)),
                                                    np.zeros((2, 1)), np.zeros((2, 1, 1))))


def test_cached_references_are_never_reused_for_another_prompt_seed_or_model(tiny_pipe, tmp_path):
    first = st.generate_references(tiny_pipe, "an old face", 2, CONFIG, tmp_path, progress=False)
    again = InterruptingPipe(tiny_pipe)
    assert st.generate_references(again, "an old face", 2, CONFIG, tmp_path, progress=False) == first
    assert again.calls == []                                                 # the cache is used ...
    variants = {
        "prompt": st.generate_references(tiny_pipe, "a young face", 2, CONFIG, tmp_path, progress=False),
        "seed": st.generate_references(tiny_pipe, "an old face", 2, GenerationConfig(**{**CONFIG.to_dict(), "seed": 9}),
                                       tmp_path, progress=False),
        "model": st.generate_references(tiny_pipe, "an old face", 2,
                                        GenerationConfig(**{**CONFIG.to_dict(), "model": "other"}), tmp_path,
                                        progress=False),
    }
    folders = {r[0]["path"].rsplit("/", 2)[1] for r in [first, *variants.values()]}
    assert len(folders) == 4                                                 # ... but only by its own key
    assert [r["prompt"] for r in variants["prompt"]] == ["a young face"] * 2
    assert [r["seed"] for r in variants["seed"]] == [9, 10]
    assert not np.array_equal(pixels(variants["prompt"][0]["path"]), pixels(first[0]["path"]))
    assert not np.array_equal(pixels(variants["seed"][0]["path"]), pixels(first[0]["path"]))
    with pytest.raises(ValueError, match=r"empty \(n=0 images of 'an old face'\)"):
        st.generate_references(tiny_pipe, "an old face", 0, CONFIG, tmp_path)


def vectors_for(pipe, scale=30.0):
    modules = dict(pipe.unet.named_modules())
    g = torch.Generator().manual_seed(3)
    return {name: (torch.randn(modules[name].out_channels, generator=g) * scale).numpy() for name in STEERING_LAYERS}


def test_steered_sweep_alpha_zero_is_the_plain_generation_and_each_alpha_has_its_folder(tiny_pipe, tmp_path):
    prompts = st.group_prompts(["a face", "a tree"], seeds_per_prompt=2)
    assert prompts == ["a face", "a face", "a tree", "a tree"]
    vectors = vectors_for(tiny_pipe)
    rows = st.generate_steered(tiny_pipe, prompts, vectors, [0.0, 0.5], WINDOW, CONFIG, "gen", tmp_path,
                               progress=False)
    plain = generate.generate_images(tiny_pipe, prompts, tmp_path / "plain", CONFIG, progress=False)
    assert [r["seed"] for r in rows[0.0]] == [0, 1, 2, 3]
    for steered_row, zero_row, plain_row in zip(rows[0.5], rows[0.0], plain):
        np.testing.assert_array_equal(pixels(zero_row["path"]), pixels(plain_row["path"]))
        assert not np.array_equal(pixels(steered_row["path"]), pixels(plain_row["path"]))
    assert len({r[0]["path"].rsplit("/", 2)[1] for r in rows.values()}) == 2
    other_vectors = {name: v * 0.5 for name, v in vectors.items()}
    again = st.generate_steered(tiny_pipe, prompts, other_vectors, [0.5], WINDOW, CONFIG, "gen", tmp_path,
                                progress=False)
    assert again[0.5][0]["path"] != rows[0.5][0]["path"]                     # other vectors: not the cache
    with pytest.raises(ValueError, match="window is for 40 steps, the generation runs 4"):
        st.generate_steered(tiny_pipe, prompts, vectors, [0.5], StepWindow.last(40), CONFIG, "gen", tmp_path)


def test_measure_group_compares_each_alpha_with_alpha_zero(tiny_pipe, tmp_path):
    rows = {}
    for alpha, shade in [(0.0, 0), (0.3, 64), (0.6, 255)]:                   # hand-made "outputs"
        folder = tmp_path / str(alpha)
        folder.mkdir()
        rows[alpha] = []
        for i in range(2):
            Image.new("RGB", (32, 32), (shade, shade, shade)).save(folder / f"{i}.png")
            rows[alpha].append({"prompt": f"p{i}", "path": str(folder / f"{i}.png")})
    width = dict(tiny_pipe.unet.named_modules())[st.TRAJECTORY_LAYER].num_channels
    pos_mean, neg_mean = np.zeros(width), np.zeros(width)
    pos_mean[0] = 2.0                                                        # the axis: channel 0, |d| = 2
    measures = st.measure_group(tiny_pipe, rows, pos_mean, neg_mean, progress=False)
    assert measures.alphas == [0.0, 0.3, 0.6] and measures.reps.shape == (3, 2, width)
    np.testing.assert_allclose(measures.pixel, [[0, 0], [64 / 255, 64 / 255], [1, 1]], rtol=1e-6)
    assert np.all(measures.latent[0] == 0) and np.all(measures.latent[2] > measures.latent[1])
    assert np.all(measures.projection[0] == 0)
    np.testing.assert_allclose(measures.projection[2], (measures.reps[2, :, 0] - measures.reps[0, :, 0]) / 2, rtol=1e-5)
    assert np.abs(measures.projection[2]).min() > 1e-3
    with pytest.raises(ValueError, match="needs alpha = 0"):
        st.measure_group(tiny_pipe, {0.3: rows[0.3]}, pos_mean, neg_mean)
