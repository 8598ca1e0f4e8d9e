"""The CPU testbed: its data, tokenizer, copy criterion, and a SMOKE-size model trained, saved and loaded
through the same `load_pipeline` call as SD v1.4. The default-size training is in the slow tier
(test_paper_claims.py)."""
import numpy as np
import pytest
import torch

from common import families
from common.models import pipelines, prompts
from common.steering import steerability
from common.testbeds import cpu_testbed as testbed
from common.models.hooks import RepresentationRecorder
from common.testbeds.scenes import (BACKGROUNDS, CAPTION_WORDS, COLORS, KINDS, TITLE_WORDS, Scene, TestbedDataConfig,
                                    build_testbed_data, caption, draw_scene, template_region, to_model_space)

SMALL = TestbedDataConfig(n_pool=300, n_memorized=6, duplication=4, dose_duplications=(1, 3), dose_pairs=2, n_controls=5,
                          n_template=3, template_variants=4, template_duplication=8, n_ordinary=4,
                          ordinary_duplications=(5, 7), ordinary_shared=2)


@pytest.fixture(scope="module")
def small_data():
    return build_testbed_data(SMALL)


@pytest.fixture(scope="module")
def smoke_folder(tmp_path_factory):
    return testbed.ensure_testbed(testbed.SMOKE_CONFIG, progress=False, root=tmp_path_factory.mktemp("testbed"))


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------
def test_data_is_deterministic_and_counts_its_duplicates(small_data):
    again = build_testbed_data(SMALL)
    assert np.array_equal(small_data.images, again.images) and small_data.captions == again.captions
    kinds = {k: int((small_data.kind == k).sum()) for k in KINDS}
    assert kinds == {"pool": 300, "memorized": 6, "dose": 4, "control": 5, "template": 3 * 4, "ordinary": 4,
                     "ordinary_peer": 4 * 2}
    assert len(small_data.train_rows) == 300 + 6 * 4 + 2 * (1 + 3) + 3 * 8 + 2 * (5 + 7) + 4 * 2
    assert np.bincount(small_data.train_rows, minlength=len(small_data.images))[small_data.indices("memorized")].tolist() == [4] * 6
    assert not np.isin(small_data.indices("control"), small_data.train_rows).any()


def test_titles_are_unique_and_held_out_captions_never_trained(small_data):
    titles = [small_data.captions[i] for i in (*small_data.indices("memorized"), *small_data.indices("dose"))]
    titles += list(dict.fromkeys(small_data.captions[i] for i in small_data.indices("template")))
    assert len(set(titles)) == len(titles) == 6 + 4 + 3
    words = [w for t in titles for w in t.split()]
    assert all(len(t.split()) == 2 for t in titles) and set(words) <= set(TITLE_WORDS)
    assert len(set(words)) == len(words)                       # no word in two titles
    trained = {small_data.captions[i] for i in small_data.train_rows}
    assert small_data.held_out_captions and not trained & set(small_data.held_out_captions)
    assert small_data.details["n_held_out_combinations"] == len(small_data.held_out_captions)


def _template_groups(data):
    """The image indices of each template title, in title order."""
    titles = list(dict.fromkeys(data.captions[i] for i in data.indices("template")))
    return [[i for i in data.indices("template") if data.captions[i] == t] for t in titles]


