"""The DiT testbed and the ImageNet (DiT) column: our sampling loop against diffusers' DiTPipeline, the released
DiT-XL/2's config (random weights), the data and cache, the std detector and LID on a transformer against their
recipes written out, and the steerer on token-shaped outputs."""
import numpy as np
import pytest
import torch

from common import detectors
from common.models import dit, representations as reps
from common.testbeds import dit_testbed
from common.detectors import lid
from common.steering.steerer import RepresentationSteerer, StepWindow


def tiny_model(num_classes=5, out_channels=4, seed=0):
    """A random DiT (2 blocks, width 16) on the CPU testbed's VAE layout (16x16 images, 8x8x4 latents)."""
    from diffusers import AutoencoderKL, DiTTransformer2DModel

    from common.testbeds.cpu_testbed import VAE_CONFIG

    torch.manual_seed(seed)
    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                        out_channels=out_channels, num_layers=2, sample_size=8, patch_size=2,
                                        num_embeds_ada_norm=num_classes)
    return dit.DiTModel(transformer, AutoencoderKL(**VAE_CONFIG)).eval()


def test_sampling_loop_equals_diffusers_dit_pipeline_on_a_learned_sigma_1000_class_model():
    """DiTPipeline (null class 1000, CFG batch [cond; uncond], learned-σ split) and our loop (null class K, batch
    [uncond; cond]) must give the same images from the same per-sample seeds."""
    from diffusers import DiTPipeline

    model = tiny_model(num_classes=1000, out_channels=8)
    labels, seeds = [3, 999, 42], [0, 1, 2]
    ours = dit.sample(model, labels, seeds, num_steps=4, guidance_scale=4.0)                 # [3, 3, 16, 16]
    pipe = DiTPipeline(transformer=model.transformer, vae=model.vae, scheduler=model.scheduler)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(class_labels=labels, num_inference_steps=4, guidance_scale=4.0, output_type="np",
                  generator=[torch.Generator().manual_seed(s) for s in seeds]).images            # [3, 16, 16, 3]
    np.testing.assert_allclose((ours.permute(0, 2, 3, 1).numpy() + 1) / 2, theirs, atol=2e-5)
    one = dit.sample(model, labels[1:2], seeds[1:2], num_steps=4)                             # batch-independent
    torch.testing.assert_close(one, ours[1:2], atol=1e-5, rtol=0)


def test_cfg_batch_is_unconditional_then_conditional_with_the_null_label():
    model = tiny_model(num_classes=5)
    seen = []
    handle = model.transformer.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["class_labels"].tolist()),
                                                         with_kwargs=True)
    dit.sample(model, [1, 4], [0, 1], num_steps=2, guidance_scale=2.0)
    handle.remove()
    assert seen == [[5, 5, 1, 4]] * 2
    with pytest.raises(ValueError, match="labels in 0 … 5"):
        model.labels([6], 1)


def test_released_dit_xl_2_256_config_hooks_a_4608_wide_mlp_hidden_over_256_tokens():
    """facebook/DiT-XL-2-256's transformer config (one of its 28 blocks here; the slow tier builds all 28): 256
    tokens at 256² (32x32x4 latents), MLP hidden 4 x 1152, learned σ dropped, null label 1000."""
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(**{**dit.DIT_XL_2_256_CONFIG, "num_layers": 1}).eval()
    model = dit.DiTModel(transformer, vae=None)
    assert model.null_label == 1000 and model.latent_shape == (4, 32, 32)
    from common.models.hooks import RepresentationRecorder

    z = torch.randn(2, 4, 32, 32)
    with torch.no_grad(), RepresentationRecorder(transformer, [dit.ff_layer(0)]) as recorder:
        eps = model.eps(z, 50, model.labels(None, 2))
    assert recorder.outputs[dit.ff_layer(0)].shape == (2, 256, 4608)
    assert eps.shape == (2, 4, 32, 32)


# ----------------------------------------------------------------------------------------------------
# Data and cache
# ----------------------------------------------------------------------------------------------------
def test_data_has_common_classes_of_many_scenes_and_rare_classes_of_one_duplicated_scene():
    config = dit_testbed.SMOKE_CONFIG.data
    data = dit_testbed.build_data(config)
    np.testing.assert_array_equal(data.images, dit_testbed.build_data(config).images)           # deterministic
    assert config.num_classes == 9 + 4 and len(data.class_names()) == config.num_classes
    for label in range(9):
        members = data.label == label
        assert members.sum() == config.per_common_class and (data.duplication[members] == 1).all()
        assert (data.kind[members] == "common").all()
    rare = np.flatnonzero(data.kind == "rare")
    assert sorted(data.label[rare]) == list(range(9, 13)) and sorted(data.duplication[rare]) == [1, 1, 3, 3]
    assert len(data.train_rows) == 9 * config.per_common_class + 2 * (1 + 3)
    images = data.images[data.kind == "common"].reshape(9, config.per_common_class, -1)
    assert len(np.unique(images.reshape(-1, images.shape[-1]), axis=0)) == images.shape[0] * images.shape[1]
    with pytest.raises(ValueError, match="unknown data source"):
        dit_testbed.DiTDataConfig(source="imagenet")
    with pytest.raises(ValueError, match="duplication count must be >= 1"):
        dit_testbed.DiTDataConfig(rare_duplications=(0, 3))


