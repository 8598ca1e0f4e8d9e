"""Execute the repo's notebooks with papermill: `make figures` (in place, default parameters) and the tests
(SMOKE mode, outputs redirected to a temporary folder) both go through `run_notebook`.

Every notebook has a papermill `parameters` cell with at least `SMOKE`, `FIGS_DIR` and `RESULTS_DIR`.

A notebook can declare, in its metadata, what its default run needs and what its SMOKE run sets:

    "metadata": {"dgr": {"requires": ["stable-diffusion"], "smoke_parameters": {"MODEL": "tiny"}}}

`make figures` checks each requirement with the (fast, offline-safe) check registered in `REQUIREMENTS`;
when one fails it prints one line saying what is missing and skips the notebook; a requirement can also
name a stand-in (SD v1.4 -> the CPU testbed), which runs with the parameters it returns. SMOKE runs (the tests,
`make smoke`) apply `smoke_parameters` instead and check nothing.

    python -m common.cli.notebooks                 # all notebooks in place, default parameters: Figs/, results/
    python -m common.cli.notebooks 1-Theory/ReLU_DAE.ipynb --smoke --out /tmp/x

An in-place run of a repo notebook records its wall time in `results/make_figures.json` (`record_time`), from which
the README's table of run times is generated (`common.cli.summary`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..plumbing.paths import REPO_ROOT, RESULTS_DIR, portable_name

NOTEBOOK_DIRS = ("1-Theory", "2-Application")


def all_notebooks(root: Path = REPO_ROOT) -> list[Path]:
    return sorted(p for d in NOTEBOOK_DIRS for p in (root / d).glob("*.ipynb"))


# ----------------------------------------------------------------------------------------------------
# What a notebook needs
# ----------------------------------------------------------------------------------------------------
@dataclass
class Availability:
    """Whether a requirement is met here; if not, one line saying what is missing. `parameters` are
    overrides for a run on a stand-in (e.g. a notebook that falls back to a smaller model)."""

    runnable: bool
    message: str = ""
    parameters: dict = field(default_factory=dict)


def _stable_diffusion() -> Availability:
    """SD v1.4 (its weights and a CUDA GPU) for the paper's default run; else the CPU testbed, trained here
    once (`common/testbeds/cpu_testbed.py`), stands in. No parameter is passed either way: the notebook's own `MODEL = None`
    makes the same choice (`families.choose_model`), so the executed notebook keeps its parameter cell as it is."""
    from ..models.pipelines import stable_diffusion_missing_reason

    missing = stable_diffusion_missing_reason()
    if missing:
        return Availability(True, f"SD v1.4 cannot run here ({missing}): running on the CPU testbed")
    return Availability(True)


REQUIREMENTS = {"stable-diffusion": _stable_diffusion}


def notebook_settings(path: Path) -> dict:
    """The notebook's `metadata["dgr"]`: {"requires": [...], "smoke_parameters": {...}} (both optional)."""
    return json.loads(Path(path).read_text()).get("metadata", {}).get("dgr", {})


def check_requirements(path: Path) -> Availability:
    """All of the notebook's requirements together: runnable only if each is; the messages of the unmet
    ones joined into one line; the parameter overrides of the met ones merged."""
    results = []
    for name in notebook_settings(path).get("requires", []):
        if name not in REQUIREMENTS:
            raise KeyError(f"{path}: unknown requirement {name!r}; known: {sorted(REQUIREMENTS)}")
        results.append(REQUIREMENTS[name]())
    unmet = [r.message for r in results if not r.runnable]
    notes = unmet or [r.message for r in results if r.message]       # e.g. "running on the CPU testbed"
    overrides = {k: v for r in results if r.runnable for k, v in r.parameters.items()}
    return Availability(not unmet, "; ".join(notes), overrides)


def smoke_parameters(path: Path, out: Path) -> dict:
    """Papermill parameters of a SMOKE run writing under `out`: SMOKE, FIGS_DIR, RESULTS_DIR and the
    notebook's own `smoke_parameters`."""
    return {"SMOKE": True, "FIGS_DIR": str(out / "Figs"), "RESULTS_DIR": str(out / "results"),
            **notebook_settings(path).get("smoke_parameters", {})}


IPC_PATH_MAX = 100        # a Unix socket's path: 107 bytes on Linux, 103 on macOS