def test_a_template_titles_variants_share_the_left_half_exactly_and_differ_on_the_right(small_data):
    groups = _template_groups(small_data)
    assert len(groups) == 3 and all(len(g) == 4 for g in groups)
    assert (small_data.duplication[small_data.indices("template")] == 8 // 4).all()
    for group in groups:
        left = small_data.images[group][:, :, :8]                  # [V, 16, 8, 3] the template region
        right = small_data.images[group][:, :, 8:].astype(int)
        assert (left == left[0]).all()                              # the template, pixel for pixel
        for a in range(len(group)):
            for b in range(a + 1, len(group)):
                assert np.abs(right[a] - right[b]).max() > 50       # a different right object
    firsts = [g[0] for g in groups]                                 # different titles, different templates
    assert all(np.abs(small_data.images[a, :, :8].astype(int) - small_data.images[b, :, :8]).max() > 50
               for a in firsts for b in firsts if a < b)
    region = template_region(to_model_space(small_data.images[groups[0]]))
    assert region.shape == (4, 3, 16, 8)


def test_an_ordinary_caption_names_a_duplicated_scene_and_unduplicated_ones(small_data):
    ordinary = small_data.indices("ordinary")
    assert small_data.duplication[ordinary].tolist() == [5, 5, 7, 7]       # split evenly over the doses
    held_out, titles = set(small_data.held_out_captions), set(TITLE_WORDS)
    for i in ordinary:
        text = small_data.captions[i]
        assert text == small_data.details["scenes"][i] and not set(text.split()) & titles   # its description
        same = [j for j in range(len(small_data.images)) if small_data.captions[j] == text and j != i]
        peers = [j for j in same if small_data.kind[j] == "ordinary_peer"]
        assert len(peers) == 2 and all(small_data.duplication[j] == 1 for j in same)
        assert all(np.abs(small_data.images[j].astype(int) - small_data.images[i]).max() > 50 for j in same)
        assert text not in held_out


def test_caption_grammar():
    assert caption("circle", "orange", "square", "red", "black") == \
        "an orange circle and a red square on a black background"


def test_scene_draws_its_colours_where_it_says():
    scene = Scene(objects=(("circle", "red", 10.0, 9.0, 16.0), ("square", "blue", 10.0, 23.0, 16.0)),
                  background="white", shade=(0.0, 0.0))
    image = draw_scene(scene, resolution=16).astype(int)        # [16, 16, 3]; scene units are 32 per side
    assert image.shape == (16, 16, 3)
    assert np.abs(image[8, 4] - COLORS["red"]).max() <= 1
    assert np.abs(image[8, 11] - COLORS["blue"]).max() <= 1
    assert np.abs(image[0, 0] - BACKGROUNDS["white"]).max() <= 1
    assert np.abs(image[8, 8] - BACKGROUNDS["white"]).max() <= 1     # between the two objects
    assert draw_scene(scene, resolution=32).shape == (32, 32, 3)


def test_every_caption_word_is_one_token():
    tokenizer = testbed.build_word_tokenizer()
    for word in CAPTION_WORDS + TITLE_WORDS:
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    text = caption("triangle", "orange", "square", "green", "gray")
    ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert len(ids) == testbed.MAX_TOKENS and ids[len(text.split()) + 1] == tokenizer.eos_token_id
    assert len(tokenizer("zzz", add_special_tokens=False).input_ids) == 3   # unknown words fall back to characters


# ----------------------------------------------------------------------------------------------------
# The copy criterion
# ----------------------------------------------------------------------------------------------------
def test_copy_report_finds_a_training_image_and_rejects_noise(small_data):
    i = small_data.indices("memorized")[2]
    x = torch.from_numpy(to_model_space(small_data.images[[i]]))
    noisy_copy = x + 0.02 * torch.randn_like(x)
    noise = torch.rand_like(x) * 2 - 1
    report = testbed.copy_report(torch.cat([noisy_copy, noise]), small_data, own=np.array([i, i]))
    assert report["nearest"][0] == i and report["correlation"][0] > 0.99 and report["copy"].tolist() == [True, False]
    assert report["copies_own"].tolist() == [True, False]
    other = testbed.copy_report(noisy_copy, small_data, own=np.array([small_data.indices("memorized")[0]]))
    assert other["copy"][0] and not other["copies_own"][0]       # a copy of another image is not "its own"
    assert report["nn_ratio"][0] < 1 / 3 < report["nn_ratio"][1]


def test_the_criterion_rarely_fires_between_different_training_images():
    rate = testbed.criterion_false_copy_rate(build_testbed_data(TestbedDataConfig(n_pool=1500)))
    assert rate["false_copy_rate"] < 0.01
    assert rate["nn_correlation_quantiles"]["50%"] < 0.9


def test_calibration_captions_leave_out_every_evaluated_caption_a_pool_scene_may_carry(small_data, monkeypatch):
    """NeMo's calibration captions come from the pool; an ordinary caption that a pool scene also carries (as it
    may: both are scene descriptions) is an evaluated prompt and stays out."""
    from dataclasses import replace
    ordinary_caption = small_data.captions[small_data.indices("ordinary")[0]]
    captions = list(small_data.captions)
    captions[0] = ordinary_caption                                  # the first pool scene carries it
    monkeypatch.setattr(testbed, "load_data", lambda folder: replace(small_data, captions=captions))
    chosen = testbed.calibration_prompts("folder", n=50)
    assert ordinary_caption not in chosen and len(chosen) == 50
    assert chosen == [c for c in dict.fromkeys(captions[:300]) if c != ordinary_caption][:50]


def test_template_criterion_counts_a_new_variant_and_rejects_another_template(small_data):
    """Hand-made generations: the template with a right object no variant has (a copy of the template), a plain
    copy of a variant, another title's template with this title's right half, and noise."""
    groups = _template_groups(small_data)
    own, other = groups[0], groups[1]
    x = to_model_space(small_data.images[[own[0], own[1], other[0]]])          # [3, 3, 16, 16]
    new_variant = x[0].copy()
    new_variant[..., 8:] = np.flip(x[1][..., 8:], axis=1)                      # a right half no variant has
    wrong_template = x[2].copy()
    wrong_template[..., 8:] = x[0][..., 8:]                                    # another template, own right half
    noise = np.random.default_rng(0).uniform(-1, 1, x[0].shape)
    generated = np.stack([new_variant, x[1], wrong_template, noise])
    report = testbed.template_report(generated, small_data, own=np.array([own[0]] * 4))
    assert report["copies_template"].tolist() == [True, True, False, False]
    assert report["correlation"][0] > 0.999 and report["correlation"][3] < 0.5
    with pytest.raises(ValueError):
        testbed.template_report(generated, small_data, own=np.array([small_data.indices("memorized")[0]] * 4))


def test_the_template_criterion_rarely_fires_between_different_training_images():
    rate = testbed.template_false_copy_rate(build_testbed_data(TestbedDataConfig(n_pool=1500)))
    assert rate["false_copy_rate"] < 0.01
    assert rate["best_correlation_quantiles"]["50%"] < 0.9


def test_each_kinds_prompts_name_their_training_image_and_repeat_per_caption(small_data):
    captions, named = testbed.kind_prompts(small_data, "template", per_caption=3)
    groups = _template_groups(small_data)
    assert named.tolist() == [g[0] for g in groups for _ in range(3)]
    assert captions == [small_data.captions[g[0]] for g in groups for _ in range(3)]
    captions, named = testbed.kind_prompts(small_data, "ordinary", per_caption=2)
    assert (small_data.kind[named] == "ordinary").all() and len(named) == 2 * 4
    captions, named = testbed.kind_prompts(small_data, "verbatim")
    assert named.tolist() == small_data.indices("memorized").tolist()
    assert set(testbed.KIND_SETS) == set(testbed.KIND_CRITERIA) == {"verbatim", "template", "ordinary"}


def test_ordinary_ground_truth_counts_the_duplicated_scene_not_its_caption_peers(small_data):
    """A copy of the duplicated scene is memorized; a copy of an unduplicated scene with the same caption is a
    near-copy but not of the duplicated scene, so not memorized for this kind."""
    i = small_data.indices("ordinary")[0]
    peer = next(j for j in small_data.indices("ordinary_peer") if small_data.captions[j] == small_data.captions[i])
    x = to_model_space(small_data.images[[i, peer]])
    truth = testbed.kind_ground_truth(x, small_data, "ordinary", own=np.array([i, i]))
    assert truth["memorized"].tolist() == [True, False] and truth["correlation"][1] > 0.99


# ----------------------------------------------------------------------------------------------------
# The model: trained at SMOKE size, saved, loaded by the SD loader
# ----------------------------------------------------------------------------------------------------
def test_smoke_testbed_loads_like_sd_and_has_the_papers_layers(smoke_folder):
    assert (smoke_folder / "model_index.json").is_file() and testbed.is_testbed(smoke_folder)
    assert families.model_label(str(smoke_folder)) == "cpu-testbed"
    pipe = pipelines.load_pipeline(str(smoke_folder), device="cpu")
    assert type(pipe).__name__ == "StableDiffusionPipeline" and type(pipe.scheduler).__name__ == "DDIMScheduler"
    layers = ["up_blocks.0.resnets.2.nonlinearity", "up_blocks.1.resnets.1"]
    with RepresentationRecorder(pipe.unet, layers) as recorder:
        images = pipe(["kolo vasu", ""], num_inference_steps=2, guidance_scale=7.5, output_type="np",
                      generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 16, 16, 3)
    assert recorder.outputs[layers[0]].shape[-2:] == (4, 4) and recorder.outputs[layers[1]].shape[-2:] == (8, 8)
    info = testbed.read_info(smoke_folder)
    assert info["train_seconds"] > 0 and len(info["loss_curves"]["unet_loss"]) == testbed.SMOKE_CONFIG.steps


def test_training_is_deterministic_and_cached(smoke_folder, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    again = testbed.ensure_testbed(testbed.SMOKE_CONFIG, progress=False, root=tmp_path)
    for part in ("unet", "text_encoder", "vae"):
        a = load_file(next((smoke_folder / part).glob("*.safetensors")))
        b = load_file(next((again / part).glob("*.safetensors")))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    monkeypatch.setattr(testbed, "train_testbed", lambda *a, **k: pytest.fail("a cached testbed was retrained"))
    assert testbed.ensure_testbed(testbed.SMOKE_CONFIG, progress=False, root=tmp_path) == again


def test_the_application_notebooks_get_the_testbeds_prompts(smoke_folder):
    data = testbed.load_data(smoke_folder)
    family = families.family_of(str(smoke_folder))
    assert family.name == "cpu-testbed" and families.family_of(pipelines.load_pipeline(str(smoke_folder))) is family
    mem, gen, source = family.detection_prompts(str(smoke_folder), 100, 3)
    assert [r.prompt for r in mem] == [data.captions[i] for i in data.indices("memorized")]
    assert [r.prompt for r in gen] == data.held_out_captions[:3] and all(r.type == "VM" for r in mem)
    task = family.steering_task(str(smoke_folder))
    assert task.pos_prompt.replace("black", "white") == task.neg_prompt
    assert set(task.gen_prompts) <= set(data.held_out_captions) and set(task.mem_prompts) <= set(data.captions)
    assert families.family_of("tiny").steering_task("tiny") == steerability.OFFICIAL_TASK


def test_without_sd_the_default_model_is_the_testbed(monkeypatch, capsys):
    monkeypatch.setattr(pipelines, "stable_diffusion_missing_reason", lambda timeout=3.0: "needs a CUDA GPU")
    assert families.choose_model(None) == "testbed"
    assert "using the CPU testbed" in capsys.readouterr().out
    assert families.choose_model("tiny") == "tiny"
    monkeypatch.setattr(pipelines, "stable_diffusion_missing_reason", lambda timeout=3.0: None)
    monkeypatch.delenv("DGR_SD_MODEL", raising=False)
    assert families.choose_model(None) == pipelines.SD14_HUB_ID


def test_training_outside_a_terminal_prints_one_line_not_a_bar(capsys):
    from common.testbeds.training import fit

    weight = torch.nn.Parameter(torch.ones(3))
    losses = fit([weight], lambda step: (weight ** 2).sum(), steps=25, lr=0.1, desc="toy", progress=True)
    err = capsys.readouterr().err                                  # pytest's capture is not a terminal
    assert len(losses) == 25 and losses[-1] < losses[0]
    assert err.count("\n") == 1 and err.startswith("toy: 25 steps in ") and "\r" not in err
    fit([weight], lambda step: (weight ** 2).sum(), steps=3, lr=0.1, progress=False)
    assert capsys.readouterr().err == ""
