"""Per-sample records, aggregation, Wilson confidence intervals and the versioned summary schema.

Records are the source of truth: one row per (sample, condition). A condition is (attack, purifier, threat
model, repeat); the clean condition has attack "none". Every number in summaries and reports is rebuilt from them.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

SUMMARY_SCHEMA = "robaudit.summary"
SUMMARY_SCHEMA_VERSION = 2  # 2: wall-clock timings moved out of summary.json (to timings.json)
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
]
CLEAN = "none|none|none"  # the undefended clean condition


def wilson_interval(successes: int, total: int, *, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion ``successes / total``; (0, 1) when total is 0."""
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))  # contains p despite rounding


def rate(successes: int, total: int) -> dict[str, Any]:
    """A proportion with its count and 95% Wilson interval."""
    low, high = wilson_interval(successes, total)
    value = successes / total if total else None
    return {"value": value, "successes": successes, "total": total, "ci_low": low, "ci_high": high, "ci": 0.95}


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records as a DataFrame with the canonical columns, sorted by (index, condition order)."""
    frame = pd.DataFrame.from_records(records, columns=RECORD_FIELDS)
    return frame


def _grid(frame: pd.DataFrame, condition: str, index: pd.Index) -> pd.DataFrame:
    """(samples x repeats) table of ``correct`` for one condition, aligned to ``index`` (missing -> False)."""
    rows = frame[frame["condition"] == condition]
    grid = rows.pivot_table(index="sample_id", columns="repeat", values="correct", aggfunc="first")
    return grid.reindex(index).fillna(False).astype(bool)


def _entry(frame: pd.DataFrame, condition: str, clean: pd.DataFrame, attack: dict[str, Any]) -> dict[str, Any]:
    """Aggregates of one (attack, defense, threat) condition over its samples and repeats."""
    grid = _grid(frame, condition, clean.index)
    n, repeats = grid.shape
    rows = frame[(frame["condition"] == condition) & frame["attacked"].astype(bool)]
    first = rows[rows["repeat"] == rows["repeat"].min()] if len(rows) else rows
    clean_correct = clean[grid.columns] if set(grid.columns) <= set(clean.columns) else clean
    fooled = int((clean_correct.values & ~grid.values).sum())
    return {
        **attack,
        "repeats": int(repeats),
        "robust_accuracy": rate(int(grid.values.sum()), n * repeats),
        "robust_accuracy_worst_of_n": rate(int(grid.all(axis=1).sum()), n),
        "attack_success_rate": rate(fooled, int(clean_correct.values.sum())),
        "mean_linf": float(first["linf"].mean()) if len(first) else 0.0,
        "max_linf": float(first["linf"].max()) if len(first) else 0.0,
        "mean_l2": float(first["l2"].mean()) if len(first) else 0.0,
        "max_l2": float(first["l2"].max()) if len(first) else 0.0,
    }, grid.all(axis=1)


def summarize(
    frame: pd.DataFrame, *, attacks: list[dict[str, Any]], defenses: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Aggregate records into accuracy figures, for the undefended classifier and each defense.

    Per (attack, defense, threat model): robust accuracy pooled over repeats ("mean") and worst-of-N (robust only
    if correct in every repeat), and the attack success rate on initially-correct (sample, repeat) pairs. The worst
    case of a defense is per sample: robust only if correct clean and under every attack, threat model and repeat
    (per-sample AND, as AutoAttack counts it).
    """
    defenses = defenses or [{"label": "none", "threats": ["none"]}]
    out: dict[str, Any] = {"defenses": []}
    for defense in defenses:
        label = defense["label"]
        clean_rows = frame[frame["condition"] == f"none|{label}|none"]
        clean = clean_rows.pivot_table(index="sample_id", columns="repeat", values="correct", aggfunc="first")
        clean = clean.sort_index().astype(bool)
        n, repeats = clean.shape
        robust_all = clean.all(axis=1)
        results = []
        for attack in attacks:
            for threat in defense["threats"]:
                entry, survived = _entry(frame, f"{attack['label']}|{label}|{threat}", clean, attack)
                entry = {**entry, "purifier": label, "threat": threat}
                if not attack.get("sweep"):  # the headline worst case is at the headline budget
                    robust_all &= survived
                results.append(entry)
        labels = clean_rows.groupby("sample_id")["label"].first().reindex(clean.index)
        per_class = []
        for label in sorted(labels.unique().tolist()):
            members = labels == label
            per_class.append(
                {
                    "label": int(label),
                    "n": int(members.sum()),
                    "clean_accuracy": rate(int(clean[members].all(axis=1).sum()), int(members.sum())),
                    "worst_case": rate(int(robust_all[members].sum()), int(members.sum())),
                }
            )
        summary = {
            **defense,
            "per_class": per_class,
            "n_samples": int(n),
            "clean_accuracy": rate(int(clean.values.sum()), n * repeats),
            "clean_accuracy_worst_of_n": rate(int(clean.all(axis=1).sum()), n),
            "results": results,
            "worst_case": {
                "robust_accuracy": rate(int(robust_all.sum()), n),
                "over": [f"{r['label']}/{r['threat']}" for r in results if not r.get("sweep")],
            },
        }
        out["defenses"].append(summary)
    undefended = out["defenses"][0]
    out["n_samples"] = undefended["n_samples"]
    out["clean_accuracy"] = undefended["clean_accuracy"]
    out["attacks"] = undefended["results"]
    out["worst_case"] = {
        "robust_accuracy": undefended["worst_case"]["robust_accuracy"],
        "over": [a["label"] for a in attacks if not a.get("sweep")],
    }
    return out


def results_table(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per condition (clean, each attack, worst case): the content of ``results.csv``."""
    rows = []

    def row(condition, attack, norm, eps, acc, asr, purifier, threat, worst=None) -> None:
        rows.append(
            {
                "condition": condition,
                "purifier": purifier,
                "threat": threat,
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
                "accuracy_worst_of_n": worst["value"] if worst else None,
            }
        )

    for defense in summary["defenses"]:
        purifier = defense["label"]
        row(CLEAN, "none", "none", None, defense["clean_accuracy"], None, purifier, "none")
        for a in defense["results"]:
            row(
                a["label"],
                a["name"],
                a["norm"],
                a["eps"],
                a["robust_accuracy"],
                a["attack_success_rate"],
                purifier,
                a["threat"],
                a["robust_accuracy_worst_of_n"],
            )
        if defense["results"]:
            row(
                "worst_case",
                "+".join(defense["worst_case"]["over"]),
                "mixed",
                None,
                defense["worst_case"]["robust_accuracy"],
                None,
                purifier,
                "all",
            )
    return pd.DataFrame(rows)
