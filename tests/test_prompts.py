"""Prompt lists: local file formats, the VM/TM join, caching and the offline failure."""
import json
import time

import pytest

from common.models import prompts
from common.models.prompts import PromptRecord, PromptsUnavailableError


def test_nemo_labels_join_into_112_vm_and_388_tm(shared_prompts):
    memorized = prompts.load_memorized_prompts(source=shared_prompts / "sdv1_500_memorized.jsonl")
    labels = prompts.load_memorization_labels(source=shared_prompts / "memorized_laion_prompts.csv")
    labelled = prompts.label_memorization_types(memorized, labels)
    assert len(labelled) == 500
    assert [r.type for r in labelled].count("VM") == 112 and [r.type for r in labelled].count("TM") == 388
    assert [r.prompt for r in labelled] == [r.prompt for r in memorized]      # order and captions kept
    assert labelled[2].prompt == "Mothers influence on her young hippo" and labelled[2].index == 964841345


def test_join_falls_back_to_the_caption_and_names_an_unlabelled_prompt():
    labels = [PromptRecord("a", index=1, type="VM"), PromptRecord("b", index=2, type="TM")]
    assert [r.type for r in prompts.label_memorization_types([PromptRecord("b"), PromptRecord("x", index=1)], labels)] \
        == ["TM", "VM"]
    with pytest.raises(PromptsUnavailableError, match="memorized prompt 1 .'zzz'"):
        prompts.label_memorization_types([PromptRecord("a"), PromptRecord("zzz", index=9)], labels)


def test_the_nemo_csv_files_parse(shared_prompts):
    unmemorized = prompts.read_prompt_file(shared_prompts / "unmemorized_laion_prompts.csv")
    assert unmemorized[1] == PromptRecord("Soaring by Peter Eades", index=7984,
                                          url="https://images.fineartamerica.com/images/artworkimages/mediumlarge/1/soaring-peter-eades.jpg")
    coco = prompts.load_generalized_prompts(3, source=shared_prompts / "coco2014_val_10000.csv")
    assert [r.prompt for r in coco][:2] == ["a person standing close to an elephant",
                                            "The hearty sheep are eating the grass in the snow."]


def test_local_file_formats(tmp_path):
    (tmp_path / "p.jsonl").write_text(json.dumps({"Prompt": "one"}) + "\n\n" + json.dumps({"text": "two"}) + "\n")
    (tmp_path / "p.csv").write_text('Prompt,Index\n"a, with comma",5\nb,6\n')
    (tmp_path / "p.txt").write_text("first\n\nsecond\n")
    assert [r.prompt for r in prompts.read_prompt_file(tmp_path / "p.jsonl")] == ["one", "two"]
    assert prompts.read_prompt_file(tmp_path / "p.csv") == [PromptRecord("a, with comma", index=5), PromptRecord("b", index=6)]
    assert [r.prompt for r in prompts.load_generalized_prompts(2, source=tmp_path / "p.txt")] == ["first", "second"]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"caption_text": "x"}) + "\n")
    with pytest.raises(PromptsUnavailableError, match="row 0: no prompt field"):
        prompts.read_prompt_file(tmp_path / "bad.jsonl")


def test_empty_or_short_lists_are_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(PromptsUnavailableError, match="empty"):
        prompts.load_generalized_prompts(None, source=tmp_path / "empty.txt")
    (tmp_path / "two.txt").write_text("a\nb\n")
    with pytest.raises(PromptsUnavailableError, match="holds 2 prompts, 5 were requested"):
        prompts.load_generalized_prompts(5, source=tmp_path / "two.txt")


def test_offline_without_cache_fails_fast_naming_the_local_option(tmp_path, monkeypatch):
    monkeypatch.setattr(prompts, "MEMORIZED_URL", "https://127.0.0.1/examples/sdv1_500_memorized.jsonl")
    t0 = time.perf_counter()
    with pytest.raises(PromptsUnavailableError, match="source='path/to/sdv1_500_memorized.jsonl'"):
        prompts.load_memorized_prompts(10, cache_dir=tmp_path, timeout=2.0)
    with pytest.raises(PromptsUnavailableError, match="not reachable.*source="):
        prompts.load_generalized_prompts(10, cache_dir=tmp_path)        # HF_HUB_OFFLINE=1 (conftest)
    assert time.perf_counter() - t0 < 5


def test_cached_lists_are_used_offline(tmp_path):
    (tmp_path / "sdv1_500_memorized.jsonl").write_text(
        json.dumps({"caption": "cached caption", "index": 3, "url": "u"}) + "\n")
    (tmp_path / "gustavosta-prompts.json").write_text(json.dumps({"prompts": ["p0", "p1", "p2"]}))
    assert prompts.load_memorized_prompts(1, cache_dir=tmp_path) == [PromptRecord("cached caption", 3, "u")]
    assert [r.prompt for r in prompts.load_generalized_prompts(2, cache_dir=tmp_path)] == ["p0", "p1"]


def write_their_list(path, lines):
    """A list as their repositories ship `prompts/sd1_mem.txt`: one prompt per line, no newline after the last."""
    path.write_text("\n".join(lines))


def test_the_sharpness_lists_are_a_named_source_cached_like_the_others(tmp_path, monkeypatch):
    write_their_list(tmp_path / "sharpness-sd1_mem.txt", ["The No Limits Business Woman Podcast", "Mothers hippo"])
    write_their_list(tmp_path / "sharpness-sd1_nmem.txt", ["A small kitchen.", "A dog on a car.", "A bus."])
    mem = prompts.load_memorized_prompts(2, source="sharpness", cache_dir=tmp_path)
    assert [r.prompt for r in mem] == ["The No Limits Business Woman Podcast", "Mothers hippo"]
    gen = prompts.load_generalized_prompts(3, source="sharpness", cache_dir=tmp_path)
    assert [r.prompt for r in gen] == ["A small kitchen.", "A dog on a car.", "A bus."]
    labels = [PromptRecord("The No Limits Business Woman Podcast", 7, type="VM"), PromptRecord("Mothers hippo", 9,
                                                                                                type="TM")]
    assert [r.type for r in prompts.label_memorization_types(mem, labels)] == ["VM", "TM"]   # joined by caption
    monkeypatch.setitem(prompts.NAMED_LISTS, "sharpness", {
        "memorized": "https://127.0.0.1/prompts/sd1_mem.txt", "generalized": "https://127.0.0.1/prompts/sd1_nmem.txt"})
    with pytest.raises(PromptsUnavailableError, match="source='path/to/sd1_nmem.txt'"):
        prompts.load_generalized_prompts(3, source="sharpness", cache_dir=tmp_path / "empty", timeout=2.0)
