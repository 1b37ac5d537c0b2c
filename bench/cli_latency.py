"""How fast `robaudit evaluate` refuses a bad config: every check runs in the config's one parse, before torch loads.

    python bench/cli_latency.py [--repeats 5]

Runs, each in a fresh interpreter (``python -m robaudit``), ``robaudit --help`` (the baseline, measured in the same
run) and ``robaudit evaluate --config`` on the quickstart config with one mistake: a bad value (``eps: 8/O``) and a
typo in an attack's hyperparameter (``{name: pgd, stepz: 10}``). Prints the median wall seconds of each, its ratio
to ``--help``, its exit code and the lines it printed. Targets: exit 2, one line, at most 0.5 s on 2 CPU cores.
Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 0.5
MISTAKES = {
    "a bad value (eps: 8/O)": {"eps": "8/O"},
    "a typo in an attack's hyperparameter (stepz)": {"attacks": [{"name": "pgd", "stepz": 10}]},
}


def timed(args: list[str], *, repeats: int) -> tuple[float, int, list[str]]:
    """(median wall seconds, exit code, output lines) of ``python -m robaudit ARGS`` in fresh interpreters."""
    seconds = []
    for _ in range(repeats):
        tic = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "robaudit", *args], capture_output=True, text=True)
        seconds.append(time.perf_counter() - tic)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return statistics.median(seconds), done.returncode, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (the median is printed)")
    args = parser.parse_args(argv)
    quickstart = yaml.safe_load((REPO / "examples" / "configs" / "quickstart.yaml").read_text())
    baseline, _, _ = timed(["--help"], repeats=args.repeats)
    print(f"robaudit --help: {baseline:.2f} s (baseline)")
    missed = 0
    with tempfile.TemporaryDirectory() as work:
        for name, change in MISTAKES.items():
            config = Path(work) / "quickstart.yaml"
            config.write_text(yaml.safe_dump({**quickstart, **change}))
            seconds, code, lines = timed(["evaluate", "--config", str(config)], repeats=args.repeats)
            met = code == 2 and len(lines) == 1 and seconds <= TARGET_SECONDS
            missed += not met
            print(f"{name}: {seconds:.2f} s ({seconds / baseline:.2f}x --help), exit {code}, {len(lines)} line(s)")
            print(f"  {lines[0] if lines else ''}")
            print(f"  target exit 2, one line, <= {TARGET_SECONDS} s: {'met' if met else 'MISSED'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