def test_smoke_testbed_trains_caches_and_retrains_on_a_changed_config(tmp_path):
    config = dit_testbed.SMOKE_CONFIG
    folder = dit_testbed.ensure_dit_testbed(config, progress=False, root=tmp_path)
    model = dit.DiTModel.from_pretrained(folder)
    assert model.num_classes == config.data.num_classes and model.vae.config.scaling_factor != 0.18215
    stamp = (folder / "testbed.json").stat().st_mtime_ns
    assert dit_testbed.ensure_dit_testbed(config, progress=False, root=tmp_path) == folder
    assert (folder / "testbed.json").stat().st_mtime_ns == stamp                                 # reused
    info = dit_testbed.read_info(folder)
    info["config"]["steps"] = 99
    (folder / "testbed.json").write_text(__import__("json").dumps(info))
    dit_testbed.ensure_dit_testbed(config, progress=False, root=tmp_path)                       # retrained
    assert dit_testbed.read_info(folder)["config"]["steps"] == config.steps
    with pytest.raises(FileNotFoundError, match="not a DiT folder"):
        dit.DiTModel.from_pretrained(tmp_path)


def test_ground_truth_counts_a_rare_sample_only_when_it_copies_its_own_class():
    data = dit_testbed.build_data(dit_testbed.SMOKE_CONFIG.data)
    train = data.model_space()
    rare = np.flatnonzero(data.kind == "rare")
    own, other = rare[0], rare[1]
    samples = torch.stack([train[own], train[other], train[0] * 0.5, torch.rand(3, 16, 16) * 2 - 1])
    labels = np.array([data.label[own], data.label[own], 0, 0])
    truth = dit_testbed.ground_truth(samples, labels, data)
    assert truth["memorized"].tolist() == [True, False, False, False]
    assert truth["copies"].tolist()[:3] == [True, True, True] and not truth["copies"][3]
    labels_plan, seeds = dit_testbed.sample_plan(data, 6, 18, seed=100)
    assert list(seeds) == list(range(100, 124))
    assert np.bincount(labels_plan[:6], minlength=13)[9:].tolist() == [2, 2, 1, 1]
    assert np.bincount(labels_plan[6:], minlength=13)[:9].tolist() == [2] * 9


# ----------------------------------------------------------------------------------------------------
# Detectors on a DiT
# ----------------------------------------------------------------------------------------------------
def test_std_detector_on_dit_is_the_recipe_written_out():
    model = tiny_model(num_classes=5)
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    scores = detectors.get("std").score(model, detectors.Samples(images), batch_size=2)
    layer = model.transformer.transformer_blocks[dit.default_block(2)].ff.net[0]
    expected = []
    abar = model.scheduler.alphas_cumprod[50]
    for i in range(3):
        with torch.no_grad():
            z = model.vae.encode(images[i:i + 1]).latent_dist.mean * model.vae.config.scaling_factor
            n = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(i))
            seen = []
            handle = layer.register_forward_hook(lambda m, a, o: seen.append(o))
            model.transformer(abar.sqrt() * z + (1 - abar).sqrt() * n, timestep=torch.tensor([50]),
                              class_labels=torch.tensor([5]))
            handle.remove()
        h = seen[0].amax(dim=1)                                           # max over the 16 tokens: [1, 64]
        expected.append(float(h.double().std(unbiased=False)))
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    labelled = detectors.get("std").score(model, detectors.Samples(images), labels=[0, 1, 2])
    assert not np.allclose(labelled, scores)                              # the class label reaches the layer
    with pytest.raises(ValueError, match="outside the DiT's schedule"):
        reps.extract_dit_representations(model, images, timestep=1000)


def test_lid_on_dit_is_flipd_on_dits_beta_with_the_null_or_class_label():
    model = tiny_model(num_classes=5)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    scores = detectors.get("lid").score(model, detectors.Samples(images), trace="exact")
    z = model.encode(images)
    null = torch.tensor([5, 5])
    by_hand = lid.flipd(lambda rows, owner: model.eps(rows, 10, null[owner]), z, 0.01, 0.1, 20.0, trace="exact")
    np.testing.assert_allclose(scores, -by_hand, rtol=1e-6)
    psi, sigma = lid.vp_coefficients(0.01, 0.1, 20.0)
    abar = model.scheduler.alphas_cumprod[10]
    assert psi == pytest.approx(float(abar.sqrt()), rel=2e-3)             # the VP SDE reads DiT's discrete β
    cond = detectors.get("lid").score(model, detectors.Samples(images), conditional=True, labels=[1, 2], trace="exact")
    assert not np.allclose(cond, scores)
    with pytest.raises(ValueError, match="needs the class labels"):
        detectors.get("lid").score(model, detectors.Samples(images), conditional=True)


