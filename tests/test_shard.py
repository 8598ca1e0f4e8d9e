"""Generation and scoring sharded over processes (`common/plumbing/shard.py`, `python -m common.cli.generate / score`): a
2-process launch (accelerate, torchrun; gloo on the CPU) makes the single process's images and scores bit for bit,
an uneven split covers every prompt once, a killed process leaves no partial row and a rerun finishes the job.

Every launch runs one torch thread per process, and the single-process reference here runs one thread too: the
same batches on the same thread count give the same floats.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.models import generate
from common.detectors import scores
from common.cli import generate as cli_generate
from common.cli import score as cli_score
from common.models.generate import GenerationConfig, ManifestError
from common.plumbing.shard import Shard, merge_newest, shard_files
from conftest import ROOT, CountingPipe

PROMPTS = ["a red square", "a blue circle", "a green tree", "a yellow sun", "a black cat"]
CONFIG = GenerationConfig(model="tiny", num_inference_steps=2, seed=0)     # what the command line makes of GEN_ARGS
GEN_ARGS = ["--cpu", "--model", "tiny", "--steps", "2", "--batch-size", "2"]
LAUNCH_TIMEOUT = 300


@contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def accelerate_launch(n: int, module: str, *args) -> list[str]:
    """`accelerate launch` of n processes; --multi_gpu is its multi-process launcher (torch.distributed.run), which
    on a machine without GPUs runs CPU processes over gloo (its --cpu flag alone starts one process)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), "-m", module, *args]


def torchrun(n: int, module: str, *args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port",
            str(free_port()), "-m", module, *args]


