"""Judging the convergence check from a run's results: for each attack under each defense and threat model, the
effort ladder (the attack, then its escalated rungs), the robust accuracy and cost at each rung, and whether the
check passed: a rung that breaks at most ``tolerance`` more samples than the rung below it, or keeps the robust
accuracy within the lower edge of the interval below it, shows the attack had converged there. A rung that
re-attacked a seeded fraction of the survivors is judged on its count divided by that fraction.

Everything here is read from ``summary.json``'s results, the saved config and the counted passes: a run directory is
enough to judge it again.
"""

from __future__ import annotations

from typing import Any

from robaudit.runs.findings import Finding
from robaudit.runs.records import Condition

EFFORT_KEYS = ("steps", "n_queries", "restarts", "eot_iter", "eot_growth")


def passes_per_sample(passes: dict[str, Any], key: str) -> float | None:
    """Model passes per sample of a condition (classifier forward + backward + purifier network evaluations)."""
    counted = passes.get(key)
    if not counted:
        return None
    return round(float(counted.get("forward", 0) + counted.get("backward", 0) + counted.get("purifier", 0)), 3)


def rung_row(result: dict[str, Any], key: str, passes: dict[str, Any], eot: int | None) -> dict[str, Any]:
    """One rung of a ladder: its label, effort, robust accuracy (worst of N and mean) and cost."""
    scale = result.get("eot_scale", 1)
    effort = {k: result["params"][k] for k in EFFORT_KEYS if result["params"].get(k) is not None}
    if eot and result.get("repeats", 1) > 1:
        effort["eot"] = eot * scale
    return {
        "label": result["label"],
        "rung": result.get("rung", 0),
        "effort": effort,
        "robust_accuracy_worst_of_n": result["robust_accuracy_worst_of_n"],
        "robust_accuracy": result["robust_accuracy"]["value"],
        "passes_per_sample": passes_per_sample(passes, key),
    }


def estimate_over_survivors(row: dict[str, Any], newly: int, fraction: float) -> float | None:
    """What a rung that broke ``newly`` samples would have broken over all survivors: scaled by the share it attacked
    again (counted when the run recorded it, else the configured fraction). None when it attacked none of them."""
    standing, reattacked = row.get("standing"), row.get("reattacked")
    if standing is None:
        return newly / fraction
    if reattacked == 0:
        return 0.0 if standing == 0 else None
    return newly * standing / reattacked


def ladder_verdict(
    rows: list[dict[str, Any]], *, tolerance: int, fraction: float = 1.0
) -> tuple[int | None, list[int], list[float | None]]:
    """(the first rung at which the check passes, or None; the samples each rung broke beyond the one below; those
    counts estimated over all survivors). When a rung re-attacked only a seeded fraction of the survivors, what it
    broke is scaled up by that share before it is judged: a check on a quarter that breaks one sample stands for
    about four, and must not pass where the whole check would fail. A rung that re-attacked none of the survivors
    checked nothing and never passes."""
    broken, estimated, passed_at = [], [], None
    for below, row in zip(rows, rows[1:], strict=False):
        low = below["robust_accuracy_worst_of_n"]
        newly = int(low["successes"]) - int(row["robust_accuracy_worst_of_n"]["successes"])
        guess = estimate_over_survivors(row, newly, fraction)
        broken.append(newly)
        estimated.append(None if guess is None else round(guess, 1))
        if guess is None:
            continue
        total, floor = low.get("total") or 0, low["ci_low"]
        within = total > 0 and floor is not None and (int(low["successes"]) - guess) / total >= floor
        if passed_at is None and (guess <= tolerance or within):
            passed_at = row["rung"]
    return passed_at, broken, estimated