def test_steerer_adds_the_vector_to_every_token_of_the_conditional_half_only():
    model = tiny_model(num_classes=5)
    name = dit.ff_layer(1)
    width = model.transformer.transformer_blocks[1].ff.net[0].proj.out_features
    v = torch.randn(width, generator=torch.Generator().manual_seed(0))
    z = torch.randn(2, 4, 8, 8)
    batch, labels = torch.cat([z, z]), torch.tensor([5, 5, 1, 2])
    from common.models.hooks import RepresentationRecorder

    with torch.no_grad():
        with RepresentationRecorder(model.transformer, [name]) as plain:
            model.eps(batch, 500, labels)
        with RepresentationSteerer(model.transformer, {name: v}, 0.7, StepWindow((0,), 1), cfg=True):
            with RepresentationRecorder(model.transformer, [name]) as steered:
                model.eps(batch, 500, labels)
    diff = steered.outputs[name] - plain.outputs[name]                     # [4, 16, width]
    torch.testing.assert_close(diff[:2], torch.zeros_like(diff[:2]))
    torch.testing.assert_close(diff[2:], (0.7 * v).expand(2, 16, width), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="has 3 channels, but the module outputs"):
        with RepresentationSteerer(model.transformer, {name: torch.ones(3)}, 0.7, StepWindow((0,), 1), cfg=True):
            model.eps(batch, 500, labels)


@pytest.mark.slow
def test_released_dit_xl_2_256_full_depth_runs_the_detector_on_its_default_block():
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(**dit.DIT_XL_2_256_CONFIG).eval()
    # DiT-XL/2 has 675 M parameters; diffusers gives each of the 28 blocks its own timestep and label embedder
    # (the original shares one), which makes 749.8 M
    assert 749e6 < sum(p.numel() for p in transformer.parameters()) < 751e6
    model = dit.DiTModel(transformer, vae=None)
    from common.models.hooks import RepresentationRecorder

    layer = dit.ff_layer(dit.default_block(model.num_layers))
    assert layer == "transformer_blocks.14.ff.net.0"
    with torch.no_grad(), RepresentationRecorder(transformer, [layer]) as recorder:
        model.eps(torch.randn(1, 4, 32, 32), 50, model.labels(None, 1))
    assert recorder.outputs[layer].shape == (1, 256, 4608)


@pytest.mark.slow
def test_default_dit_testbed_trained_from_scratch_copies_its_rare_classes(tmp_path):
    folder = dit_testbed.ensure_dit_testbed(progress=False, root=tmp_path)
    data = dit_testbed.load_data(folder)
    labels, seeds = dit_testbed.sample_plan(data, 200, 200)
    samples, _ = dit_testbed.cached_samples(folder, labels, seeds, progress=False)
    truth = dit_testbed.ground_truth(samples, labels, data)
    dose = dit_testbed.dose_response(truth, labels, data)
    assert dose[30]["copy_fraction"] > 0.5
    common = ~truth["rare"]
    assert truth["copies"][common].mean() < 0.1


def test_dit_steering_groups_move_with_alpha_from_an_unsteered_baseline():
    """steer_dit_groups at α = 0 is plain sampling; α > 0 moves the images; moved and the ratio are the pixel
    measure per group, written out; the concept vector is the token-mean hidden averaged over the images."""
    from common.steering import dit_steering, steerability

    model = tiny_model(num_classes=5)
    layers = [dit.ff_layer(1)]
    images = dit.sample(model, [2, 2, 2], [7, 8, 9], num_steps=2)                         # [3, 3, 16, 16]
    vectors = dit_steering.dit_concept_vectors(model, images, layers, timestep=50, label=2)
    expected = reps.extract_dit_representations(model, images, layers, 50, ["spatial_mean"], labels=2)
    np.testing.assert_allclose(vectors[layers[0]], expected[layers[0]]["spatial_mean"].mean(axis=0))
    groups = {"mem": (np.array([0, 1]), np.array([0, 1])), "gen": (np.array([3]), np.array([5]))}
    window = StepWindow.last(4, last_n=2, skip_last=1)
    steered = dit_steering.steer_dit_groups(model, {k: 50 * v for k, v in vectors.items()}, (0.0, 1.0), window,
                                            groups, num_steps=4, guidance_scale=2.0)
    torch.testing.assert_close(steered["mem", 0.0], dit.sample(model, [0, 1], [0, 1], 4, 2.0))
    moved = dit_steering.moved_per_alpha(steered, (0.0, 1.0))
    assert moved["mem"][0] == 0.0 and moved["mem"][1] > 0 and moved["gen"][1] > 0
    assert moved["gen"][1] == pytest.approx(float(steerability.pixel_change(steered["gen", 1.0],
                                                                            steered["gen", 0.0]).mean()))
    ratios = dit_steering.ratio_per_alpha(moved, "mem", "gen", (0.0, 1.0))
    assert ratios[0.0] is None and ratios[1.0] == pytest.approx(moved["mem"][1] / moved["gen"][1])
