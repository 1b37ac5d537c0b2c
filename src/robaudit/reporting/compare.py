"""Side-by-side comparison of two runs (a new release against the last): every shared rate, its delta and the
delta's 95% interval (Newcombe's hybrid score interval from the two Wilson intervals)."""

from __future__ import annotations

import math
from typing import Any

from robaudit.reporting.report import escape_markdown, percent


def delta_interval(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float, float]:
    """(b - a, low, high): Newcombe (1998) method 10 for the difference of two independent proportions."""
    pa, pb = a["value"], b["value"]
    delta = pb - pa
    low = delta - math.sqrt((pb - b["ci_low"]) ** 2 + (a["ci_high"] - pa) ** 2)
    high = delta + math.sqrt((b["ci_high"] - pb) ** 2 + (pa - a["ci_low"]) ** 2)
    return delta, low, high


def _rates(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for defense in summary.get("defenses", []):
        label = defense["label"]
        out[f"clean accuracy [{label}]"] = defense["clean_accuracy"]
        for r in defense["results"]:
            out[f"robust accuracy [{r['label']} / {label} / {r['threat']}]"] = r["robust_accuracy"]
        out[f"worst case [{label}]"] = defense["worst_case"]["robust_accuracy"]
    return out


def compare_summaries(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per rate present in both summaries: before, after, delta and its interval."""
    a, b = _rates(before), _rates(after)
    rows = []
    for name in [n for n in b if n in a]:
        if a[name]["value"] is None or b[name]["value"] is None:
            continue
        delta, low, high = delta_interval(a[name], b[name])
        rows.append(
            {
                "rate": name,
                "before": a[name]["value"],
                "after": b[name]["value"],
                "delta": delta,
                "delta_ci_low": low,
                "delta_ci_high": high,
            }
        )
    return rows


def comparison_markdown(rows: list[dict[str, Any]], *, before: str, after: str) -> str:
    """The comparison as markdown; deltas whose interval excludes 0 are marked."""
    lines = [
        f"# robaudit comparison: {escape_markdown(after)} against {escape_markdown(before)}",
        "",
        "| rate | before | after | delta [95% CI] | |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        significant = r["delta_ci_high"] < 0 or r["delta_ci_low"] > 0
        mark = ("**worse**" if r["delta"] < 0 else "**better**") if significant else ""
        lines.append(
            f"| {r['rate']} | {percent(r['before'])} | {percent(r['after'])} | {100 * r['delta']:+.1f} pts "
            f"[{100 * r['delta_ci_low']:+.1f}, {100 * r['delta_ci_high']:+.1f}] | {mark} |"
        )
    lines += ["", "Intervals: Newcombe's hybrid score interval for a difference of proportions (independent samples)."]
    return "\n".join(lines) + "\n"
