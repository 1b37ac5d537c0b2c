"""Per-sample records, aggregation, Wilson confidence intervals and the versioned summary schema.

Records are the source of truth: one row per (sample, condition). A condition is (attack, purifier, threat
model, repeat); the clean condition has attack "none". Every number in summaries and reports is rebuilt from them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from robaudit.runs.records import RECORD_FIELDS, Condition
from robaudit.threats import NONE

SUMMARY_SCHEMA = "robaudit.summary"
SUMMARY_SCHEMA_VERSION = 5  # 2: timings.json; 3: stochastic -> randomized; 4: headline check; 5: flags -> findings
CLEAN = Condition.clean(NONE).key()  # the undefended clean condition


def wilson_interval(successes: float, total: float, *, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion ``successes / total`` (counts may be effective, non-integer);
    (0, 1) when total is 0."""
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))  # contains p despite rounding


def rate(successes: int, total: int) -> dict[str, Any]:
    """A proportion of independent samples with its count and 95% Wilson interval (over ``total`` samples)."""
    low, high = wilson_interval(successes, total)
    value = successes / total if total else None
    return {"value": value, "successes": successes, "total": total, "ci_low": low, "ci_high": high, "ci": 0.95}


def effective_samples(per_sample: np.ndarray, repeats: int) -> float:
    """Kish's effective sample size of the mean of per-sample fractions ``per_sample`` (n,) over ``repeats``.

    n_eff = p (1 - p) / Var(mean), with Var(mean) = var(per_sample) / n (the CLT variance over samples, the
    independent unit), kept within [n, n * repeats]: n when the repeats of a sample always agree (perfectly
    correlated), n * repeats when they vary like independent trials. A p of 0 or 1 gives n (conservative).
    """
    n = len(per_sample)
    if n == 0:
        return 0.0
    p = float(per_sample.mean())
    variance = float(per_sample.var())
    if repeats <= 1 or p * (1 - p) == 0:
        return float(n)
    if variance == 0:
        return float(n * repeats)
    return min(max(n * p * (1 - p) / variance, float(n)), float(n * repeats))


def mean_rate(grid: np.ndarray) -> dict[str, Any]:
    """The mean over repeats of a (samples x repeats) boolean grid, with an interval over samples.

    The interval is Wilson's at the effective sample size (``effective_samples``): repeats of one sample are
    correlated, so they are never counted as samples x repeats independent trials. With one repeat, or repeats that
    always agree, it is exactly the Wilson interval over samples.
    """
    n, repeats = grid.shape
    per_sample = grid.mean(axis=1) if repeats else np.zeros(n)
    n_eff = effective_samples(per_sample, repeats)
    value = float(per_sample.mean()) if n else None
    low, high = wilson_interval((value or 0.0) * n_eff, n_eff)
    return {
        "value": value,
        "successes": int(grid.sum()),
        "total": int(n * repeats),
        "ci_low": low,
        "ci_high": high,
        "ci": 0.95,
        "samples": int(n),
        "effective_samples": round(n_eff, 3),
    }


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records as a DataFrame with the canonical columns, sorted by (index, condition order)."""
    frame = pd.DataFrame.from_records(records, columns=RECORD_FIELDS)
    return frame


def _grid(
    frame: pd.DataFrame,
    condition: str,
    index: pd.Index,
    below: pd.DataFrame | None = None,
    columns: pd.Index | None = None,
) -> pd.DataFrame:
    """(samples x repeats) table of ``correct`` for one condition, aligned to ``index`` and to the repeats
    ``columns`` (the clean condition's: every scoring draw). A missing sample or draw (a draw its verdict did not
    need) counts as wrong, except under a convergence rung (``below``: the grid of the rung below it), where a sample
    the rung did not attack again keeps the verdict below."""
    rows = frame[frame["condition"] == condition]
    grid = rows.pivot_table(index="sample_id", columns="repeat", values="correct", aggfunc="first")
    grid = grid.reindex(index=index, columns=columns if columns is not None else grid.columns)
    if below is not None:
        grid = grid.reindex(columns=below.columns).astype(object).where(grid.notna(), below)
    return grid.eq(True)  # a missing entry (NaN) is not True: wrong


def _entry(
    frame: pd.DataFrame, condition: str, clean: pd.DataFrame, attack: dict[str, Any], below: pd.DataFrame | None
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Aggregates of one (attack, defense, threat) condition over its samples and repeats, and its grid."""
    grid = _grid(frame, condition, clean.index, below, columns=clean.columns)
    n, repeats = grid.shape
    rows = frame[(frame["condition"] == condition) & frame["attacked"].astype(bool)]
    first = rows[rows["repeat"] == rows["repeat"].min()] if len(rows) else rows
    clean_correct = clean[grid.columns] if set(grid.columns) <= set(clean.columns) else clean
    # The mean over draws is estimated by the first scoring draw: the others are drawn only for the samples it finds
    # correct (engine.execute.score_chosen), and with that rule the first draw is the estimate that is unbiased.
    first_draw = grid.values[:, :1]
    return {
        **attack,
        "repeats": int(repeats),
        "robust_accuracy": {**mean_rate(first_draw), "estimated_from": "first draw" if repeats > 1 else "all draws"},
        "robust_accuracy_worst_of_n": rate(int(grid.all(axis=1).sum()), n),
        "attack_success_rate": success_rate(clean_correct.values[:, :1], first_draw),
        "mean_linf": float(first["linf"].mean()) if len(first) else 0.0,
        "max_linf": float(first["linf"].max()) if len(first) else 0.0,
        "mean_l2": float(first["l2"].mean()) if len(first) else 0.0,
        "max_l2": float(first["l2"].max()) if len(first) else 0.0,
    }, grid


