"""Speed-up of one audit on two torchrun ranks over the same audit on one process, measured in the same run.

    python bench/shard_scaling.py [--limit 200] [--part-size 10] [--ranks 2] [--device cpu]

Runs the quickstart audit (examples/configs/quickstart.yaml: FGSM, PGD, C&W, AutoAttack on a small ViT; the model is
trained and cached first, outside the timings) on ``--limit`` digits, once as one process and once on ``--ranks``
torchrun ranks (gloo on CPU, NCCL on GPUs), each process with one thread. Both runs use the same parts (which are
also the batches here: ``part_size`` < ``batch_size``). The ranks claim parts one at a time; the cost of a part is
very uneven (AutoAttack's later stages run only on the samples APGD-CE left standing), so many small parts balance
the ranks better than a few large ones. Prints both wall-clock times, the speed-up
(target >= 1.8x for 2 ranks on a 2-core machine) and whether the records and summary.json are identical byte for byte.
Exits 1 when the records differ or the speed-up misses the target.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "configs" / "quickstart.yaml"
TARGET = 1.8


def run(command: list[str], *, cwd: Path) -> float:
    """Wall-clock seconds of ``command`` with one thread per process (fails loudly)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    tic = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 1: a gate failed, the run itself is complete
        sys.exit(f"command failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - tic


def outputs(run_dir: Path) -> dict[str, bytes]:
    """Every records part and summary.json of a run directory."""
    files = {p.name: p.read_bytes() for p in sorted((run_dir / "records").glob("part-*.jsonl"))}
    files["summary.json"] = (run_dir / "summary.json").read_bytes()
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--part-size", type=int, default=10)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    evaluate = ["-m", "robaudit", "evaluate", "--config", str(CONFIG), "--device", args.device]
    evaluate += ["--limit", str(args.limit), "--part-size", str(args.part_size)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run([sys.executable, *evaluate[:7], "--limit", "1", "--attacks", "fgsm", "--out", "warm-up"], cwd=work)
        one = run([sys.executable, *evaluate, "--out", "one"], cwd=work)
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.ranks}"]
        many = run([*torchrun, *evaluate, "--out", "ranks"], cwd=work)
        identical = outputs(work / "one") == outputs(work / "ranks")
    speedup = one / many
    print(f"audit of {args.limit} digits in parts of {args.part_size}, one thread per process, device {args.device}")
    print(f"one process:          {one:8.1f} s   (baseline)")
    print(f"{args.ranks} torchrun ranks:     {many:8.1f} s")
    print(f"speed-up:             {speedup:8.2f}x  (target >= {TARGET}x for 2 ranks on 2 cores)")
    print(f"records and summary identical: {identical}")
    if not identical or (args.ranks == 2 and speedup < TARGET):
        sys.exit(1)


if __name__ == "__main__":
    main()
