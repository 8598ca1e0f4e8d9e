"""Training length and training seed against the testbeds' verdicts (`detectors.training_sweep`): `make sweeps`.

    python -m common.cli.sweeps                    # EDM and DiT: steps x1, x2, x4 and seeds 0, 1, 2;
                                                   # the CPU testbed: seeds 0, 1, 2
    python -m common.cli.sweeps dit --lengths 1 2 --seeds 0 1

Trains what the cache lacks (on 2 CPU cores: about 1 h 10 min for EDM, 50 min for DiT, 1 h 30 min for the CPU
testbed's two extra seeds with their Table 1 and steering runs), measures every variant and writes
`results/sweeps/<testbed notebook>.json` with its pictures; the notebooks then report it (rerun them, as
`make sweeps` does).
"""
from __future__ import annotations

import argparse

from ..plumbing.paths import RESULTS_DIR
from ..detectors import training_sweep as sweeps


def default_config(testbed: str):
    from ..testbeds import cpu_testbed, dit_testbed, edm_testbed

    return {"edm": edm_testbed.EDMTestbedConfig, "dit": dit_testbed.DiTTestbedConfig,
            "cpu": cpu_testbed.TestbedConfig}[testbed]()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("testbeds", nargs="*", choices=sweeps.TESTBEDS, default=list(sweeps.TESTBEDS))
    parser.add_argument("--lengths", type=int, nargs="*", default=None,
                        help="multiples of the default steps (default: 1 2 4; none for the CPU testbed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(sweeps.SEEDS))
    parser.add_argument("--results", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    for testbed in args.testbeds:
        result = sweeps.run_sweep(testbed, default_config(testbed), args.lengths, args.seeds)
        print(sweeps.write_sweep(result, args.results))
        print("\n".join(sweeps.sweep_lines(result)))


if __name__ == "__main__":
    main()
