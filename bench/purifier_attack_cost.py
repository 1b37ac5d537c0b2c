"""What an adaptive attack through a purifier costs, and what the cheaper recipes give up: one audit per recipe on the
same samples, measured in one run.

    python bench/purifier_attack_cost.py [--quick] [--n 8] [--reference-n 32] [--purifiers ddpm,ebm] [--work DIR]

It is slow on purpose: the reference pays 1,600 gradients through the whole purification per restart, and ddpm's
chain is 100 network evaluations long. ``--n 8`` is the default so that a CPU finishes it (one purifier per process,
``--purifiers ebm``, runs the two side by side). With a larger ``--n`` (128 for the convergence check's target) the
reference audits a seeded subset of ``--reference-n`` (32) of those digits, and the verdicts are compared there.
``--work DIR`` keeps the run directories (two processes' rows can then be compared sample by sample).

The quickstart ViT on digits behind two randomized purifiers trained here (cached, outside the timings): ``ddpm``
with the ancestral chain at t* = 0.1 (100 steps; DiffPure's SDE discretized) and ``ebm`` (ADP; its 10-draw prediction
ensemble is set to 1 here so that every recipe, grafting included, attacks the same pipeline). Each recipe is an
adaptive PGD audit at Linf 8/255 on a seeded random subset of the test digits, its predictions scored over 10 draws
(worst of N and mean):

- reference: PGD-100 with EOT 16, full gradients, no convergence check;
- default: PGD-20 with EOT 4 (robaudit's defaults), without the convergence check; followed by its twin (unless
  ``--no-twins``), the same audit with its EOT, selection and scoring draws looped one draw at a time
  (``batch_draws: false``) instead of in the batch dimension: the speed-up, and counts and verdicts compared;
- default + check: the same with the headline convergence check certifying a fall of at most 5 points (its rung on
  these randomized pipelines: PGD-20 with EOT 8 from new random starts, on the standing samples the loss trace flags
  and a seeded draw of the rest; on all of them if one falls);
- grafting: the default with ``graft: 1``;
- surrogate (ddpm only): the default with ``backward_steps: 5``, a 5-step DDIM backward pass;
- both: grafting and the surrogate (ddpm only);
- selective: the default with ``eot_mode: selective`` (DiffHammer's selective gradient: the EOT draws weighted
  toward the ones closest to being wrong, aimed at the worst-of-N verdict) against the mean-loss EOT of ``default``.

Each row gives the purifier-network evaluations per audited sample (forward, recomputations included; and backward),
the check's share of them, the classifier's passes, worst-of-N and mean robust accuracy with 95% intervals, what the
check certified, and seconds; then the targets as ratios against the reference and the default. ``--quick`` (the
test suite) trains the purifiers for one epoch and audits 6 digits through a 5-step chain with tiny budgets: it
checks the bench runs end to end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from tables import markdown_table  # bench/tables.py

import robaudit
from robaudit.runs.rundir import PASS_KINDS, RunDir

CHECK = {"mode": "check", "delta": 0.05}  # the headline check, certifying a fall of at most 5 points
RECIPES = {
    "reference": ({"steps": 100}, 16, {}, "off"),
    "default": ({"steps": 20}, 4, {}, "off"),
    "default (looped draws)": ({"steps": 20}, 4, {}, "off"),
    "default + check": ({"steps": 20}, 4, {}, CHECK),
    "grafting": ({"steps": 20}, 4, {"graft": 1}, "off"),
    "surrogate": ({"steps": 20}, 4, {"backward_steps": 5}, "off"),
    "both": ({"steps": 20}, 4, {"graft": 1, "backward_steps": 5}, "off"),
    "selective": ({"steps": 20, "eot_mode": "selective"}, 4, {}, "off"),
}
SETTINGS = {"default (looped draws)": {"batch_draws": False}}  # the draws one at a time, as before issue 29
TWINS = {"default": "default (looped draws)"}  # run right after the recipe (``--no-twins``: not)
QUICK_STEPS = {"reference": 4, "default": 2}
PURIFIERS = {"ddpm": {"t_star": 0.1, "sampler": "ddpm"}, "ebm": {"ensemble": 1}}
QUICK_PURIFIERS = {"ddpm": {"t_star": 0.005}, "ebm": {"max_steps": 2}}  # a 5-step chain; 2 score steps
QUICK_DRAWS = {"repeats": 2, "selection_draws": 2}


def audit(purifier: str, recipe: str, *, n: int, quick: bool, work: Path, device: str) -> dict:
    """One adaptive PGD audit of the ViT behind ``purifier`` with ``recipe`` on a seeded ``n`` of the test digits
    (the same permutation for every ``n``: a smaller ``n`` audits a subset of a larger one); its table row."""
    attack, eot, extra, convergence = RECIPES[recipe]
    if quick:
        attack = {**attack, "steps": QUICK_STEPS["reference" if recipe == "reference" else "default"]}
    epochs = {"recipe": {"epochs": 1}} if quick else {}
    settings = {**PURIFIERS[purifier], **(QUICK_PURIFIERS[purifier] if quick else {})}
    mapping = {
        "model": {"train": {"data": "digits", "seed": 0}},  # the quickstart ViT (quick too: it must be right)
        "data": {"name": "digits", "limit": n, "subset_seed": 0},
        "attacks": [{"name": "pgd", **attack}],
        "purifiers": [{"name": purifier, **settings, **extra, **epochs}],
        "threats": ["adaptive"],
        "eot": 2 if quick else eot,
        "repeats": 10,
        "selection_draws": 10,
        **(QUICK_DRAWS if quick else {}),
        **SETTINGS.get(recipe, {}),
        "convergence": convergence,
        "part_size": n,
        "device": device,
        "out": str(work / f"{purifier}-{recipe.replace(' ', '-').replace('+', 'and').strip('()').replace('(', '')}"),
    }
    tic = time.perf_counter()
    run_dir = robaudit.audit(mapping, overwrite=True).run_dir
    return row(purifier, recipe, run_dir, seconds=time.perf_counter() - tic)


def row(purifier: str, recipe: str, run_dir: Path, *, seconds: float) -> dict:
    """The table row of one audit: cost over every condition of the attack (the check's rung included), per audited
    sample, verdicts of the worst case, and the whole audit's seconds (clean scoring and reports included, the same
    for every recipe)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    defense = summary["defenses"][1]
    attacked = [r for r in defense["results"] if r["threat"] == "adaptive"]
    costs = RunDir(run_dir).read_costs()
    keys = [f"{r['label']}|{defense['label']}|adaptive" for r in attacked]
    n = defense["n_samples"]
    total = {kind: sum(costs.get(k, {}).get(kind, 0) for k in keys) / n for kind in PASS_KINDS}
    rung = {kind: sum(costs.get(k, {}).get(kind, 0) for k in keys if "+x" in k) / n for kind in PASS_KINDS}
    worst = defense["worst_case"]["robust_accuracy"]
    mean = min((r["robust_accuracy"] for r in attacked), key=lambda rate: rate["value"])
    robust = sorted(worst_case_ids(run_dir, defense["label"]))
    return {
        "purifier": purifier,
        "recipe": recipe,
        "purifier evals / sample": round(total["purifier"], 1),
        "purifier backward / sample": round(total["purifier_backward"], 1),
        "purifier fwd + bwd / sample": round(total["purifier"] + total["purifier_backward"], 1),
        "check share": f"{100 * rung['purifier'] / max(total['purifier'], 1e-9):.0f}%" if "+ check" in recipe else "-",
        "classifier passes / sample": round(total["forward"] + total["backward"], 1),
        "worst of N": f"{100 * worst['value']:.1f}% [{100 * worst['ci_low']:.1f}, {100 * worst['ci_high']:.1f}]",
        "worst_value": worst["value"],
        "mean": f"{100 * mean['value']:.1f}% [{100 * mean['ci_low']:.1f}, {100 * mean['ci_high']:.1f}]",
        "check": check_verdict(summary, defense["label"]),
        "seconds (audit)": round(seconds, 1),
        "robust_ids": robust,
        "sample_ids": sorted(all_ids(run_dir, defense["label"])),
        "n": n,
    }


