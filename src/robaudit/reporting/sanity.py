"""Sanity checks after a run (Carlini et al. 2019, "On Evaluating Adversarial Robustness"; AutoAttack's flags), on
the per-sample records and the summary alone.

Each check yields a ``Finding`` (severity, title, explanation, evidence) shown in every report; ``--strict`` turns
warnings and errors into failed gates. The checks before a run, which build the pipelines, are the audit engine's
(``engine.preflight``); their findings come here through the manifest.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from robaudit.runs.findings import Finding
from robaudit.runs.records import Condition


def _correct(frame: pd.DataFrame, condition: str) -> pd.Series:
    """Per sample: correct in every repeat of ``condition`` (worst of N)."""
    rows = frame[frame["condition"] == condition]
    return rows.groupby("sample_id")["correct"].all()


def postrun(frame: pd.DataFrame, summary: dict[str, Any]) -> list[Finding]:
    """Checks on the records, for every defense and threat model that ran: attack strength ordering, black-box
    beating white-box, eps and step monotonicity, large-eps accuracy, adaptive weaker than non-adaptive, worst of N
    far below the mean, and AutoAttack's standard version forced on a randomized pipeline."""
    flags: list[Finding] = []
    num_classes = summary.get("model", {}).get("num_classes") or 1
    for defense in summary.get("defenses", []):
        for threat in defense.get("threats") or ["none"]:
            results = [r for r in defense["results"] if r["threat"] == threat]
            where = "" if defense["label"] == "none" else f" ({defense['label']}, {threat})"
            flags += strength_order_findings(frame, results, defense["label"], where)
            flags += black_box_findings(frame, results, defense["label"], where)
            flags += budget_findings(results, where, num_classes=num_classes)
        flags += luck_findings(defense)
    return flags + weak_adaptive_findings(summary) + forced_standard_findings(summary)


def _key(result: dict[str, Any], defense: str) -> str:
    return Condition(result["label"], defense, result["threat"]).key()


def strength_order_findings(
    frame: pd.DataFrame, results: list[dict[str, Any]], defense: str, where: str
) -> list[Finding]:
    """A stronger attack (a higher ``tier``: iterative over single-step, an ensemble over both, e.g. PGD over FGSM,
    AutoAttack over both) leaving robust, in its worst of N, samples the weaker one fooled at the same budget."""
    flags = []
    ordered = [r for r in results if r.get("tier") is not None and r.get("access", "white-box") == "white-box"]
    pairs = [(w, s) for w in ordered for s in ordered if w["tier"] < s["tier"]]
    for weak, strong in pairs:
        if strong["norm"] != weak["norm"] or abs(strong["eps"] - weak["eps"]) > 1e-9:
            continue
        weak_ok, strong_ok = _correct(frame, _key(weak, defense)), _correct(frame, _key(strong, defense))
        beaten = int((strong_ok & ~weak_ok.reindex(strong_ok.index, fill_value=True)).sum())
        if beaten > max(1, 0.02 * len(strong_ok)):
            flags.append(
                Finding(
                    "attack-strength",
                    "warning",
                    f"{strong['label']} is weaker than {weak['label']} on {beaten} samples{where}",
                    "A stronger attack should fool every sample a weaker one fools at the same budget. "
                    "Check its step size, iterations and EOT draws; gradients may be masked.",
                    f"{beaten} of {len(strong_ok)} samples",
                )
            )
    return flags


def black_box_findings(frame: pd.DataFrame, results: list[dict[str, Any]], defense: str, where: str) -> list[Finding]:
    """A black-box attack fooling samples every white-box attack at the same budget left robust."""
    flags = []
    white = [a for a in results if a.get("access", "white-box") == "white-box"]
    for black in (a for a in results if a.get("access") == "black-box"):
        same = [w for w in white if w["norm"] == black["norm"] and abs(w["eps"] - black["eps"]) < 1e-9]
        if not same:
            continue
        white_ok = pd.concat([_correct(frame, _key(w, defense)) for w in same], axis=1).all(axis=1)
        black_ok = _correct(frame, _key(black, defense)).reindex(white_ok.index, fill_value=True)
        beaten = int((white_ok & ~black_ok).sum())
        if beaten > max(1, 0.02 * len(white_ok)):
            flags.append(
                Finding(
                    "black-box-beats-white-box",
                    "error",
                    f"black-box {black['label']} fools {beaten} samples the white-box attacks did not{where}",
                    "A query-only attack succeeding where gradient attacks failed is the signature of "
                    "gradient masking: the white-box robust accuracy is overstated.",
                    f"{beaten} of {len(white_ok)} samples",
                )
            )
    return flags


def _worst(result: dict[str, Any]) -> dict[str, Any]:
    return result.get("robust_accuracy_worst_of_n", result["robust_accuracy"])


