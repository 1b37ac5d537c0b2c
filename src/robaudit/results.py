"""Per-sample records, aggregation, Wilson confidence intervals and the versioned summary schema.

Records are the source of truth: one row per (sample, condition). A condition is (attack, purifier, threat
model, repeat); the clean condition has attack "none". Every number in summaries and reports is rebuilt from them.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

SUMMARY_SCHEMA = "robaudit.summary"
SUMMARY_SCHEMA_VERSION = 1
RECORD_FIELDS = [
    "sample_id",
    "index",
    "label",
    "condition",
    "attack",
    "norm",
    "eps",
    "purifier",
    "threat",
    "repeat",
    "clean_pred",
    "pred",
    "correct",
    "attacked",
    "linf",
    "l2",
    "time_s",
]
CLEAN = "clean"


def wilson_interval(successes: int, total: int, *, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion ``successes / total``; (0, 1) when total is 0."""
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(successes: int, total: int) -> dict[str, Any]:
    """A proportion with its count and 95% Wilson interval."""
    low, high = wilson_interval(successes, total)
    value = successes / total if total else None
    return {"value": value, "successes": successes, "total": total, "ci_low": low, "ci_high": high, "ci": 0.95}


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records as a DataFrame with the canonical columns, sorted by (index, condition order)."""
    frame = pd.DataFrame.from_records(records, columns=RECORD_FIELDS)
    return frame


def summarize(frame: pd.DataFrame, *, attacks: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate records into accuracy figures.

    Clean accuracy; per attack robust accuracy and attack success rate on initially-correct samples; and the
    worst case over all attacks: a sample is robust only if it is classified correctly under every attack
    (per-sample AND, as AutoAttack counts it).
    """
    clean = frame[frame["condition"] == CLEAN].set_index("sample_id")
    n = len(clean)
    clean_correct = clean["correct"].astype(bool)
    out: dict[str, Any] = {"n_samples": n, "clean_accuracy": rate(int(clean_correct.sum()), n), "attacks": []}
    robust_all = clean_correct.copy()
    for attack in attacks:
        rows = frame[frame["condition"] == attack["label"]].set_index("sample_id").reindex(clean.index)
        correct = rows["correct"].fillna(False).astype(bool)
        robust_all &= correct
        initially = clean_correct.sum()
        fooled = int((clean_correct & ~correct).sum())
        attacked = rows[rows["attacked"].fillna(False).astype(bool)]
        out["attacks"].append(
            {
                **attack,
                "robust_accuracy": rate(int(correct.sum()), n),
                "attack_success_rate": rate(fooled, int(initially)),
                "mean_linf": float(attacked["linf"].mean()) if len(attacked) else 0.0,
                "max_linf": float(attacked["linf"].max()) if len(attacked) else 0.0,
                "mean_l2": float(attacked["l2"].mean()) if len(attacked) else 0.0,
                "max_l2": float(attacked["l2"].max()) if len(attacked) else 0.0,
                "seconds_per_attacked_sample": float(attacked["time_s"].mean()) if len(attacked) else 0.0,
            }
        )
    out["worst_case"] = {
        "robust_accuracy": rate(int(robust_all.sum()), n),
        "over": [a["label"] for a in attacks],
    }
    return out


def results_table(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per condition (clean, each attack, worst case): the content of ``results.csv``."""
    rows = []

    def row(condition: str, attack: str, norm: str, eps: float | None, acc: dict, asr: dict | None) -> None:
        rows.append(
            {
                "condition": condition,
                "attack": attack,
                "norm": norm,
                "eps": eps,
                "n": acc["total"],
                "correct": acc["successes"],
                "accuracy": acc["value"],
                "accuracy_ci_low": acc["ci_low"],
                "accuracy_ci_high": acc["ci_high"],
                "attack_success_rate": asr["value"] if asr else None,
                "asr_ci_low": asr["ci_low"] if asr else None,
                "asr_ci_high": asr["ci_high"] if asr else None,
            }
        )

    row(CLEAN, "none", "none", None, summary["clean_accuracy"], None)
    for a in summary["attacks"]:
        row(a["label"], a["name"], a["norm"], a["eps"], a["robust_accuracy"], a["attack_success_rate"])
    if summary["attacks"]:
        row(
            "worst_case",
            "+".join(summary["worst_case"]["over"]),
            "mixed",
            None,
            summary["worst_case"]["robust_accuracy"],
            None,
        )
    return pd.DataFrame(rows)
