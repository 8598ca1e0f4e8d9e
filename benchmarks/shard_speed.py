"""Sharded generation speed on the CPU: 2 processes x 1 thread against 1 process x 1 thread, one run each.

Both run the command line the users run, `python -m common.cli.generate` (1 process, --threads 1) and
`torchrun --nproc_per_node 2 -m common.cli.generate` (OMP_NUM_THREADS=1 each), on the same N prompts into two
temporary cache folders, and the images are checked to be identical. Reported: the generation loop's wall time (the
slowest process's; what the split speeds up), the whole command's (with Python, torch and the model loaded once per
process), and their ratios.

    python benchmarks/shard_speed.py [--model tiny|testbed] [--n 48] [--steps 20] [--batch-size 4]

"testbed" uses the trained CPU testbed (16x16 images; trained on first use, 15-40 min); "tiny" the random-weight
tiny pipeline (32x32). On 2 cores the ideal is 2x; what is lost goes to memory bandwidth and caches the two
processes share, and to the last batch when the batches do not split evenly.
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOP = re.compile(r"process (\d+) of (\d+): \d+ prompts done in ([0-9.]+) s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(command: list[str]) -> tuple[float, float]:
    """(whole command's seconds, slowest process's generation loop seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    loops = [float(m.group(3)) for m in LOOP.finditer(done.stdout)]
    return seconds, max(loops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", choices=["tiny", "testbed"])
    parser.add_argument("--n", type=int, default=48, help="prompts (one image each)")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps per image")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prompts = tmp / "bench.txt"
        prompts.write_text("".join(f"a blue circle and a red square on a white background {i}\n"
                                   for i in range(args.n)))
        common = ["--cpu", "--model", args.model, "--prompts", str(prompts), "--steps", str(args.steps),
                  "--batch-size", str(args.batch_size)]
        one = timed([sys.executable, "-m", "common.cli.generate", *common, "--threads", "1",
                     "--cache", str(tmp / "one")])
        two = timed([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                     str(free_port()), "-m", "common.cli.generate", *common, "--cache", str(tmp / "two")])
        [a], [b] = (list((tmp / name).iterdir()) for name in ("one", "two"))
        identical = all((a / p.name).read_bytes() == p.read_bytes() for p in b.glob("*.png"))
        assert len(list(b.glob("*.png"))) == args.n

    print(f"sharded generation, {args.model}: {args.n} images, DDIM {args.steps}, batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs; images identical: {identical}")
    print(f"{'':24}{'generation loop':>18}{'whole command':>16}")
    print(f"{'1 process x 1 thread':24}{one[1]:>16.1f} s{one[0]:>14.1f} s")
    print(f"{'2 processes x 1 thread':24}{two[1]:>16.1f} s{two[0]:>14.1f} s")
    print(f"{'speed-up':24}{one[1] / two[1]:>17.2f}x{one[0] / two[0]:>15.2f}x")


if __name__ == "__main__":
    main()