def all_ids(run_dir: Path, defense: str) -> set[str]:
    """The samples the audit of ``defense`` covered."""
    return {r["sample_id"] for r in RunDir(run_dir).read_records() if r["purifier"] == defense}


def worst_case_ids(run_dir: Path, defense: str) -> set[str]:
    """The samples robust in ``defense``'s worst case (every attack, rung and scoring draw)."""
    records = RunDir(run_dir).read_records()
    samples = {r["sample_id"] for r in records if r["purifier"] == defense}
    return samples - {r["sample_id"] for r in records if r["purifier"] == defense and not r["correct"]}


def check_verdict(summary: dict, defense: str) -> str:
    """What the headline convergence check certified on ``defense`` under the adaptive threat ("-" when it did not
    run)."""
    verdicts = [
        ("certified: " if check.get("certified") else "not certified: ") + check.get("statement", "")
        for check in summary.get("convergence", [])
        if check["defense"] == defense and check["threat"] == "adaptive"
    ]
    return "; ".join(verdicts) or "-"


def targets(rows: list[dict]) -> list[str]:
    """The targets, as measured: the default's draws batched against looped, the default with convergence against
    the reference, grafting against the default's backward passes."""
    lines = []
    for purifier in dict.fromkeys(r["purifier"] for r in rows):
        mine = {r["recipe"]: r for r in rows if r["purifier"] == purifier}
        if "default" not in mine:
            continue  # the targets are ratios against the default (and the reference)
        if "default (looped draws)" in mine:
            lines.append(batched_against_looped(purifier, mine["default"], mine["default (looped draws)"]))
        for name in ("default", "default + check"):
            if name in mine and "reference" in mine:
                lines.append(against_reference(purifier, name, mine[name], mine["reference"], mine["default"]))
        if "grafting" in mine:
            plain = mine["default"]
            cut = plain["purifier backward / sample"] / max(mine["grafting"]["purifier backward / sample"], 1e-9)
            drift = 100 * (mine["grafting"]["worst_value"] - plain["worst_value"])
            lines.append(
                f"{purifier}: grafting: {cut:.1f}x fewer purifier backward evaluations than the default "
                f"(target >= the EOT factor, 4), worst of N {drift:+.1f} points"
            )
        if "selective" in mine:
            drift = 100 * (mine["selective"]["worst_value"] - mine["default"]["worst_value"])
            lines.append(
                f"{purifier}: selective EOT vs mean-loss EOT (both PGD-20, EOT 4): worst of N {drift:+.1f} points "
                "(negative: selective breaks more)"
            )
    return lines