def convergence_checks(
    summary: dict[str, Any],
    config: dict[str, Any],
    passes: dict[str, Any],
    rung_samples: dict | None = None,
    check: list[Any] | None = None,
) -> list[dict]:
    """One entry per (attack, defense, threat) that has rungs: its ladder and the check's verdict.
    ``rung_samples``: per rung condition, the survivors below it and those it attacked again (``RunDir``);
    ``check``: the headline check's outcomes (``headline_check.plan_check``), for ``scope: headline``."""
    settings = config.get("convergence") or {}
    if not settings or settings.get("mode") == "off":
        return []
    if settings.get("scope", "attack") == "headline":
        return [headline_entry(summary, settings, passes, outcome) for outcome in check or []]
    randomized_classifier = summary["model"]["randomized"].get("randomized", False)
    checks = []
    for defense in summary["defenses"]:
        eot = config.get("eot") if defense["label"] != "none" or randomized_classifier else None
        for result in defense["results"]:
            if result.get("convergence_of") is not None:
                continue
            ladder = [result, *rungs_of(defense["results"], result)]
            if len(ladder) == 1:
                continue
            keys = [Condition(r["label"], defense["label"], r["threat"]).key() for r in ladder]
            rows = [rung_row(r, k, passes, eot) for r, k in zip(ladder, keys, strict=True)]
            for row, key in zip(rows[1:], keys[1:], strict=True):
                row.update((rung_samples or {}).get(key, {}))
            fraction = float(settings.get("fraction", 1.0))
            passed_at, broken, estimated = ladder_verdict(
                rows, tolerance=int(settings.get("tolerance", 1)), fraction=fraction
            )
            for row, newly, guess in zip(rows[1:], broken, estimated, strict=True):
                row["newly_broken"] = newly
                if fraction < 1:
                    row["estimated_broken"] = guess  # over all survivors; None: the rung attacked none of them
            checks.append(
                {
                    "attack": result["label"],
                    "defense": defense["label"],
                    "threat": result["threat"],
                    **{k: settings.get(k) for k in ("mode", "factor", "fraction", "tolerance")},
                    "ladder": rows,
                    "converged": passed_at is not None,
                    "converged_at": passed_at,
                    "ceiling": ladder[-1]["label"].rsplit("+", 1)[-1],
                }
            )
    return checks


def headline_entry(
    summary: dict[str, Any], settings: dict[str, Any], passes: dict[str, Any], outcome: Any
) -> dict[str, Any]:
    """The headline check of one (defense, threat) (``headline_check.Outcome``): the strongest attack's ladder, its
    stages, the certified bound and the statement a reviewer signs."""
    defense = next(d for d in summary["defenses"] if d["label"] == outcome.defense)
    results = [r for r in defense["results"] if r["threat"] == outcome.threat]
    rungs = sorted((r for r in results if r.get("check_scope") == "headline"), key=lambda r: r["rung"])
    base = [r for r in results if rungs and r["label"] == rungs[0]["convergence_of"]]
    ladder = [
        rung_row(r, Condition(r["label"], outcome.defense, outcome.threat).key(), passes, None) for r in base + rungs
    ]
    texts = {r["label"]: r.get("rung_text") for r in rungs}
    stages = [
        {
            "rung": stage.label,
            **({"rung_text": texts[stage.label]} if texts.get(stage.label) else {}),
            "stage": stage.kind,
            "standing": pair.standing,
            "flagged": pair.flagged,
            "drawn": pair.drawn,
            "attacked": len(pair.chosen),
            "fell": len(fallen),
        }
        for stage, pair, fallen in outcome.stages
    ]
    total = defense["n_samples"]
    ladder = ladder[:1] + [row for row in ladder[1:] if any(s["rung"] == row["label"] for s in stages)]
    for row in ladder[1:]:  # a rung's passes are counted per sample it re-attacked: stated per audited sample too
        attacked = sum(s["attacked"] for s in stages if s["rung"] == row["label"])
        row["passes_per_reattacked"] = row["passes_per_sample"]
        if row["passes_per_sample"] is not None and total:
            row["passes_per_sample"] = round(row["passes_per_sample"] * attacked / total, 3)
    reached = list(range(1, len(ladder)))
    return {
        "scope": "headline",
        "attack": base[0]["label"] if base else None,
        "defense": outcome.defense,
        "threat": outcome.threat,
        **{k: settings.get(k) for k in ("mode", "factor", "delta", "confidence")},
        "ladder": ladder,
        "stages": stages,
        "certified": outcome.certified,
        "bound": outcome.bound,
        "bound_points": None if outcome.bound is None or not total else round(100 * outcome.bound / total, 2),
        "pending": outcome.pending,
        "converged": outcome.certified,
        "converged_at": (reached[-1] if reached else 0) if outcome.certified else None,
        "ceiling": ladder[-1]["label"].rsplit("+", 1)[-1] if len(ladder) > 1 else None,
        "statement": headline_statement(outcome, stages, settings, total),
    }


def headline_statement(outcome: Any, stages: list[dict[str, Any]], settings: dict[str, Any], total: int) -> str:
    """What the headline check certified, in words: what ran on how many standing samples, what fell, the bound."""
    confidence = f"{100 * float(settings.get('confidence', 0.95)):.0f}%"
    if outcome.pending:
        return "the convergence check has not finished: run the same command again once every shard is done"
    if not stages:
        if not outcome.bound:
            return "no sample stands in this worst case: there is nothing a stronger attack could break"
        return (
            f"{outcome.bound} standing sample(s), too few to move the headline by more than "
            f"{points(outcome.bound, total)} points: certified without re-attacking"
        )
    said = [stage_phrase(stage) for stage in stages]
    if outcome.certified:
        standing = stages[-1]["standing"]
        said.append(
            f"at {confidence} confidence the rung would break at most {outcome.bound} more of the {standing} "
            f"standing, so the headline would fall at most {points(outcome.bound, total)} points of {total} samples"
        )
    else:
        fell = sum(s["fell"] for s in stages)
        said.append(
            f"{fell} fell in all and the headline reads them"
            + ("" if settings.get("mode") == "escalate" else " (convergence: escalate climbs another rung)")
        )
    return "; ".join(said)


