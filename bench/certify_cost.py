"""What a certified floor costs: fixed-n CERTIFY and PREDICT against their sequential forms, measured in one run.

    python bench/certify_cost.py [--n 64] [--n-max 10000] [--json rows.json] [--quick]

The quickstart ViT on digits behind robaudit's digits ``ddpm`` (both trained once and cached, outside the timings) is
certified by diffusion denoised smoothing at sigma 0.25 and 0.5 (n0 100, alpha 0.001, the run's ``eps_l2`` 0.5) and
attacked by SmoothAdv (20 L2 PGD steps of 8 noise draws, judged by PREDICT), three times on the same first ``--n``
test digits:

- ``fixed``: Cohen et al.'s n = ``--n-max`` estimation draws and PREDICT draws for every sample;
- ``sequential``: draws stop per sample once certified or not at radius 0 and at ``eps_l2`` (``stop: decisions``, the
  default: what a gate reads), PREDICT once its top class separates;
- ``sequential radius``: draws stop once the radius is known to within 0.05 sigma (``stop: radius``: the curve).

Each run's certification draws come from the same per-sample streams, so the modes see the same noise draw for draw.
Only the sequential run attacks: fixed's SmoothAdv and PREDICT passes are exact by count (20 x 8 forward and backward
passes, n PREDICT draws), added to its row without running them, and its seconds are its certification's alone (at
about 30 s per sample and sigma on 2 CPU cores, the whole fixed bracket would double this bench's hour).
Per (mode, sigma) it prints estimation draws per sample (mean, max), passes per sample of the whole bracket (selection,
estimation, SmoothAdv's forward and backward, PREDICT; classifier passes, the denoiser runs as often), seconds, and
certified accuracy at r = 0.25 and 0.5, then the targets: the decision at ``eps_l2`` in at least 20x fewer
estimation draws with certified accuracy at least fixed-n's minus one sample; the bracket at least 8x cheaper in
passes; the radius curve at least 4x cheaper with no sample's radius more than the tolerance below fixed-n's.
Radii are compared where they count, on the samples certified for their label (a wrong class certifies nothing).
``--quick`` (the test suite): 4 digits, n 200, networks trained one epoch, 2 SmoothAdv steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tables import markdown_table  # bench/tables.py

import robaudit

SIGMAS = (0.25, 0.5)
EPS_L2 = 0.5
MODES = {  # in the order they run: the sequential decisions first (minutes), fixed after (most of the hour)
    "sequential": {"mode": "sequential", "stop": "decisions"},
    "fixed": {"mode": "fixed"},
    "sequential radius": {"mode": "sequential", "stop": "radius", "radius_tolerance": 0.05},
}
ATTACKED = ("sequential",)  # the modes whose runs attack; fixed's SmoothAdv and PREDICT are counted, not run


def certified_run(mode: str, *, n: int, n_max: int, quick: bool, work: Path) -> Path:
    """One audit whose certification runs in ``mode``; its run folder. The attack phase is one FGSM (the cheapest:
    the bench measures certification, whose seconds and passes the summary keeps apart)."""
    epochs = {"recipe": {"epochs": 1}} if quick else {}
    config = {
        "model": {"train": {"data": "digits", "seed": 0, **epochs}},
        "data": {"name": "digits", "limit": n},
        "attacks": [{"name": "fgsm"}],
        "purifiers": [{"name": "ddpm", **epochs}],
        "threats": ["non-adaptive"],
        "eps_l2": EPS_L2,
        "convergence": "off",
        "certify": {
            "sigma": list(SIGMAS),
            "n0": 20 if quick else 100,
            "n": n_max,
            "alpha": 0.001,
            "steps": (2 if quick else 20) if mode in ATTACKED else 0,
            "eot": 8,
            **MODES[mode],
        },
        "part_size": n,
        "out": str(work / mode.replace(" ", "-")),
    }
    return robaudit.audit(config, overwrite=True).run_dir


def records_of(run_dir: Path) -> list[dict]:
    """The run's certification records."""
    parts = sorted((Path(run_dir) / "certified").glob("part-*.jsonl"))
    return [json.loads(line) for part in parts for line in part.read_text().splitlines()]


def certified_at(rows: list[dict], radius: float) -> int:
    """Samples certified correct at L2 ``radius``."""
    return sum(r["prediction"] == r["label"] and r["radius"] >= radius for r in rows)


