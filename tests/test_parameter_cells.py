"""The notebooks' `parameters` cells write their defaults as literals, so a reader sees the values a run uses; each
must equal the `common` constant it mirrors (the CLI's default), so the notebook and the library cannot drift apart.
Only what depends on the model or the machine stays None."""
import json

import pytest

from common import detectors
from common.models import generate, representations
from common.steering import steerability, steerer
from common.testbeds import cpu_testbed
from conftest import ROOT


def parameters(notebook: str) -> dict:
    """The names the notebook's `parameters` cell sets (it assigns literals only)."""
    cells = json.loads((ROOT / "2-Application" / f"{notebook}.ipynb").read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if "parameters" in c["metadata"].get("tags", []))
    namespace = {}
    exec(compile(source, f"<{notebook} parameters>", "exec"), namespace)
    return {k: v for k, v in namespace.items() if k != "__builtins__"}


MIRRORS = [   # (notebook, parameter, the constant it mirrors)
    *[(nb, name, value) for nb in ("SD_compare_reps", "Table1_detection", "CPU_testbed") for name, value in (
        ("NUM_INFERENCE_STEPS", generate.NUM_INFERENCE_STEPS), ("GUIDANCE_SCALE", generate.GUIDANCE_SCALE),
        ("MEM_SEED", generate.MEM_SEED), ("GEN_SEED", generate.GEN_SEED))],
    ("SD_compare_reps", "LAYER", representations.DETECTION_LAYER),
    ("SD_compare_reps", "TIMESTEP", representations.DETECTION_TIMESTEP),
    ("SD_compare_reps", "POOLING", representations.DETECTION_POOLING),
    ("SD_compare_reps", "EXTRACTION_SEED", representations.EXTRACTION_SEED),
    ("SD_compare_reps", "WEN_STEPS", detectors.wen.WEN_STEPS),
    ("Table1_detection", "METHODS", detectors.TABLE_ROWS),
    ("Table1_detection", "N_CALIBRATION", cpu_testbed.N_CALIBRATION),
    *[(nb, "KIND_SETS", cpu_testbed.KIND_SETS) for nb in ("CPU_testbed", "Table1_detection")],
    ("SD_steering", "N_REF_PER_SIDE", steerability.N_REF_PER_SIDE),
    ("SD_steering", "NUM_INFERENCE_STEPS", steerer.NUM_INFERENCE_STEPS),
    ("SD_steering", "STEER_LAST_N", steerer.STEER_LAST_N),
    ("SD_steering", "STEER_SKIP_LAST", steerer.STEER_SKIP_LAST),
    ("SD_steering", "GUIDANCE_SCALE", steerability.STEERING_GUIDANCE),
    ("SD_steering", "REFERENCE_GUIDANCE", steerability.REFERENCE_GUIDANCE),
    ("SD_steering", "SEEDS_PER_PROMPT", steerability.SEEDS_PER_PROMPT),
    ("SD_steering", "GEN_SEED", steerability.GEN_SEED),
    ("SD_steering", "MEM_SEED", steerability.MEM_SEED),
]

MACHINE = {"MODEL", "DEVICE", "DTYPE"}          # None: SD v1.4 where it can run, else the CPU testbed; the machine's
MAY_BE_NONE = {                                 # ... and the model's prompt files, task and statistics
    "SD_compare_reps": MACHINE | {"MEM_PROMPTS", "GEN_PROMPTS", "VM_TM_LABELS"},
    "Table1_detection": MACHINE | {"MEM_PROMPTS", "GEN_PROMPTS", "VM_TM_LABELS", "NEMO_STATISTICS"},
    "SD_steering": MACHINE | {"ALPHAS", "GEN_PROMPTS", "MEM_PROMPTS"},
    "CPU_testbed": set(),
}


@pytest.mark.parametrize("notebook, name, constant", MIRRORS, ids=[f"{nb}-{name}" for nb, name, _ in MIRRORS])
def test_parameter_equals_the_constant_it_mirrors(notebook, name, constant):
    value = parameters(notebook)[name]
    assert value == constant and type(value) is type(constant)      # 50, not 50.0: the values build cache keys


@pytest.mark.parametrize("notebook", sorted(MAY_BE_NONE))
def test_only_model_or_machine_dependent_parameters_are_none(notebook):
    assert {k for k, v in parameters(notebook).items() if v is None} <= MAY_BE_NONE[notebook]
