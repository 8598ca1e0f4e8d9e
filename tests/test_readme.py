"""The README and docs/: the summary table is the one `results/*.json` give (`python -m common.cli.summary`), the README
stays a short guide, no file cites notes outside the repo, and every relative link resolves."""
import re
import subprocess
from pathlib import Path

import pytest

from common.cli import summary

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_BYTES = 20_000
# Notes that live beside the repo, not in it: no file may cite them.
OUTSIDE = ("../shared", "paper-notes", "table1-notes")
# tests/conftest.py's `shared_prompts` fixture reads reference prompt files beside the repo when they are there (and
# skips otherwise); this file names the strings to look for.
MAY_NAME_OUTSIDE = {"tests/conftest.py", "tests/test_readme.py"}
LINK = re.compile(r"\]\(([^)\s]+)\)|src=\"([^\"]+)\"")


def test_summary_table_is_a_fresh_render_of_the_results():
    committed = summary.between_markers(README.read_text())
    assert committed == summary.render(ROOT / "results"), \
        "README's summary table is out of date: run `python -m common.cli.summary --write README.md`"


def test_run_times_are_a_fresh_render_of_the_results():
    committed = summary.between_markers(README.read_text(), summary.TIMES_START, summary.TIMES_END)
    assert committed == summary.render_times(ROOT / "results"), \
        "README's run times are out of date: run `python -m common.cli.summary --write README.md`"


def test_run_times_read_the_runner_record_and_each_notebooks_training(tmp_path):
    (tmp_path / "make_figures.json").write_text(
        '{"seconds": {"ReLU_DAE": 9.4, "CPU_testbed": 754.0}, "cpu": "AVX512", "threads": 2, "cpu_count": 2}')
    (tmp_path / "ReLU_DAE.json").write_text('{"train_seconds": {"mem": 22.1, "gen": 285.7}}')
    (tmp_path / "CPU_testbed.json").write_text('{"train_seconds": 3864.8}')
    table = summary.render_times(tmp_path)
    assert "| `ReLU_DAE` | 9 s | 5 min |" in table                  # 307.8 s of training
    assert "| `CPU_testbed` | 13 min | 64 min |" in table
    assert "| `EDM_testbed` | — | — |" in table                     # no run recorded, no JSON
    assert "| all | 13 min | |" in table                            # 763.4 s
    assert "2 cores (AVX512), 2 torch threads" in table


def test_replace_between_markers_keeps_the_rest():
    text = f"head\n{summary.START}\nold\n{summary.END}\ntail\n"
    assert summary.replace_between_markers(text, "new\n") == f"head\n{summary.START}\nnew\n{summary.END}\ntail\n"
    with pytest.raises(ValueError):
        summary.replace_between_markers("no markers", "new\n")


def test_readme_is_short():
    size = len(README.read_bytes())
    assert size <= MAX_README_BYTES, f"README.md is {size:,} bytes; move reference material to docs/"


def repo_text_files() -> list[str]:
    """Tracked files and new ones git does not ignore, as repo-relative paths."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [p for p in out.splitlines() if (ROOT / p).is_file() and not p.endswith((".png", ".npz", ".pth"))]


def test_no_file_cites_notes_outside_the_repo():
    found = []
    for path in repo_text_files():
        if path in MAY_NAME_OUTSIDE:
            continue
        try:
            text = (ROOT / path).read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{path}: {s!r}" for s in OUTSIDE if s in text]
    assert not found, "files citing notes outside the repo:\n" + "\n".join(found)


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for match in LINK.finditer(page.read_text()):
        target = (match.group(1) or match.group(2)).split("#")[0]
        if not target or re.match(r"[a-z]+:", target):          # an anchor in the page, or http(s):, mailto:
            continue
        if not (page.parent / target).exists():
            broken.append(target)
    assert not broken, f"{page.name}: links to missing files: {broken}"