def run(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def prompt_file(folder: Path, prompts=PROMPTS) -> Path:
    path = folder / "p.txt"                       # the folder's set name is the file's stem, "p"
    path.write_text("\n".join(prompts) + "\n")
    return path


def rows_in(path: Path) -> list[int]:
    return [json.loads(line)["index"] for line in path.read_text().splitlines()]


def same(rows: list[dict]) -> list[tuple]:
    """What must agree between two runs: everything but the timings and paths."""
    return [(r["index"], r["prompt"], r["seed"], r["file"]) for r in rows]


@pytest.fixture(scope="module")
def reference(tiny_pipe, tmp_path_factory):
    """The single-process run, one thread: images of PROMPTS and their std scores (chunks of 2)."""
    folder = generate.generation_folder("p", CONFIG, tmp_path_factory.mktemp("reference"))
    with one_thread():
        cli_generate.run(tiny_pipe, PROMPTS, folder, CONFIG, batch_size=2, progress=False)
        std = scores.score_folder(tiny_pipe, folder, "std", chunk=2, progress=False)
    return folder, std



    def __getattr__(self, name):
        return getattr(self.pipe, name)


def test_two_processes_make_the_single_process_images_and_scores_bit_for_bit(reference, tiny_pipe, tmp_path):
    ref_folder, ref_std = reference
    run(accelerate_launch(2, "common.cli.generate", *GEN_ARGS, "--prompts", str(prompt_file(tmp_path)),
                          "--cache", str(tmp_path / "gen")))
    folder = generate.generation_folder("p", CONFIG, tmp_path / "gen")
    # 5 prompts in batches of 2 over 2 processes: batches [0, 1], [2, 3] to process 0, [4] to process 1
    names = [p.name for p in shard_files(folder, generate.MANIFEST_NAME)]
    assert names == ["manifest.rank0.jsonl", "manifest.rank1.jsonl"]
    assert rows_in(folder / "manifest.rank0.jsonl") == [0, 1, 2, 3] and rows_in(folder / "manifest.rank1.jsonl") == [4]
    rows, skipped = generate.read_manifest(folder)
    assert skipped == 0 and same(rows) == same(generate.read_manifest(ref_folder)[0])
    for i in range(len(PROMPTS)):
        name = generate.image_name(i)
        assert (folder / name).read_bytes() == (ref_folder / name).read_bytes()

    run(torchrun(2, "common.cli.score", str(folder), "--cpu", "--detector", "std", "--chunk", "2"))
    files = scores.score_files(folder, "std")
    assert [p.name.rsplit(".", 2)[1] for p in files] == ["rank0", "rank1"]
    assert rows_in(files[0]) == [0, 1, 2, 3] and rows_in(files[1]) == [4]
    merged = scores.read_scores(folder, "std")
    assert [merged[i] for i in range(len(PROMPTS))] == list(ref_std)                  # bit for bit
    assert len(set(ref_std)) == len(PROMPTS)                                           # five different images

    # what a notebook then calls (one process, its own batch size) finds it all and makes nothing again
    pipe = CountingPipe(tiny_pipe)
    rows = generate.generate_images(pipe, PROMPTS, folder, CONFIG, batch_size=8, progress=False)
    assert pipe.calls == [] and same(rows) == same(generate.read_manifest(ref_folder)[0])
    np.testing.assert_array_equal(scores.score_folder(pipe, folder, "std", chunk=16, progress=False), ref_std)
    assert len(scores.score_files(folder, "std")) == 2                                 # no new score file written


DYING_RUN = """
import os, sys
from contextlib import contextmanager
from common.models import generate
from common.cli import generate as cli

real_atomic_path, written = generate.atomic_path, []


@contextmanager
def dying_atomic_path(path):
    # the process dies while writing image number {die_at}: half of it on disk under its temporary name
    with real_atomic_path(path) as tmp:
        yield tmp
        if str(path).endswith(".png"):
            written.append(path)
            if len(written) == {die_at}:
                tmp.write_bytes(tmp.read_bytes()[: tmp.stat().st_size // 2])
                os._exit(137)


generate.atomic_path = dying_atomic_path
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_killed_run_leaves_no_partial_image_or_row_and_the_rerun_finishes_only_what_is_missing(reference, tmp_path):
    ref_folder, ref_std = reference
    script = tmp_path / "dying_run.py"
    script.write_text(DYING_RUN.replace("{die_at}", "3"))
    args = [*GEN_ARGS, "--prompts", str(prompt_file(tmp_path)), "--cache", str(tmp_path / "gen"), "--threads", "1"]
    killed = subprocess.run([sys.executable, str(script), *args], cwd=ROOT, env=environment(), capture_output=True,
                            text=True, timeout=LAUNCH_TIMEOUT)
    assert killed.returncode == 137, killed.stderr[-3000:]
    folder = generate.generation_folder("p", CONFIG, tmp_path / "gen")
    assert sorted(p.name for p in folder.glob("*.png")) == ["000000.png", "000001.png"]   # no image 2, not even half
    assert len(list(folder.glob(".000002.png.*.tmp"))) == 1                                # its torn temporary
    assert rows_in(folder / generate.MANIFEST_NAME) == [0, 1]
    before = {r["index"]: r["written"] for r in generate.read_manifest(folder)[0]}

    with one_thread():
        assert cli_generate.main(args) == 0                                                # the same command again
    assert rows_in(folder / generate.MANIFEST_NAME) == [0, 1, 2, 3, 4]
    rows = generate.read_manifest(folder)[0]
    assert {i: r["written"] for i, r in enumerate(rows) if i < 2} == before                # 0 and 1 not made again
    assert not list(folder.glob(".*.tmp"))
    for i in range(len(PROMPTS)):
        name = generate.image_name(i)
        assert (folder / name).read_bytes() == (ref_folder / name).read_bytes()

    with one_thread():                                                                     # `python -m common.cli.score`
        assert cli_score.main([str(folder), "--detector", "std", "--chunk", "2", "--threads", "1"]) == 0
    assert [p.name for p in scores.score_files(folder, "std")] == [scores.score_stem(folder, "std") + ".jsonl"]
    assert [scores.read_scores(folder, "std")[i] for i in range(len(PROMPTS))] == list(ref_std)


def test_merged_manifests_keep_the_newest_row_and_a_share_refuses_another_config(tiny_pipe, tmp_path):
    folder = tmp_path / "g"
    with one_thread():
        generate.generate_images(tiny_pipe, PROMPTS[:3], folder, CONFIG, batch_size=3, progress=False,
                                 indices=[2], manifest=Shard(1, 2).file_name(generate.MANIFEST_NAME))
    assert [p.name for p in shard_files(folder, generate.MANIFEST_NAME)] == ["manifest.rank1.jsonl"]
    assert [r["index"] for r in generate.read_manifest(folder)[0]] == [2]
    # a stale row of an earlier run for index 2, older than the share's: the newest wins on read
    stale = {"index": 2, "prompt": "old", "seed": 2, "file": "000002.png", "written": 1.0}
    (folder / generate.MANIFEST_NAME).write_text(json.dumps(stale) + "\n")
    assert generate.read_manifest(folder)[0][0]["prompt"] == PROMPTS[2]
    assert merge_newest([{"index": 0, "written": 2.0, "v": "a"}, {"index": 0, "v": "b"}])[0]["v"] == "a"
    (folder / ".manifest.rank0.jsonl.x.tmp").write_text("half")                       # not a manifest
    (folder / "manifest.rank0.jsonl.corrupt-20250101-000000").write_text("moved aside")
    assert [p.name for p in shard_files(folder, generate.MANIFEST_NAME)] == ["manifest.jsonl", "manifest.rank1.jsonl"]
    with pytest.raises(ManifestError, match="another config"):
        generate.generate_images(tiny_pipe, PROMPTS[:3], folder, GenerationConfig(model="tiny", seed=1),
                                 progress=False, indices=[0], manifest="manifest.rank0.jsonl")
    with pytest.raises(ValueError, match="indices must lie in"):
        generate.generate_images(tiny_pipe, PROMPTS[:3], folder, CONFIG, progress=False, indices=[3])


# ----------------------------------------------------------------------------------------------------
# Slow tier: a real kill of a whole launch, three processes
# ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_of_a_two_process_launch_then_a_torchrun_rerun_completes(tiny_pipe, tmp_path):
    prompts = [f"prompt number {i}" for i in range(12)]
    config = GenerationConfig(model="tiny", num_inference_steps=8, seed=0)
    ref = tmp_path / "ref"
    with one_thread():
        cli_generate.run(tiny_pipe, prompts, ref, config, batch_size=1, progress=False)
    args = ["--cpu", "--model", "tiny", "--steps", "8", "--batch-size", "1",
            "--prompts", str(prompt_file(tmp_path, prompts)), "--cache", str(tmp_path / "gen")]
    folder = generate.generation_folder("p", config, tmp_path / "gen")
    launch = subprocess.Popen(accelerate_launch(2, "common.cli.generate", *args), cwd=ROOT, env=environment(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + LAUNCH_TIMEOUT
    while not list(folder.glob("*.png")) and launch.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(launch.pid, signal.SIGKILL)                      # the launcher and both processes, at once
    launch.wait()
    for path in folder.glob("*.png"):                          # whatever is there is whole
        Image.open(path).verify()
    rows = [r for p in shard_files(folder, generate.MANIFEST_NAME) for r in map(json.loads, p.read_text().splitlines())]
    assert len(rows) < len(prompts), "the launch finished before it was killed: nothing was tested"
    assert len({r["index"] for r in rows}) == len(rows)        # no index twice
    assert all((folder / r["file"]).is_file() for r in rows)   # every row has its image

    run(torchrun(2, "common.cli.generate", *args))
    merged = generate.read_manifest(folder)[0]
    assert [r["index"] for r in merged] == list(range(len(prompts)))
    for i in range(len(prompts)):
        name = generate.image_name(i)
        assert (folder / name).read_bytes() == (ref / name).read_bytes()


@pytest.mark.slow
def test_three_processes_on_seven_prompts_cover_each_once(tiny_pipe, tmp_path):
    prompts = [f"prompt number {i}" for i in range(7)]
    ref = generate.generation_folder("p", CONFIG, tmp_path / "ref")
    with one_thread():
        cli_generate.run(tiny_pipe, prompts, ref, CONFIG, batch_size=2, progress=False)
        ref_std = scores.score_folder(tiny_pipe, ref, "std", chunk=3, progress=False)
    run(torchrun(3, "common.cli.generate", *GEN_ARGS, "--prompts", str(prompt_file(tmp_path, prompts)),
                 "--cache", str(tmp_path / "gen")))
    folder = generate.generation_folder("p", CONFIG, tmp_path / "gen")
    # batches [0, 1] [2, 3] [4, 5] [6] over 3 processes: 2, 1, 1 batches
    assert [rows_in(p) for p in shard_files(folder, generate.MANIFEST_NAME)] == [[0, 1, 2, 3], [4, 5], [6]]
    for i in range(len(prompts)):
        assert (folder / generate.image_name(i)).read_bytes() == (ref / generate.image_name(i)).read_bytes()
    run(torchrun(3, "common.cli.score", str(folder), "--cpu", "--detector", "std", "--chunk", "3"))
    # chunks [0, 1, 2] [3, 4, 5] [6]: one each
    assert [rows_in(p) for p in scores.score_files(folder, "std")] == [[0, 1, 2], [3, 4, 5], [6]]
    merged = scores.read_scores(folder, "std")
    assert [merged[i] for i in range(len(prompts))] == list(ref_std)
    np.testing.assert_array_equal(scores.score_folder(tiny_pipe, folder, "std", chunk=3, progress=False), ref_std)
