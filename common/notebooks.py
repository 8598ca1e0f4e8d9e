"""Execute the repo's notebooks with papermill: `make figures` (in place, default parameters) and the tests
(SMOKE mode, outputs redirected to a temporary folder) both go through `run_notebook`.

Every notebook has a papermill `parameters` cell with at least `SMOKE`, `FIGS_DIR` and `RESULTS_DIR`.

    python -m common.notebooks                 # all notebooks in place, default parameters: Figs/, results/
    python -m common.notebooks 1-Theory/ReLU_DAE.ipynb --smoke --out /tmp/x
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .paths import REPO_ROOT

NOTEBOOK_DIRS = ("1-Theory", "2-Application")


def all_notebooks(root: Path = REPO_ROOT) -> list[Path]:
    return sorted(p for d in NOTEBOOK_DIRS for p in (root / d).glob("*.ipynb"))


def run_notebook(path: Path, output: Path | None = None, parameters: dict | None = None,
                 timeout: int | None = None, progress: bool = False):
    """Execute `path` top to bottom with papermill (kernel `python3`, cwd = the notebook's folder) and write
    the executed notebook to `output` (default: in place). Returns the executed notebook node."""
    import papermill as pm

    path = Path(path).resolve()
    return pm.execute_notebook(
        str(path), str(Path(output).resolve() if output else path), parameters=parameters or {},
        kernel_name="python3", cwd=str(path.parent), progress_bar=progress, request_save_on_cell_execute=False,
        execution_timeout=timeout,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook of the repo")
    parser.add_argument("--smoke", action="store_true", help="SMOKE=True, outputs under --out")
    parser.add_argument("--out", type=Path, help="folder for executed notebooks, figures and results (with --smoke)")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")

    failed = []
    for nb in args.notebooks or all_notebooks():
        params, output = {}, None
        if args.smoke:
            out = (args.out or Path("smoke-out")).resolve()
            params = {"SMOKE": True, "FIGS_DIR": str(out / "Figs"), "RESULTS_DIR": str(out / "results")}
            output = out / nb.name
            output.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        print(f"== {nb} ...", flush=True)
        try:
            run_notebook(nb, output, params, progress=True)
        except Exception as err:  # papermill raises PapermillExecutionError with the cell's traceback
            failed.append(nb)
            print(f"!! {nb} failed: {str(err).strip().splitlines()[-1] if str(err).strip() else err!r}", flush=True)
            continue
        print(f"== {nb} done in {time.perf_counter() - t0:.0f} s", flush=True)
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(map(str, failed))}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