def budget_findings(results: list[dict[str, Any]], where: str, *, num_classes: int) -> list[Finding]:
    """Robust accuracy rising with eps or with steps, and accuracy above chance at a Linf eps >= 0.3."""
    flags = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for a in results:
        groups.setdefault((a["name"], a["norm"]), []).append(a)
    for (name, norm), members in groups.items():
        members = sorted(members, key=lambda a: a["eps"])
        for small, large in zip(members, members[1:], strict=False):
            if large["eps"] > small["eps"] and _worst(large)["ci_low"] > _worst(small)["ci_high"]:
                flags.append(
                    Finding(
                        "eps-monotonic",
                        "error",
                        f"{name} robust accuracy rises with eps ({small['label']} -> {large['label']}){where}",
                        "A larger budget can only help the attacker: the attack is failing to optimise.",
                    )
                )
        flags += more_steps_findings(name, members, where)
        largest = members[-1]
        if norm == "Linf" and largest["eps"] >= 0.3 and _worst(largest)["ci_low"] > 1 / num_classes + 0.1:
            flags.append(
                Finding(
                    "large-eps",
                    "error",
                    f"{name} at eps {largest['eps']:.3g} leaves accuracy above chance{where}",
                    "At a budget this large every image can be turned into another class; accuracy well "
                    "above chance means the attack is broken or gradients are masked.",
                )
            )
    return flags


def more_steps_findings(name: str, members: list[dict[str, Any]], where: str) -> list[Finding]:
    """At one budget, more iterations of the same attack raising robust accuracy beyond the intervals."""
    flags = []
    by_budget: dict[float, list[dict[str, Any]]] = {}
    for a in members:
        if "steps" in a.get("params", {}):
            by_budget.setdefault(round(a["eps"], 9), []).append(a)
    for same_eps in by_budget.values():
        same_eps.sort(key=lambda a: a["params"]["steps"])
        for few, many in zip(same_eps, same_eps[1:], strict=False):
            if many["params"]["steps"] > few["params"]["steps"] and _worst(many)["ci_low"] > _worst(few)["ci_high"]:
                flags.append(
                    Finding(
                        "more-steps",
                        "error",
                        f"more {name} steps raise robust accuracy ({few['label']} -> {many['label']}){where}",
                        "More iterations can only help the attacker; this points to a broken step size "
                        "or masked gradients.",
                    )
                )
    return flags


def luck_findings(defense: dict[str, Any], *, gap: float = 0.1) -> list[Finding]:
    """Worst of N far below the mean: the defense's robustness rides on the luck of its random draws."""
    flags = []
    for r in defense["results"]:
        mean, worst = r["robust_accuracy"]["value"], r["robust_accuracy_worst_of_n"]["value"]
        if r.get("repeats", 1) > 1 and mean is not None and mean - worst > gap:
            flags.append(
                Finding(
                    "worst-of-n",
                    "warning",
                    f"{r['label']} against {defense['label']} ({r['threat']}): worst of {r['repeats']} is "
                    f"{100 * (mean - worst):.0f} points below the mean",
                    "Many samples are fooled by some draws of the defense's randomness and not others: the mean "
                    "rides on luck, and an attacker who retries wins. Read the worst of N.",
                    f"mean {100 * mean:.1f}%, worst of {r['repeats']} {100 * worst:.1f}%",
                )
            )
    return flags


def weak_adaptive_findings(summary: dict[str, Any]) -> list[Finding]:
    """An adaptive or BPDA attack weaker than the non-adaptive one beyond the intervals."""
    flags = []
    for defense in summary.get("defenses", [])[1:]:
        results = {(r["label"], r["threat"]): _worst(r) for r in defense["results"]}
        for (label, threat), value in results.items():
            base = results.get((label, "non-adaptive"))
            if threat in ("bpda", "adaptive") and base and value["ci_low"] > base["ci_high"]:
                flags.append(
                    Finding(
                        "weak-adaptive",
                        "warning",
                        f"{label} {threat} is weaker than non-adaptive against {defense['label']}",
                        "An adaptive attack that does worse than attacking the classifier alone is too weak: "
                        "more steps, EOT draws or a better surrogate are needed.",
                    )
                )
    return flags


def forced_standard_findings(summary: dict[str, Any]) -> list[Finding]:
    """AutoAttack's standard version forced on a randomized pipeline (it is meant for deterministic models)."""
    flags = []
    for defense in summary.get("defenses", []):
        for r in defense["results"]:
            if r.get("forced_standard_on_randomized"):
                flags.append(
                    Finding(
                        "autoattack-version",
                        "warning",
                        f"{r['label']} ran AutoAttack's standard version on a randomized pipeline "
                        f"({defense['label']}, {r['threat']})",
                        "The standard version (no EOT; FAB and Square judge single draws) underestimates attacks on "
                        "randomized defenses; use version: rand (the default picks it).",
                    )
                )
    return flags
