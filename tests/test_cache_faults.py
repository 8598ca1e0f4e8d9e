"""Every cache answers a damaged entry by rebuilding it (the bad file moved aside as `<name>.corrupt-<time>`) or by an
error naming the file and the command that clears it: checkpoints, testbed folders, generation folders (manifest,
images, config), score files, prompt lists, NeMo statistics. Each kind is damaged here the way a full disk or a cut copy does."""
import json
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from common.models import generate, prompts
from common.detectors import scores
from common.testbeds import cpu_testbed as testbed
from common.plumbing.checkpoints import cache_path, load_safetensors, save_safetensors, train_or_load
from common.detectors import Detector
from common.plumbing.faults import CorruptCacheError, read_jsonl
from common.models.generate import GenerationConfig, ManifestError
from common.plumbing.network import DownloadUnavailableError
from common.testbeds.training import read_info, write_folder_atomically
from conftest import CountingPipe

P3 = ["a red square", "a blue circle", "a green tree"]
CONFIG = GenerationConfig(model="tiny", num_inference_steps=2, seed=3)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these tests make a few 32x32 images, where threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cut(path, keep=0.5):
    """Truncate a file to a fraction of its bytes: a copy or a write cut short."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def aside(path):
    """The copies of `path` moved aside."""
    return sorted(path.parent.glob(f"{path.name}.corrupt-*"))


def test_a_truncated_checkpoint_is_moved_aside_and_trained_again(tmp_path):
    trained = []

    def train():
        trained.append(1)
        return nn.Linear(3, 2), {"train_seconds": 0.0}

    def load(path):
        state, meta = load_safetensors(path)
        model = nn.Linear(3, 2)
        model.load_state_dict(state)
        return model, meta

    def save(model, path, log):
        save_safetensors(model.state_dict(), path, log)

    args = ("linear", {"width": 3}, train, load, save, tmp_path)
    train_or_load(*args)
    assert train_or_load(*args)[1]["cached"] and len(trained) == 1
    path = cut(cache_path("linear", {"width": 3}, tmp_path))
    damaged = path.read_bytes()
    with pytest.raises(CorruptCacheError, match=re.escape(f"rm '{path}'")):
        load_safetensors(path)                                  # a direct read names the file and the fix
    model, info = train_or_load(*args)                          # the cache rebuilds it
    assert len(trained) == 2 and not info["cached"]
    assert [p.read_bytes() for p in aside(path)] == [damaged]
    assert train_or_load(*args)[1]["cached"]


def test_a_damaged_testbed_folder_is_moved_aside_and_trained_again(tmp_path, monkeypatch):
    trained = []

    def fake_train(config, folder, progress=True):              # the folder a training writes, in a millisecond
        trained.append(folder)
        weights = {"conv.weight": torch.ones(8, 4)}
        info = {"config": config.to_dict(), "train_seconds": 0.0, "vae_seconds": 0.0, "unet_seconds": 0.0}
        write_folder_atomically(folder, lambda staging: save_safetensors(
            weights, staging / "unet" / "diffusion_pytorch_model.safetensors"), info)
        return info

    monkeypatch.setattr(testbed, "train_testbed", fake_train)
    folder = testbed.ensure_testbed(testbed.SMOKE_CONFIG, root=tmp_path)
    assert testbed.ensure_testbed(testbed.SMOKE_CONFIG, root=tmp_path) == folder and len(trained) == 1

    cut(folder / "unet" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CorruptCacheError, match=r"unet/diffusion_pytorch_model.safetensors is not a readable "
                                                r"safetensors file.*" + re.escape(f"rm -rf '{folder}'")):
        read_info(folder)                                       # what the EDM and DiT testbeds' loaders read first
    assert testbed.ensure_testbed(testbed.SMOKE_CONFIG, root=tmp_path) == folder and len(trained) == 2
    assert len(aside(folder)) == 1                              # the damaged folder, whole, for a post-mortem
    assert load_safetensors(folder / "unet" / "diffusion_pytorch_model.safetensors")[0]["conv.weight"].shape == (8, 4)

    cut(folder / "testbed.json")
    with pytest.raises(CorruptCacheError, match=re.escape(f"rm -rf '{folder}'")):
        read_info(folder)
    testbed.ensure_testbed(testbed.SMOKE_CONFIG, root=tmp_path)
    assert len(trained) == 3 and len(aside(folder)) == 2 and read_info(folder)["train_seconds"] == 0.0


def test_a_damaged_manifest_line_image_or_config_is_rebuilt(tiny_pipe, tmp_path):
    folder = generate.generation_folder("faults", CONFIG, tmp_path)
    rows = generate.generate_images(tiny_pipe, P3, folder, CONFIG, batch_size=1, progress=False)
    original = {r["index"]: (folder / r["file"]).read_bytes() for r in rows}
    manifest = folder / generate.MANIFEST_NAME
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0], lines[1][:25], lines[2]]) + "\n")     # row 1 torn
    cut(folder / "000002.png")                                                     # image 2 torn

    with pytest.raises(ManifestError, match=r"000002.png is unreadable.*python -m common.cli.generate"):
        generate.read_manifest(folder)
    assert rows_of(manifest) == [0, 2] and len(aside(manifest)) == 1               # the torn line dropped on read
    pipe = CountingPipe(tiny_pipe)
    generate.generate_images(pipe, P3, folder, CONFIG, batch_size=1, progress=False)
    assert pipe.calls == [[P3[1]], [P3[2]]]                                        # only what was damaged
    assert rows_of(manifest) == [0, 1, 2] and len(aside(folder / "000002.png")) == 1
    assert {i: (folder / generate.image_name(i)).read_bytes() for i in range(3)} == original

    cut(folder / generate.CONFIG_NAME)
    generate.generate_images(pipe, P3, folder, CONFIG, batch_size=1, progress=False)   # rebuilt: the name has the key
    assert json.loads((folder / generate.CONFIG_NAME).read_text()) == json.loads(json.dumps(CONFIG.to_dict()))
    assert len(pipe.calls) == 2 and len(aside(folder / generate.CONFIG_NAME)) == 1

    custom = tmp_path / "my-images"                                                # a folder not named by its key
    generate.generate_images(tiny_pipe, P3[:1], custom, CONFIG, progress=False)
    cut(custom / generate.CONFIG_NAME)
    with pytest.raises(ManifestError, match=re.escape(f"rm '{custom / generate.CONFIG_NAME}'") + ".*" +
                       re.escape(f"rm -rf '{custom}'")):
        generate.generate_images(tiny_pipe, P3[:1], custom, CONFIG, progress=False)


def rows_of(path):
    return [json.loads(line)["index"] for line in path.read_text().splitlines()]


def test_a_damaged_score_file_is_rebuilt_and_a_remade_image_scored_again(tiny_pipe, tmp_path):
    folder = generate.generation_folder("scored", CONFIG, tmp_path)
    generate.generate_images(tiny_pipe, P3, folder, CONFIG, batch_size=1, progress=False)
    calls = []

    def mean_pixel(pipe, samples):
        calls.append(len(samples))
        return samples.images.double().mean(dim=(1, 2, 3)).numpy()

    detector = Detector("mean", "mean pixel", "std", needs_prompt=False, score_fn=mean_pixel)
    first = scores.score_folder(tiny_pipe, folder, detector, chunk=1, progress=False)
    expected = [np.asarray(Image.open(folder / generate.image_name(i)), dtype=np.float64).mean() / 127.5 - 1
                for i in range(3)]
    np.testing.assert_allclose(first, expected, rtol=0, atol=1e-6)                # float32 images
    assert calls == [1, 1, 1]
    np.testing.assert_array_equal(scores.score_folder(tiny_pipe, folder, detector, chunk=1, progress=False), first)
    assert calls == [1, 1, 1]                                                      # all cached

    [rows] = scores.score_files(folder, detector)
    lines = rows.read_text().splitlines()
    rows.write_text("\n".join([lines[0], "{not json", lines[2]]) + "\n")
    record = rows.with_suffix(".json")
    cut(record)
    np.testing.assert_array_equal(scores.score_folder(tiny_pipe, folder, detector, chunk=1, progress=False), first)
    assert calls == [1, 1, 1, 1]                                                   # only the torn row
    assert len(aside(rows)) == 1 and len(aside(record)) == 1
    assert json.loads(record.read_text())["detector"] == "mean"

    (folder / "000000.png").unlink()                                               # image 0 made again: new stamp
    generate.generate_images(tiny_pipe, P3, folder, CONFIG, batch_size=1, progress=False)
    assert 0 not in scores.read_scores(folder, detector)                           # its old score is stale
    scores.score_folder(tiny_pipe, folder, detector, chunk=1, progress=False)
    assert calls == [1, 1, 1, 1, 1]


def test_a_damaged_cached_prompt_list_is_downloaded_again_or_named(tmp_path, monkeypatch):
    good = '{"caption": "a memorized caption", "index": 7}\n{"caption": "another one", "index": 9}\n'
    cache = tmp_path / "sdv1_500_memorized.jsonl"
    cache.write_text(good[:70])                                                    # a download cut short

    def download(url, path, timeout=5.0):                                          # the network, when it is there
        if not path.exists():
            path.write_text(good)
        return path

    monkeypatch.setattr(prompts, "download_cached", download)
    records = prompts.load_memorized_prompts(cache_dir=tmp_path)
    assert [(r.prompt, r.index) for r in records] == [("a memorized caption", 7), ("another one", 9)]
    assert [p.read_text() for p in aside(cache)] == [good[:70]]

    def offline(url, path, timeout=5.0):
        if path.exists():
            return path
        raise DownloadUnavailableError(f"{url} is not reachable and no cached copy exists at {path}")

    cache.write_text(good[:70])
    monkeypatch.setattr(prompts, "download_cached", offline)
    with pytest.raises(prompts.PromptsUnavailableError, match=re.escape(str(cache)) + ".*source="):
        prompts.load_memorized_prompts(cache_dir=tmp_path)

    mine = tmp_path / "mine.jsonl"                                                 # a user's own file: named, kept
    mine.write_text(good[:70])
    with pytest.raises(prompts.PromptsUnavailableError, match=re.escape(f"{mine}, line 2: not JSON")):
        prompts.load_memorized_prompts(source=mine)
    assert mine.read_text() == good[:70]


def test_a_damaged_generalized_prompt_cache_is_fetched_again_or_named(tmp_path, monkeypatch):
    cache = tmp_path / "gustavosta-prompts.json"
    cache.write_text('{"source": "x", "prompts": ["a", "b')                       # truncated JSON
    with pytest.raises(prompts.PromptsUnavailableError, match=re.escape(str(cache)) + ".*source="):
        prompts.load_generalized_prompts(2, cache_dir=tmp_path)                     # offline (the tests' flags)
    assert len(aside(cache)) == 1

    cache.write_text('{"source": "x", "prompts": ["a", "b')
    monkeypatch.setattr(prompts, "hub_reachable", lambda timeout=3.0: True)
    def fetch(path):                                                               # the hub, when it is there
        path.write_text('{"prompts": ["p", "q"]}')
        return ["p", "q"]

    monkeypatch.setattr(prompts, "_fetch_generalized", fetch)
    assert [r.prompt for r in prompts.load_generalized_prompts(2, cache_dir=tmp_path)] == ["p", "q"]
    assert len(aside(cache)) == 2
    assert [r.prompt for r in prompts.load_generalized_prompts(2, cache_dir=tmp_path)] == ["p", "q"]


def test_damaged_nemo_statistics_are_downloaded_again_or_named(tmp_path, monkeypatch):
    """NeMo's file as their `1_compute_activations_statistics.py` saves it: `(mean_list, std_list)` of 7 tensors."""
    from common.plumbing import network
    from common.detectors import nemo

    widths = [320, 320, 640, 640, 1280, 1280, 1280]
    good = tmp_path / "good.pt"
    torch.save(([torch.rand(w) for w in widths], [torch.rand(w) + 0.1 for w in widths]), good)
    cache = tmp_path / "nemo" / "statistics_additional_laion_prompts_v1_4.pt"
    cache.parent.mkdir()
    cache.write_bytes(good.read_bytes()[:3000])                                    # a download cut short

    def download(url, path, timeout=5.0):                                          # the network, when it is there
        if not path.exists():
            path.write_bytes(good.read_bytes())
        return path

    monkeypatch.setattr(network, "download_cached", download)
    assert nemo.load_statistics(cache_dir=cache.parent).widths == widths
    assert len(aside(cache)) == 1 and cache.read_bytes() == good.read_bytes()

    cache.write_bytes(good.read_bytes()[:3000])
    def offline(url, path, timeout=5.0):
        if path.exists():
            return path
        raise DownloadUnavailableError(f"{url} is not reachable and no cached copy exists at {path}")

    monkeypatch.setattr(network, "download_cached", offline)
    with pytest.raises(FileNotFoundError, match=re.escape(cache.name) + ".*Pass a local copy"):
        nemo.load_statistics(cache_dir=cache.parent)                               # offline: moved aside, named
    assert len(aside(cache)) == 2

    mine = tmp_path / "mine.pt"                                                    # a user's own file: named, kept
    mine.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(ValueError, match=re.escape(f"{mine}: not a readable torch file")):
        nemo.load_statistics(mine)
    assert mine.stat().st_size == 3000