def batched_against_looped(purifier: str, batched: dict, looped: dict) -> str:
    """The target line of draws in the batch dimension: the default audit's seconds with its EOT, selection and
    scoring draws batched against the same audit with them looped, and whether counts and verdicts are identical."""
    counts = [c for c in batched if "/ sample" in c]
    same_counts = all(batched[c] == looped[c] for c in counts)
    same_verdicts = all(batched[c] == looped[c] for c in ("robust_ids", "worst of N", "mean"))
    speedup = looped["seconds (audit)"] / max(batched["seconds (audit)"], 1e-9)
    yes = {True: "yes", False: "NO"}
    return (
        f"{purifier}: draws in the batch dimension: {batched['seconds (audit)']} s, looped "
        f"{looped['seconds (audit)']} s ({speedup:.2f}x faster); counts identical: {yes[same_counts]}; verdicts "
        f"identical: {yes[same_verdicts]}"
    )


def against_reference(purifier: str, name: str, mine: dict, reference: dict, default: dict) -> str:
    """One recipe's target line: its worst-of-N gap to the reference on the reference's samples (a seeded subset of
    the recipe's when the reference audits fewer), how many times fewer purifier evaluations it paid per sample
    (forward, and forward + backward), and what its convergence check alone cost per sample."""
    on_reference = len(set(mine["robust_ids"]) & set(reference["sample_ids"]))  # mine, on the reference's samples
    gap = 100 * (on_reference - len(reference["robust_ids"])) / reference["n"]
    forward, total = "purifier evals / sample", "purifier fwd + bwd / sample"
    cheaper = reference[forward] / max(mine[forward], 1e-9)
    cheaper_total = reference[total] / max(mine[total], 1e-9)
    check = mine[forward] - default[forward]
    line = (
        f"{purifier}: {name} vs reference (on the reference's {reference['n']} samples): worst of N {gap:+.1f} points "
        f"(target <= 2), {cheaper:.1f}x fewer purifier evaluations per sample (target >= 6 with the check; forward + "
        f"backward: {cheaper_total:.1f}x)"
    )
    return line + (f"; the check alone: {check:.0f} evaluations / sample" if name != "default" else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one-epoch purifiers, 6 digits, tiny budgets (CI)")
    parser.add_argument("--n", type=int, default=None, help="digits audited (default 8; 6 with --quick)")
    parser.add_argument("--purifiers", default="ddpm,ebm", help="comma list of ddpm, ebm")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma list of recipes, run in this order")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the same device for every recipe)")
    parser.add_argument(
        "--reference-n",
        type=int,
        default=None,
        help="digits the reference audits: a seeded subset of the n (default: n, at most 32)",
    )
    parser.add_argument("--work", type=Path, default=None, help="keep the run directories here (default: removed)")
    parser.add_argument("--no-twins", action="store_true", help="skip the default's looped-draws twin")
    args = parser.parse_args(argv)
    n = args.n or (6 if args.quick else 8)
    reference_n = min(n, args.reference_n or 32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for purifier in args.purifiers.split(","):
            wanted = [r.strip() for r in args.recipes.split(",")]
            unknown = [r for r in wanted if r not in RECIPES]
            if unknown:
                parser.error(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
            recipes = [r for r in wanted if purifier == "ddpm" or "surrogate" not in r and r != "both"]
            if not args.no_twins:
                recipes = [twin for r in recipes for twin in (r, TWINS.get(r)) if twin]
                recipes = list(dict.fromkeys(recipes))
            for recipe in recipes:
                size = reference_n if recipe == "reference" else n
                rows.append(audit(purifier, recipe, n=size, quick=args.quick, work=work, device=args.device))
                # after every audit: a run cut short still leaves its finished rows
                print(markdown_table(rows, hidden=("worst_value", "robust_ids", "sample_ids")) + "\n", flush=True)
    print("\n" + "\n".join(targets(rows)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