def rung_below(attack: dict[str, Any], attacks: list[dict[str, Any]]) -> str:
    """The label of the condition a convergence rung escalates from: the attack for the first rung, else the rung
    below; "" for an attack that is no rung."""
    base = attack.get("convergence_of")
    if base is None:
        return ""
    lower = [a for a in attacks if a.get("convergence_of") == base and a.get("rung", 0) == attack.get("rung", 1) - 1]
    return lower[0]["label"] if lower else base


def success_rate(clean_correct: np.ndarray, robust: np.ndarray) -> dict[str, Any]:
    """Fooled / initially correct (sample, repeat) pairs; the interval counts each sample with a correct clean
    repeat once (repeats of a sample are correlated), which is conservative."""
    attempts = int(clean_correct.sum())
    fooled = int((clean_correct & ~robust).sum())
    samples = int(clean_correct.any(axis=1).sum())
    out = rate(fooled, attempts)
    if attempts and samples < attempts:
        out["ci_low"], out["ci_high"] = wilson_interval(fooled / attempts * samples, samples)
    out["samples"] = samples
    return out


def per_class_rates(labels: pd.Series, clean: pd.DataFrame, robust: pd.Series) -> list[dict[str, Any]]:
    """Per class: clean accuracy (worst of N) and worst case, over that class's samples."""
    out = []
    for label in sorted(labels.unique().tolist()):
        members = labels == label
        out.append(
            {
                "label": int(label),
                "n": int(members.sum()),
                "clean_accuracy": rate(int(clean[members].all(axis=1).sum()), int(members.sum())),
                "worst_case": rate(int(robust[members].sum()), int(members.sum())),
            }
        )
    return out


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
        clean_rows = frame[frame["condition"] == Condition.clean(label).key()]
        clean = clean_rows.pivot_table(index="sample_id", columns="repeat", values="correct", aggfunc="first")
        clean = clean.sort_index().fillna(False).astype(bool)  # a missing clean record counts as wrong
        n, repeats = clean.shape
        robust_all = clean.all(axis=1)
        results, grids = [], {}
        for attack in attacks:
            for threat in defense["threats"]:
                key = Condition(attack["label"], label, threat).key()
                below = grids.get(Condition(rung_below(attack, attacks), label, threat).key())
                if attack.get("check_scope") == "headline" and not (frame["condition"] == key).any():
                    grids[key] = below  # a rung of the headline check that did not run: nothing to report
                    continue
                entry, grids[key] = _entry(frame, key, clean, attack, below)
                survived = grids[key].all(axis=1)
                entry = {**entry, "purifier": label, "threat": threat}
                if not attack.get("sweep"):  # the headline worst case is at the headline budget
                    robust_all &= survived
                results.append(entry)
        labels = clean_rows.groupby("sample_id")["label"].first().reindex(clean.index)
        summary = {
            **defense,
            "per_class": per_class_rates(labels, clean, robust_all),
            "n_samples": int(n),
            "clean_accuracy": mean_rate(clean.values),
            "clean_accuracy_worst_of_n": rate(int(clean.all(axis=1).sum()), n),
            "results": results,
            "worst_case": {
                "robust_accuracy": rate(int(robust_all.sum()), n),
                "over": [f"{r['label']}/{r['threat']}" for r in results if not r.get("sweep")],
                "threats": list(defense["threats"]),
                "repeats": int(repeats),
            },
        }
        out["defenses"].append(summary)
    undefended = out["defenses"][0]
    out["n_samples"] = undefended["n_samples"]
    out["clean_accuracy"] = undefended["clean_accuracy"]
    out["attacks"] = undefended["results"]
    out["worst_case"] = {
        "robust_accuracy": undefended["worst_case"]["robust_accuracy"],
        "over": [r["label"] for r in undefended["results"] if not r.get("sweep")],  # a rung that ran counts
    }
    return out


def results_table(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per condition (clean, each attack, worst case): the content of ``results.csv``."""
    rows = []

    def row(condition, attack, norm, eps, acc, asr, purifier, threat, worst=None, repeats=None) -> None:
        samples = acc.get("samples", acc["total"])
        rows.append(
            {
                "condition": condition,
                "purifier": purifier,
                "threat": threat,
                "attack": attack,
                "norm": norm,
                "eps": eps,
                "n": samples,
                "repeats": repeats or (acc["total"] // samples if samples else 1),
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
                a["repeats"],
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
                "+".join(defense["worst_case"].get("threats", ["all"])),
            )
    return pd.DataFrame(rows)