def stage_phrase(stage: dict[str, Any]) -> str:
    """One stage in words, e.g. "a 2x rung of autoattack on 16 of 34 standing samples (3 flagged by their loss
    trace, 13 a seeded draw): none fell"."""
    scale = stage["rung"].rsplit("+", 1)
    rung = stage.get("rung_text") or f"a {scale[1][1:]}x rung of {scale[0]}"
    fell = "none fell" if not stage["fell"] else f"{stage['fell']} fell"
    if stage["stage"] == "all":
        return f"so {rung} ran on the other {stage['attacked']} standing samples: {fell}"
    how = f"{stage['flagged']} flagged by their loss trace, {stage['drawn']} a seeded draw"
    return f"{rung} on {stage['attacked']} of {stage['standing']} standing samples ({how}): {fell}"


def points(samples: int | None, total: int) -> str:
    """Samples of ``total`` as percentage points, e.g. "2.0"."""
    return "n/a" if samples is None or not total else f"{100 * samples / total:.1f}"


def rungs_of(results: list[dict[str, Any]], base: dict[str, Any]) -> list[dict[str, Any]]:
    """The rungs of ``base`` (same threat model), lowest first."""
    rungs = [r for r in results if r.get("convergence_of") == base["label"] and r["threat"] == base["threat"]]
    return sorted(rungs, key=lambda r: r["rung"])


def convergence_findings(checks: list[dict[str, Any]]) -> list[Finding]:
    """A warning per ladder whose check failed: how many samples the stronger rungs broke, and the robust accuracy
    they left."""
    flags = []
    for check in checks:
        if check["converged"]:
            continue
        if check.get("scope") == "headline":
            flags += [] if check["pending"] else [headline_finding(check)]
            continue
        first, last = check["ladder"][0], check["ladder"][-1]
        where = f"{check['attack']} on {check['defense']} ({check['threat']})"
        before, after = first["robust_accuracy_worst_of_n"], last["robust_accuracy_worst_of_n"]
        ceiling, escalate = check["ceiling"], check["mode"] == "escalate"
        flags.append(
            Finding(
                check="convergence",
                severity="warning",
                title=f"{where} did not converge" + (f" up to the ceiling {ceiling}" if escalate else ""),
                explanation=f"the stronger rung(s) broke {broken_phrase(check)}: robust accuracy "
                f"{pct(before['value'])} -> {pct(after['value'])} (worst of N); the "
                "headline uses the strongest, and it is still only an upper bound"
                + ("" if escalate else "; run with convergence: escalate for more rungs"),
                evidence=", ".join(
                    f"{r['label']}: {r['robust_accuracy_worst_of_n']['successes']} robust" for r in check["ladder"]
                ),
            )
        )
    return flags


def headline_finding(check: dict[str, Any]) -> Finding:
    """A warning for a headline check that did not certify: the stronger attack broke standing samples."""
    where = f"the worst case of {check['defense']} ({check['threat']})"
    return Finding(
        check="convergence",
        severity="warning",
        title=f"{where} did not converge under {check['attack']}",
        explanation=check["statement"] + "; the headline is still only an upper bound",
        evidence=", ".join(
            f"{r['label']}: {r['robust_accuracy_worst_of_n']['successes']} robust" for r in check["ladder"]
        ),
    )


def broken_phrase(check: dict[str, Any]) -> str:
    """How many more samples the rungs broke, with the estimate over all survivors when they re-attacked a
    fraction of them."""
    rungs = check["ladder"][1:]
    phrase = f"{sum(r['newly_broken'] for r in rungs)} more sample(s)"
    if check.get("fraction", 1) >= 1:
        return phrase
    unchecked = [r for r in rungs if r.get("estimated_broken", 0) is None]
    if unchecked:
        return (
            phrase
            + "; "
            + ", ".join(
                f"{r['label']} re-attacked none of the {r['standing']} survivor(s), so it checked nothing "
                "(raise convergence.fraction)"
                for r in unchecked
            )
        )
    share = f"{100 * check['fraction']:.0f}%"
    estimate = sum(r["estimated_broken"] for r in rungs)
    return phrase + f" on a seeded {share} of the survivors (about {estimate:.0f} over all)"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
