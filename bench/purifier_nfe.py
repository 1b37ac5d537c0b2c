"""What purification costs and what it buys: DDPM with its full ancestral chain against DDIM with 10, 5 and 2
network evaluations, one audit per setting, measured in one run.

    python bench/purifier_nfe.py [--quick] [--n 64] [--steps 5]

Each setting purifies digits with the same trained DDPM network (trained once and cached, outside the timings; the
diffusion depth t* = 0.1 of T = 1000 steps, so the full chain is 100 ancestral steps) in front of the quickstart
ViT, and robaudit evaluates PGD under the non-adaptive and the adaptive threat models (randomized pipelines: EOT,
selection and scoring draws as set below). Prints, per setting: clean and robust accuracy (worst of the scoring
draws), purifier network evaluations and seconds per image of the clean prediction, and each accuracy's distance
from the full chain -- so a user can pick the cheapest setting within 2 points of it. ``--quick`` (run by the test
suite) trains the networks for one epoch, diffuses to t* = 0.02 (a 20-step full chain) and audits 4 images with
2-step PGD: it checks the bench runs end to end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tables import markdown_table  # bench/tables.py

import robaudit

SETTINGS = {
    "ddpm full chain (100 steps)": {"sampler": "ddpm"},
    "ddim 10": {"sampler": "ddim", "steps": 10},
    "ddim 5": {"sampler": "ddim", "steps": 5},
    "ddim 2": {"sampler": "ddim", "steps": 2},
}
THREATS = ("non-adaptive", "adaptive")


def audit(label: str, params: dict, *, n: int, steps: int, quick: bool, work: Path) -> dict:
    """One audit of PGD-``steps`` against the ViT behind DDPM purification with ``params``; its table row."""
    epochs = {"epochs": 1} if quick else {}
    mapping = {
        "model": {"train": {"data": "digits", "seed": 0, "recipe": epochs}},
        "data": {"name": "digits", "limit": n},
        "attacks": [{"name": "pgd", "steps": steps}],
        "purifiers": [{"name": "ddpm", **params, **({"recipe": epochs, "t_star": 0.02} if quick else {})}],
        "threats": list(THREATS),
        "eot": 2,
        "repeats": 5,
        "selection_draws": 3,
        "part_size": n,
        "device": "cpu",
        "convergence": "off",  # the samplers compared at one attack budget
        "out": str(work / label.split(" (")[0].replace(" ", "-")),
    }
    run_dir = robaudit.audit(mapping, overwrite=True).run_dir
    summary = json.loads((run_dir / "summary.json").read_text())
    timings = json.loads((run_dir / "timings.json").read_text())
    clean_key = "none|ddpm|none"
    row = {
        "setting": label,
        "clean": accuracy(summary, None),
        **{f"pgd {threat}": accuracy(summary, threat) for threat in THREATS},
        "purifier evals / image (clean)": timings["passes_per_sample"][clean_key]["purifier"],
        "seconds / image (clean)": round(timings["seconds_per_sample"][clean_key], 4),
        "seconds / image (adaptive pgd)": round(timings["seconds_per_sample"]["pgd|ddpm|adaptive"], 3),
    }
    return row


def accuracy(summary: dict, threat: str | None) -> float:
    """The purified pipeline's clean accuracy (``threat`` None) or PGD robust accuracy under ``threat``, worst of
    the scoring draws, from summary.json."""
    defense = next(d for d in summary["defenses"] if d["label"] == "ddpm")
    if threat is None:
        return round(defense["clean_accuracy_worst_of_n"]["value"], 4)
    result = next(r for r in defense["results"] if r["label"] == "pgd" and r["threat"] == threat)
    return round(result["robust_accuracy_worst_of_n"]["value"], 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one-epoch networks, 4 images, 2-step PGD (CI)")
    parser.add_argument("--n", type=int, default=None, help="digits audited (default 64; 4 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="PGD steps (default 5; 2 with --quick)")
    args = parser.parse_args(argv)
    n, steps = args.n or (4 if args.quick else 64), args.steps or (2 if args.quick else 5)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [audit(label, p, n=n, steps=steps, quick=args.quick, work=Path(tmp)) for label, p in SETTINGS.items()]
    full = rows[0]
    for row in rows[1:]:
        for key in ("clean", *(f"pgd {t}" for t in THREATS)):
            row[f"{key} vs full (points)"] = round(100 * (row[key] - full[key]), 1)
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
