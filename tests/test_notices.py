"""A clean run prints no notice a user must learn to ignore (`common/plumbing/notices.py`), and every other warning of the same
sources still shows: transformers' torchvision fallback, tqdm's IProgress notice, the Jupyter kernel's TCP notice."""
import logging
import subprocess
import sys
import warnings

import nbformat
from tqdm import TqdmWarning

from common.plumbing import notices
from conftest import ROOT

IMPORT_CLIP_PROCESSOR = "from transformers import CLIPImageProcessor"


def test_the_torchvision_fallback_notice_is_gone_and_other_transformers_warnings_stay():
    code = f"import common\n{IMPORT_CLIP_PROCESSOR}\nprint(common.plumbing.notices.dropped())"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "requires torchvision" not in done.stderr
    assert int(done.stdout.split()[-1]) >= 1                  # transformers did emit it: the filter dropped it

    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger(notices.TRANSFORMERS_LOGGER)
    logger.addHandler(handler)
    try:
        logger.warning("`FooImageProcessor` requires torchvision (not installed); "
                       "falling back to `FooImageProcessorPil`")
        logger.warning("`FooImageProcessor` requires torchvision (not installed); install it")   # another notice
        logger.warning("something else went wrong")
    finally:
        logger.removeHandler(handler)
    assert seen == ["`FooImageProcessor` requires torchvision (not installed); install it", "something else went wrong"]


def test_the_iprogress_notice_is_gone_and_other_tqdm_warnings_stay():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notices.silence()
        warnings.warn(TqdmWarning("IProgress not found. Please update jupyter and ipywidgets. See https://x"))
        warnings.warn(TqdmWarning("clamping frac to range [0, 1]"))
        warnings.warn(UserWarning("IProgress not found. Please update jupyter and ipywidgets."))   # not tqdm's
    assert [str(w.message) for w in caught] == ["clamping frac to range [0, 1]",
                                               "IProgress not found. Please update jupyter and ipywidgets."]


def test_a_notebook_kernel_prints_no_tcp_notice(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os\nprint(6 * 7, [f for f in os.listdir('.') if f.startswith('kernel')])")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "n.ipynb")
    code = (f"from common.cli.notebooks import run_notebook\n"
            f"out = run_notebook({str(tmp_path / 'n.ipynb')!r}, {str(tmp_path / 'out.ipynb')!r})\n"
            f"print(out.cells[0].outputs[0]['text'])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "42 []", done.stderr[-3000:]   # no socket in the cwd
    assert "running over TCP" not in done.stderr and "WARNING" not in done.stderr, done.stderr
    assert not list(tmp_path.glob("kernel-*"))                    # no socket files left beside the notebook


def test_a_pipeline_read_from_a_folder_prints_no_loading_bars(tmp_path, capfd):
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from common.models import pipelines

    pipelines.build_random_pipeline("tiny").save_pretrained(tmp_path / "pipe")
    capfd.readouterr()
    pipe = pipelines.load_pipeline(str(tmp_path / "pipe"), device="cpu")
    err = capfd.readouterr().err
    assert pipe.unet is not None
    assert "Loading pipeline components" not in err and "Loading weights" not in err, err
    assert diffusers_logging.is_progress_bar_enabled() and transformers_logging.is_progress_bar_enabled()


def test_quiet_loading_restores_the_bars_even_after_an_error():
    from diffusers.utils import logging as diffusers_logging

    try:
        with notices.quiet_loading():
            assert not diffusers_logging.is_progress_bar_enabled()
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert diffusers_logging.is_progress_bar_enabled()


def test_progress_range_prints_one_line_where_a_bar_would_print_many(capsys):
    """Outside a terminal (a notebook, a log file; here pytest's captured streams) the loop runs every step and
    prints one line when it ends, no bar; `progress=False` prints nothing."""
    from common.plumbing.notices import progress_range

    assert list(progress_range(5, "adam n=3", progress=True)) == [0, 1, 2, 3, 4]
    out, err = capsys.readouterr()
    assert out.splitlines() == [out.strip()] and out.startswith("adam n=3: 5 steps in ") and out.strip().endswith(" s")
    assert err == ""                                        # no tqdm bar
    assert list(progress_range(3, "x", progress=False)) == [0, 1, 2]
    assert capsys.readouterr() == ("", "")
