"""Generation: seeded per prompt, resumable after an interruption, and strict about its folder."""
import json

import numpy as np
import pytest
from PIL import Image

from common.models import generate
from common.models.generate import GenerationConfig, ManifestError

PROMPTS = ["a red square", "a blue circle", "a green tree", "a yellow sun", "a black cat"]
CONFIG = GenerationConfig(model="tiny", num_inference_steps=3, seed=7)


class InterruptingPipe:
    """Forwards to the pipeline; raises KeyboardInterrupt on call number `fail_on` (1-based); counts calls."""

    def __init__(self, pipe, fail_on=None):
        self.pipe, self.fail_on, self.calls = pipe, fail_on, []

    def __call__(self, prompt, **kwargs):
        self.calls.append(list(prompt))
        if len(self.calls) == self.fail_on:
            raise KeyboardInterrupt
        return self.pipe(prompt, **kwargs)


def pixels(path):
    return np.asarray(Image.open(path))


def manifest_lines(folder):
    return [json.loads(line) for line in (folder / generate.MANIFEST_NAME).read_text().splitlines()]


def test_resumes_after_an_interruption_with_identical_images_and_no_duplicates(tiny_pipe, tmp_path):
    reference = generate.generate_images(tiny_pipe, PROMPTS, tmp_path / "ref", CONFIG, batch_size=2, progress=False)

    folder = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        generate.generate_images(InterruptingPipe(tiny_pipe, fail_on=2), PROMPTS, folder, CONFIG, batch_size=2,
                                 progress=False)
    assert [r["index"] for r in manifest_lines(folder)] == [0, 1]
    assert sorted(p.name for p in folder.glob("*.png")) == ["000000.png", "000001.png"]

    resumed_pipe = InterruptingPipe(tiny_pipe)
    rows = generate.generate_images(resumed_pipe, PROMPTS, folder, CONFIG, batch_size=2, progress=False)
    assert resumed_pipe.calls == [PROMPTS[2:4], PROMPTS[4:]]              # only what was missing
    assert [r["index"] for r in manifest_lines(folder)] == [0, 1, 2, 3, 4]
    assert [r["seed"] for r in rows] == [7, 8, 9, 10, 11]
    for ours, ref in zip(rows, reference):
        np.testing.assert_array_equal(pixels(ours["path"]), pixels(ref["path"]))

    again = InterruptingPipe(tiny_pipe)
    assert generate.generate_images(again, PROMPTS, folder, CONFIG, batch_size=2, progress=False) == rows
    assert again.calls == [] and len(manifest_lines(folder)) == 5


def test_an_image_does_not_depend_on_its_batch(tiny_pipe, tmp_path):
    alone = generate.generate_images(tiny_pipe, PROMPTS[:3], tmp_path / "b1", CONFIG, batch_size=1, progress=False)
    batched = generate.generate_images(tiny_pipe, PROMPTS[:3], tmp_path / "b3", CONFIG, batch_size=3, progress=False)
    for a, b in zip(alone, batched):
        diff = np.abs(pixels(a["path"]).astype(int) - pixels(b["path"]).astype(int))
        assert diff.max() <= 1                                            # float rounding only
    assert not np.array_equal(pixels(alone[0]["path"]), pixels(alone[1]["path"]))


def test_missing_or_unreadable_images(tiny_pipe, tmp_path):
    folder = tmp_path / "g"
    rows = generate.generate_images(tiny_pipe, PROMPTS[:3], folder, CONFIG, batch_size=3, progress=False)
    original = pixels(rows[1]["path"])
    (folder / "000001.png").unlink()
    (folder / "000002.png").write_bytes(b"not a png")
    with pytest.raises(ManifestError, match="000001.png is missing"):
        generate.read_manifest(folder)
    kept, skipped = generate.read_manifest(folder, on_bad="skip")
    assert [r["index"] for r in kept] == [0] and skipped == 2
    (folder / "000001.png").write_bytes(b"")
    with pytest.raises(ManifestError, match="000001.png is unreadable"):
        generate.read_manifest(folder)

    redo = InterruptingPipe(tiny_pipe)
    generate.generate_images(redo, PROMPTS[:3], folder, CONFIG, batch_size=3, progress=False)
    assert redo.calls == [PROMPTS[1:3]]
    np.testing.assert_array_equal(pixels(folder / "000001.png"), original)
    assert [r["index"] for r in generate.read_manifest(folder)[0]] == [0, 1, 2]


def test_a_folder_is_tied_to_its_config_and_follows_the_prompt_list(tiny_pipe, tmp_path):
    folder = tmp_path / "g"
    first = generate.generate_images(tiny_pipe, PROMPTS[:2], folder, CONFIG, progress=False)
    before = [pixels(r["path"]) for r in first]
    with pytest.raises(ManifestError, match="another config"):
        generate.generate_images(tiny_pipe, PROMPTS[:2], folder, GenerationConfig(model="tiny", seed=8), progress=False)
    changed = InterruptingPipe(tiny_pipe)
    rows = generate.generate_images(changed, ["something else", PROMPTS[1]], folder, CONFIG, progress=False)
    assert changed.calls == [["something else"]]                          # only the changed prompt is redone
    assert [r["prompt"] for r in manifest_lines(folder)] == ["something else", PROMPTS[1]]
    assert not np.array_equal(pixels(rows[0]["path"]), before[0])
    np.testing.assert_array_equal(pixels(rows[1]["path"]), before[1])
    longer = InterruptingPipe(tiny_pipe)
    generate.generate_images(longer, ["something else", *PROMPTS[1:3]], folder, CONFIG, progress=False)
    assert longer.calls == [[PROMPTS[2]]]                                  # a larger N extends the folder
    with pytest.raises(ValueError, match="empty"):
        generate.generate_images(tiny_pipe, [], folder, CONFIG, progress=False)
    a = generate.generation_folder("mem", CONFIG, tmp_path)
    assert a == generate.generation_folder("mem", CONFIG, tmp_path) != generate.generation_folder("gen", CONFIG, tmp_path)
    assert a != generate.generation_folder("mem", GenerationConfig(model="tiny", seed=8), tmp_path)
