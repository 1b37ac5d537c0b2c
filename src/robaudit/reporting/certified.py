"""The certified side of the bracket: certification records -> certified accuracy at the run's L2 budget (a lower
bound, with its interval over samples), abstentions counted apart, and certified accuracy against radius."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from robaudit.reporting.results import rate

CURVE_POINTS = 21  # radii from 0 to the largest certified radius


def certified_section(
    records: list[dict[str, Any]],
    *,
    eps_l2: float,
    config: dict[str, Any],
    seconds: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """``summary.json``'s ``certified``: for each smoothed classifier (``defense@sigma``), its certified accuracy at
    ``eps_l2`` (certified with radius >= eps_l2 and correct), its smoothed clean accuracy (radius >= 0), its
    abstentions, its curve and its cost (``seconds``: ``{key: {seconds, samples}}``; passes: one classifier forward
    and, through a purifier, one denoiser evaluation per draw); plus what the numbers certify and at what
    confidence."""
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_key[record["smoothed"]].append(record)
    top = max((r["radius"] for r in records), default=0.0)
    radii = [top * i / (CURVE_POINTS - 1) for i in range(CURVE_POINTS)] if top > 0 else [0.0]
    results = [smoothed_result(key, rows, eps_l2=eps_l2, radii=radii) for key, rows in by_key.items()]
    for result in results:
        spent = (seconds or {}).get(result["smoothed"])
        draws = by_key[result["smoothed"]][0]["draws"]
        result["passes_per_sample"] = {"forward": draws, "purifier": draws if result["defense"] != "none" else 0}
        if spent and spent["samples"]:
            result["seconds_per_sample"] = spent["seconds"] / spent["samples"]
    alpha = config.get("alpha")
    return {
        "eps_l2": eps_l2,
        **{k: config[k] for k in ("n0", "n", "alpha") if k in config},
        "statement": (
            f"Certified accuracy is the share of samples the smoothed classifier classifies correctly with an L2 "
            f"radius of at least {eps_l2:g}, each certificate holding with probability at least {1 - alpha:g} over "
            "the noise draws (Cohen et al. 2019); a lower bound on the smoothed classifier's robust accuracy"
            if alpha is not None
            else ""
        ),
        "results": results,
    }


def smoothed_result(key: str, rows: list[dict[str, Any]], *, eps_l2: float, radii: list[float]) -> dict[str, Any]:
    """One smoothed classifier's numbers from its records."""
    correct = [r for r in rows if r["prediction"] == r["label"]]
    defense, _, sigma = key.rpartition("@")
    return {
        "smoothed": key,
        "defense": defense,
        "sigma": rows[0]["sigma"] if rows else float(sigma),
        "n_samples": len(rows),
        "certified_accuracy": rate(sum(r["radius"] >= eps_l2 for r in correct), len(rows)),
        "smoothed_clean_accuracy": rate(len(correct), len(rows)),
        "abstained": sum(r["prediction"] < 0 for r in rows),
        "curve": [
            {"radius": radius, "certified_accuracy": certified_share(correct, len(rows), radius)} for radius in radii
        ],
    }


def certified_share(correct: list[dict[str, Any]], total: int, radius: float) -> float:
    """The share of ``total`` samples certified correct at ``radius``."""
    return sum(r["radius"] >= radius for r in correct) / total if total else 0.0