def ipc_kernel_manager():
    """jupyter_client's kernel manager with the kernel's sockets on IPC (files in Jupyter's runtime folder, removed at
    shutdown) instead of localhost TCP: the kernel then prints no "running over TCP without encryption" notice.
    Where the runtime folder's path is too long for a socket's, the plain (TCP) manager."""
    import uuid

    from jupyter_client import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir
    from traitlets import CaselessStrEnum, default

    runtime = Path(jupyter_runtime_dir())

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @default("ip")
        def _ip_default(self):      # jupyter_client's default is "kernel-ipc" in the kernel's cwd: the notebook folder
            runtime.mkdir(parents=True, exist_ok=True)
            return str(runtime / f"kernel-{uuid.uuid4()}-ipc")

    socket_path = runtime / f"kernel-{uuid.uuid4()}-ipc-1"                      # the longest is channel 1..5
    return IPCKernelManager if len(str(socket_path)) <= IPC_PATH_MAX else AsyncKernelManager


INJECTED_TAG = "injected-parameters"     # the cell papermill adds after `parameters` when given parameters


def without_injected_parameters(notebook):
    """The notebook node without papermill's injected-parameters cells. papermill replaces such a cell only when it
    is given parameters; left in a committed notebook, it would override the parameter cell in Jupyter and in every
    later run without parameters."""
    notebook.cells = [c for c in notebook.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    return notebook


def run_notebook(path: Path, output: Path | None = None, parameters: dict | None = None,
                 timeout: int | None = None, progress: bool = False):
    """Execute `path` top to bottom with papermill (kernel `python3` over IPC, cwd = the notebook's folder) and
    write the executed notebook to `output` (default: in place). Any injected-parameters cell of an earlier run is
    dropped first, so the run uses the parameter cell plus `parameters` (none: exactly the parameter cell).
    Returns the executed notebook node."""
    import nbformat
    import papermill as pm

    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")    # debugpy's "frozen modules" notice
    path = Path(path).resolve()
    output = Path(output).resolve() if output else path
    notebook = without_injected_parameters(nbformat.read(path, as_version=4))
    executed = pm.execute_notebook(
        notebook, str(output), parameters=parameters or {},
        kernel_name="python3", cwd=str(path.parent), progress_bar=progress, request_save_on_cell_execute=False,
        execution_timeout=timeout, kernel_manager_class=ipc_kernel_manager(),
    )
    # papermill records its input (here the node: the whole earlier notebook) and output paths in the metadata;
    # the saved notebook names both as `paths.portable_name` does (committed notebooks carry no machine path)
    executed.metadata.papermill.update(input_path=portable_name(path), output_path=portable_name(output))
    nbformat.write(executed, output)
    return executed


TIMES_NAME = "make_figures"          # results/make_figures.json: the wall time of each notebook's last in-place run


def record_time(notebook: Path, seconds: float, results_dir: Path = RESULTS_DIR, root: Path = REPO_ROOT) -> bool:
    """Record `seconds` for a repo notebook run in place, with the CPU and thread count it ran on; other
    notebooks' entries are kept. A notebook outside the repo's notebook folders is not recorded (returns False)."""
    notebook = Path(notebook).resolve()
    if notebook.parent.name not in NOTEBOOK_DIRS or notebook.parent.parent != Path(root).resolve():
        return False
    import torch

    from ..plumbing.results import write_results

    path = Path(results_dir) / f"{TIMES_NAME}.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.setdefault("seconds", {})[notebook.stem] = round(seconds, 1)
    record.update(cpu=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads(),
                  cpu_count=os.cpu_count())
    write_results(TIMES_NAME, record, results_dir)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook of the repo")
    parser.add_argument("--smoke", action="store_true", help="SMOKE=True, outputs under --out")
    parser.add_argument("--out", type=Path, help="folder for executed notebooks, figures and results (with --smoke)")
    args = parser.parse_args(argv)

    failed = []
    for nb in args.notebooks or all_notebooks():
        params, output = {}, None
        if args.smoke:
            out = (args.out or Path("smoke-out")).resolve()
            params = smoke_parameters(nb, out)
            output = out / nb.name
            output.parent.mkdir(parents=True, exist_ok=True)
        else:
            availability = check_requirements(nb)
            if not availability.runnable:
                print(f"-- skipped {nb}: {availability.message}", flush=True)
                continue
            if availability.message:
                print(f"-- {nb}: {availability.message}", flush=True)
            params = availability.parameters
        t0 = time.perf_counter()
        print(f"== {nb} ...", flush=True)
        try:
            run_notebook(nb, output, params, progress=True)
        except Exception as err:  # papermill raises PapermillExecutionError with the cell's traceback
            failed.append(nb)
            print(f"!! {nb} failed: {str(err).strip().splitlines()[-1] if str(err).strip() else err!r}", flush=True)
            continue
        seconds = time.perf_counter() - t0
        print(f"== {nb} done in {seconds:.0f} s", flush=True)
        if not args.smoke:
            record_time(nb, seconds)
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(map(str, failed))}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
