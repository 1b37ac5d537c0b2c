"""Peak memory of `robaudit evaluate` on N and on 10N samples: evaluation streams the dataset batch by batch, so
peak RSS should not grow with the number of samples. The baseline is the N-sample run, measured in the same run.

    python bench/evaluate_memory.py [--n 300] [--size 128] [--batch-size 32]

Writes an image folder of 10N smooth random RGB PNGs (size x size) and an untrained small CNN to a temporary
folder, runs `robaudit evaluate --attacks fgsm` in a fresh process on the first N and on all 10N images, and prints
each process's peak RSS and their ratio (10N / N; the target is below 1.2). For scale it also prints what the 10N
images would take held in memory as float32. Exits 1 when the ratio misses the target.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 1.2


def write_images(root: Path, *, count: int, size: int) -> None:
    """``count`` smooth random RGB PNGs in two class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((size, size), Image.BILINEAR).save(folder / f"{i:06d}.png")


def write_model(path: Path, *, size: int) -> None:
    """An untrained 2-class small CNN for (3, size, size) inputs (memory does not depend on its weights)."""
    import torch

    import robaudit.models.architectures  # noqa: F401 - registers robaudit_small_cnn with timm
    from robaudit.models.classifiers import ModelCard, create_classifier, save_classifier

    torch.manual_seed(0)
    card = ModelCard(
        arch="robaudit_small_cnn",
        arch_kwargs={"in_chans": 3},
        num_classes=2,
        class_names=["class0", "class1"],
        input_size=[3, size, size],
        mean=[0.5] * 3,
        std=[0.25] * 3,
    )
    save_classifier(create_classifier(card), path)


def peak_rss_mib(command: list[str], *, cwd: Path) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``command`` run as a child process."""
    log = cwd / "stderr.log"
    tic = time.perf_counter()
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - tic
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"evaluate failed:\n{log.read_text(errors='replace')[-3000:]}")
    return usage.ru_maxrss / 1024, seconds  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="samples of the baseline run (the other has 10N)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="robaudit-bench-") as tmp:
        work = Path(tmp)
        write_images(work / "images", count=10 * args.n, size=args.size)
        write_model(work / "model.pt", size=args.size)
        env_cache = {"ROBAUDIT_CACHE": str(work / "cache")}
        os.environ.update(env_cache)
        rows = []
        for samples in (args.n, 10 * args.n):
            command = [
                sys.executable, "-m", "robaudit", "evaluate", "--model", "model.pt", "--data", "images",
                "--limit", str(samples), "--attacks", "fgsm", "--batch-size", str(args.batch_size),
                "--device", "cpu", "--out", f"run-{samples}",
            ]  # fmt: skip
            rss, seconds = peak_rss_mib(command, cwd=work)
            rows.append((samples, rss, seconds))
    held = 10 * args.n * 3 * args.size * args.size * 4 / 2**20
    print(f"evaluate --attacks fgsm, {args.size}x{args.size} RGB image folder, batch size {args.batch_size}")
    print(f"{'samples':>8} {'peak RSS (MiB)':>15} {'wall (s)':>9}")
    for samples, rss, seconds in rows:
        print(f"{samples:>8} {rss:>15.0f} {seconds:>9.1f}")
    ratio = rows[1][1] / rows[0][1]
    print(f"peak RSS ratio 10N / N: {ratio:.3f} (target < {TARGET}); 10N images as float32 in memory: {held:.0f} MiB")
    sys.exit(0 if ratio < TARGET else 1)


if __name__ == "__main__":
    main()