def mode_rows(mode: str, run_dir: Path, *, attack_passes: int, n_max: int) -> list[dict]:
    """One row per sigma of one mode's run. A run that did not attack (``ATTACKED``) adds the passes its SmoothAdv
    and fixed-n PREDICT would have taken, exact by count: ``attack_passes`` (steps x eot, forward and backward) and
    ``n_max`` PREDICT draws (the suite checks the hooks count what the draw counts say)."""
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    records = records_of(run_dir)
    rows = []
    for result in summary["certified"]["results"]:
        mine = [r for r in records if r["smoothed"] == result["smoothed"]]
        passes = result["passes_per_sample"]
        unrun = 0 if mode in ATTACKED else 2 * attack_passes + n_max
        rows.append(
            {
                "mode": mode,
                "sigma": result["sigma"],
                "n_samples": result["n_samples"],
                "draws_per_sample": round(result["draws"]["estimation_mean"], 1),
                "max draws": result["draws"]["estimation_max"],
                "predict draws": round(result["draws"].get("predict_mean", 0.0), 1),
                "passes_per_sample": round(passes["forward"] + passes["backward"] + unrun, 1),
                "seconds": round(result["seconds_per_sample"] * result["n_samples"], 2),
                "certified_accuracy": result["certified_accuracy"]["value"],
                "certified at r=0.25": certified_at(mine, 0.25),
                "certified at r=0.5": certified_at(mine, 0.5),
                "radii": {r["sample_id"]: r["radius"] if r["prediction"] == r["label"] else 0.0 for r in mine},
            }
        )
    return rows


def targets(rows: list[dict], *, tolerance: float) -> list[str]:
    """The acceptance targets, one line each, read off the rows (sequential and radius modes against fixed)."""
    lines = []
    for sigma in SIGMAS:
        by_mode = {r["mode"]: r for r in rows if r["sigma"] == sigma}
        if len(by_mode) < len(MODES):
            continue  # a --modes run: the targets compare all three
        fixed, sequential, radius = by_mode["fixed"], by_mode["sequential"], by_mode["sequential radius"]
        draws = fixed["draws_per_sample"] / max(1.0, sequential["draws_per_sample"])
        kept = sequential["certified at r=0.5"] >= fixed["certified at r=0.5"] - 1
        lines.append(
            f"sigma {sigma:g}: decision at eps_l2 {EPS_L2:g}: {draws:.1f}x fewer estimation draws (target 20x), "
            f"certified {sequential['certified at r=0.5']} vs fixed {fixed['certified at r=0.5']} "
            f"({'within' if kept else 'NOT within'} one sample)"
        )
        bracket = fixed["passes_per_sample"] / max(1.0, sequential["passes_per_sample"])
        lines.append(f"sigma {sigma:g}: whole bracket {bracket:.1f}x fewer passes (target 8x)")
        curve = fixed["draws_per_sample"] / max(1.0, radius["draws_per_sample"])
        below = [s for s, r in radius["radii"].items() if r < fixed["radii"][s] - tolerance * sigma - 1e-9]
        lines.append(
            f"sigma {sigma:g}: radius curve at tolerance {tolerance:g} sigma: {curve:.2f}x fewer estimation draws "
            f"(target 4x); {len(below)} sample(s) more than the tolerance below fixed-n's radius"
        )
    return lines


COLUMNS = ["mode", "sigma", "n_samples", "draws_per_sample", "max draws", "predict draws", "passes_per_sample"]
COLUMNS += ["seconds", "certified_accuracy", "certified at r=0.25", "certified at r=0.5"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=None, help="test digits (default 64; 4 with --quick)")
    parser.add_argument("--n-max", type=int, default=None, help="estimation draws of fixed n (default 10000)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--quick", action="store_true", help="4 digits, n 200, short training and attack")
    parser.add_argument("--modes", default=",".join(MODES), help="the modes to run (the targets need all three)")
    args = parser.parse_args(argv)
    n = args.n or (4 if args.quick else 64)
    n_max = args.n_max or (200 if args.quick else 10_000)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        for mode in args.modes.split(","):
            run_dir = certified_run(mode, n=n, n_max=n_max, quick=args.quick, work=Path(folder))
            rows += mode_rows(mode, run_dir, attack_passes=(2 if args.quick else 20) * 8, n_max=n_max)
            print(markdown_table([{k: r[k] for k in COLUMNS} for r in rows if r["mode"] == mode]), flush=True)
    print(markdown_table([{k: r[k] for k in COLUMNS} for r in rows]))
    for line in targets(rows, tolerance=MODES["sequential radius"]["radius_tolerance"]):
        print(f"- {line}")
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "radii"} for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
