"""The score cache of a generation folder (`common/detectors/scores.py`) as the notebooks use it: its key sees what changes a
score and nothing else, so a notebook finds what `python -m common.cli.score` wrote; a subset (Table 1's control
titles) is scored alone and the rest later, nothing twice; each row keeps the seconds its detector took; on the
testbed the command line computes NeMo's statistics as the notebook does."""
import numpy as np
import pytest
import torch

from common.models import generate
from common.detectors import scores
from common.cli import score as cli_score
from common.detectors import Detector, carlini, nemo
from common.models.generate import GenerationConfig
from conftest import CountingPipe

PROMPTS = ["a red square", "a blue circle", "a green tree", "a yellow sun", "a black cat"]
CONFIG = GenerationConfig(model="tiny", num_inference_steps=2, seed=0)


@pytest.fixture(scope="module")
def folder(tiny_pipe, tmp_path_factory):
    folder = generate.generation_folder("p", CONFIG, tmp_path_factory.mktemp("scores"))
    generate.generate_images(tiny_pipe, PROMPTS, folder, CONFIG, batch_size=5, progress=False)
    return folder


@pytest.fixture(autouse=True)
def keep_threads():
    """The command line sets torch's thread count (--threads); later tests get theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def counting(calls: list) -> Detector:
    """A prompt-free detector whose score is a function of the image alone, recording the indices it is given."""
    def score_fn(pipe, samples, extraction_seed: int = 0, tau: float = 0.5):
        calls.append(extraction_seed)
        return samples.images.flatten(1).mean(1).double().numpy() + tau

    return Detector("counting", "counting", "std", needs_prompt=False, score_fn=score_fn)


def test_an_option_equal_to_its_default_keeps_the_key_and_one_that_changes_a_score_does_not(folder):
    assert scores.score_stem(folder, "carlini", {"tau": carlini.TAU, "n_generations": carlini.N_GENERATIONS}) == \
        scores.score_stem(folder, "carlini")
    assert scores.score_stem(folder, "carlini", {"tau": 0.2}) != scores.score_stem(folder, "carlini")
    # wen re-samples with the generation's steps (2 here) unless told otherwise
    assert scores.score_stem(folder, "wen", {"num_inference_steps": 2}) == scores.score_stem(folder, "wen")
    assert scores.score_stem(folder, "wen", {"num_inference_steps": 3}) != scores.score_stem(folder, "wen")
    assert scores.score_stem(folder, "wen", {"batch_size": 2}) != scores.score_stem(folder, "wen")   # last bits
    # NeMo's statistics are keyed by their values, not by where they were read from
    rng = np.random.default_rng(0)
    mean, std = (rng.random(4),), (rng.random(4) + 0.1,)
    key = scores.score_stem(folder, "nemo", {"statistics": nemo.NemoStatistics(mean, std, "a.pt")})
    assert key == scores.score_stem(folder, "nemo", {"statistics": nemo.NemoStatistics(mean, std, "copy/a.pt")})
    assert key != scores.score_stem(folder, "nemo", {"statistics": nemo.NemoStatistics(mean, (std[0] * 2,), "a.pt")})


def test_a_subset_is_scored_alone_then_the_rest_and_nothing_twice(folder, tiny_pipe):
    calls = []
    detector = counting(calls)
    subset = scores.score_folder(tiny_pipe, folder, detector, chunk=2, indices=[3, 1, 2], progress=False)
    assert calls == [1, 3]                                    # chunks [1, 2] and [3]: the seed of each chunk's first
    assert sorted(scores.read_scores(folder, detector)) == [1, 2, 3]
    whole = scores.score_folder(tiny_pipe, folder, detector, chunk=2, progress=False)
    assert calls == [1, 3, 0, 4]                              # only 0 and 4 are new
    np.testing.assert_array_equal(subset, whole[[3, 1, 2]])   # returned in the order asked
    assert scores.score_folder(tiny_pipe, folder, detector, {"tau": 0.5}, indices=[4], progress=False) == whole[4]
    assert calls == [1, 3, 0, 4]                              # tau=0.5 is the default: the same scores
    seconds = scores.score_seconds(folder, detector)
    assert sorted(seconds) == [0, 1, 2, 3, 4] and all(0 < s < 60 for s in seconds.values())
    with pytest.raises(ValueError, match="no generated image at manifest index \\[7\\]"):
        scores.score_folder(tiny_pipe, folder, detector, indices=[1, 7], progress=False)


def test_a_notebook_finds_what_the_command_line_scored(folder, tiny_pipe):
    assert cli_score.main([str(folder), "--detector", "carlini", "--option", "n_generations=2", "--threads", "1"]) == 0
    cached = scores.read_scores(folder, "carlini", {"n_generations": 2})
    assert sorted(cached) == [0, 1, 2, 3, 4]
    pipe = CountingPipe(tiny_pipe)             # Carlini et al. re-sample: a recomputed score would call the pipe
    again = scores.score_folder(pipe, folder, "carlini", {"n_generations": 2, "tau": carlini.TAU}, progress=False)
    assert pipe.calls == []                    # what Table1_detection passes, its default tau spelt out
    np.testing.assert_array_equal(again, [cached[i] for i in range(5)])


def test_nemo_on_the_testbed_the_command_line_computes_the_notebooks_statistics(folder, tmp_path):
    from common.models import pipelines
    from common.testbeds import cpu_testbed as testbed

    model = testbed.ensure_testbed(testbed.SMOKE_CONFIG, progress=False, root=tmp_path / "testbed")
    pipe = pipelines.load_pipeline(str(model), device="cpu")
    config = GenerationConfig(model=str(model), num_inference_steps=2, seed=0)
    images = generate.generation_folder("t", config, tmp_path)
    data = testbed.load_data(model)
    generate.generate_images(pipe, [data.captions[i] for i in data.indices("memorized")], images, config,
                             progress=False)
    assert cli_score.main([str(images), "--detector", "nemo", "--statistics", "calibration", "--threads", "1"]) == 0
    # what Table1_detection does on the testbed: statistics from the calibration captions, then the cached call
    statistics = nemo.reference_statistics(pipe, testbed.calibration_prompts(model))
    rows = scores.read_score_rows(images, "nemo", {"statistics": statistics})
    assert sorted(rows) == list(range(len(data.indices("memorized"))))
    again = scores.score_folder(pipe, images, "nemo", {"statistics": statistics}, progress=False)
    assert {i: r["written"] for i, r in scores.read_score_rows(images, "nemo", {"statistics": statistics}).items()} \
        == {i: r["written"] for i, r in rows.items()}                                  # read, not computed again
    np.testing.assert_array_equal(again, [rows[i]["score"] for i in sorted(rows)])
    with pytest.raises(SystemExit, match="--statistics calibration is for a model with calibration prompts"):
        cli_score.main([str(folder), "--detector", "nemo", "--statistics", "calibration", "--threads", "1"])