def test_read_jsonl_keeps_the_good_rows_and_the_file_always_exists(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"index": 0}\n\xff\xfe garbage\n{"index": 1}\n[1, 2]\n{"other": 3}\n')
    assert read_jsonl(path, ("index",)) == [{"index": 0}, {"index": 1}]
    assert read_jsonl(path, ("index",)) == [{"index": 0}, {"index": 1}]          # rewritten: no second copy aside
    assert len(aside(path)) == 1 and read_jsonl(tmp_path / "none.jsonl") == []


def test_a_damaged_npz_cache_is_moved_aside_and_built_again(tmp_path):
    """The array caches (an image folder's pixels here; the EDM and DiT samples use the same reader): a truncated
    .npz is moved aside and rebuilt with the same content."""
    from common.theory.data import load_image_folder

    (tmp_path / "faces").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(tmp_path / "faces" / f"{i}.png")
    first = load_image_folder(tmp_path / "faces", 3, cache_dir=tmp_path / "cache")
    (cache,) = (tmp_path / "cache").glob("*.npz")
    cache.write_bytes(cache.read_bytes()[:50])                                 # a cut copy
    again = load_image_folder(tmp_path / "faces", 3, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again, first)
    assert len(list((tmp_path / "cache").glob("*.npz.corrupt-*"))) == 1
    assert np.load(cache)["images"].shape == first.shape                      # rebuilt whole
