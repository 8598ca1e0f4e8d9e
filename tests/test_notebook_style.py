"""Every committed notebook reads beside the paper: short code cells, short lines, outputs a reader can take in
(no progress spam, no dependency notices, no float noise), and outputs from a run of the code as committed."""
import json
import re
from pathlib import Path

import pytest

from common.cli.notebooks import all_notebooks

MAX_CELL_LINES = 40          # a code cell shows a call, its settings and its result; machinery lives in common/
MAX_LINE_CHARS = 100
MAX_OUTPUT_CHARS = 5_000     # text a cell prints (stdout, stderr, text/plain results)
NOISE = {
    "tqdm's notebook widget notice": "IProgress not found",
    "a torchvision notice": "torchvision",
    "terminal escape codes": "\x1b[",
    "a numpy scalar repr": "np.float64(",
    "float noise": re.compile(r"\d\.\d{10,}"),       # an unrounded float
}

NOTEBOOKS = all_notebooks()


def cells(path: Path, kind: str = "code"):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == kind]


def output_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        text = out.get("text") or out.get("data", {}).get("text/plain", "")
        parts.append("".join(text) if isinstance(text, list) else text)
    return "".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_cells_are_short_and_lines_fit(path):
    problems = []
    for i, cell in enumerate(cells(path)):
        lines = "".join(cell["source"]).splitlines()
        if len(lines) > MAX_CELL_LINES:
            problems.append(f"code cell {i}: {len(lines)} lines")
        problems += [f"code cell {i}: a line of {len(line)} characters: {line[:60]}..."
                     for line in lines if len(line) > MAX_LINE_CHARS]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_short_and_clean(path):
    problems = []
    for i, cell in enumerate(cells(path)):
        text = output_text(cell)
        if len(text) > MAX_OUTPUT_CHARS:
            problems.append(f"code cell {i} prints {len(text):,} characters")
        for what, pattern in NOISE.items():
            found = pattern.search(text) if isinstance(pattern, re.Pattern) else pattern in text
            if found:
                problems.append(f"code cell {i} prints {what}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_come_from_one_run_of_the_cells_as_committed(path):
    """Every code cell was executed, in order, in one run (execution counts 1, 2, 3, ...), and no papermill
    injected-parameters cell is left to override the parameter cell."""
    code = cells(path)
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), f"execution counts {counts}: rerun the notebook top to bottom"
    tags = [t for c in code for t in c.get("metadata", {}).get("tags", [])]
    assert "injected-parameters" not in tags


def test_the_noise_patterns_catch_what_they_name():
    cell = {"outputs": [{"output_type": "stream", "text": ["norms [0.9559999704360962, 0.942]\n"]}]}
    assert NOISE["float noise"].search(output_text(cell))
    assert not NOISE["float noise"].search("0.956, 0.942, 1.000, 0.50000")
    cell = {"outputs": [{"output_type": "execute_result", "data": {"text/plain": "{'a': np.float64(14.05)}"}}]}
    assert NOISE["a numpy scalar repr"] in output_text(cell)
