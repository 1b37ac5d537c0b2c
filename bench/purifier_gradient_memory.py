"""Peak memory of an adaptive gradient through the DDPM purifier's reverse chain, with and without gradient
checkpointing of the chain (the baseline, measured in the same run). Each measurement runs in a fresh process.

    python bench/purifier_gradient_memory.py [--steps 20] [--batch 32]

Prints, for both, the peak RSS of the gradient above the RSS just before it (on Linux the process's peak is reset
first, so the imports' peak cannot hide it), and their ratio (checkpointed / plain).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def measure(checkpointing: bool, steps: int, batch: int) -> float:
    """Peak RSS growth (MiB) of one backward pass through a ``steps``-step DDIM chain."""
    import torch

    from robaudit.engine.passes import purifier_network
    from robaudit.purifiers import PURIFIERS, recipe_for

    torch.manual_seed(0)
    recipe = recipe_for("ddpm", {})
    network = PURIFIERS.get("ddpm").meta["build"](recipe, [1, 32, 32]).eval()
    purifier = PURIFIERS.build("ddpm", {"sampler": "ddim", "steps": steps, "t_star": 0.5}, network)
    purifier_network(purifier).gradient_checkpointing = checkpointing  # forced on or off
    images = torch.rand(batch, 1, 32, 32, requires_grad=True)
    purifier(images[:2].detach(), generator=torch.Generator().manual_seed(0))  # warm up allocators
    reset = reset_peak_rss()
    before = status_kib("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    purifier(images, generator=torch.Generator().manual_seed(1)).sum().backward()
    after = status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (after - before) / 1024


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux: ``/proc/self/clear_refs``), so the peak measured next
    is the gradient's and not an earlier one (imports, the warm-up). False where it cannot be reset: then the peak
    since the start is used, and a growth that stays below an earlier peak reads 0."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def status_kib(key: str) -> int:
    """A KiB value of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(f"{key}:"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--child", choices=["plain", "checkpointed"])
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child == "checkpointed", args.steps, args.batch)))
        return 0
    results = {}
    for mode in ("plain", "checkpointed"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--steps", str(args.steps), "--batch", str(args.batch)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results[mode] = float(out.strip().splitlines()[-1])
    print(f"DDPM purifier, {args.steps}-step DDIM chain, batch {args.batch}, one adaptive gradient:")
    print(f"  peak RSS growth without checkpointing (baseline): {results['plain']:8.1f} MiB")
    print(f"  peak RSS growth with checkpointing:               {results['checkpointed']:8.1f} MiB")
    print(f"  ratio checkpointed / baseline: {results['checkpointed'] / max(results['plain'], 1e-9):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
