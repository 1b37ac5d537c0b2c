"""The certified side of the bracket: certification records -> certified accuracy at the run's L2 budget (a lower
bound, with its interval over samples), abstentions counted apart, and certified accuracy against radius."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from scipy.stats import binom

from robaudit.certify.bounds import ABSTAIN
from robaudit.reporting.results import rate
from robaudit.runs.findings import Finding
from robaudit.runs.rundir import PASS_KINDS

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
        purified = result["defense"] != "none"
        result["fixed_passes_per_sample"] = certification_passes(config, purified=purified)
        result.update(draw_costs(by_key[result["smoothed"]], config, purified=purified))
        if spent and spent["samples"]:
            result["seconds_per_sample"] = spent["seconds"] / spent["samples"]
            if spent.get("passes"):  # counted by the hooks, the kinds the expected above (from the draw counts) has
                counted = spent["passes"]
                result["counted_passes_per_sample"] = {k: counted.get(k, 0) / spent["samples"] for k in CERTIFIED_KINDS}
    alpha = config.get("alpha")
    return {
        "eps_l2": eps_l2,
        **{k: config[k] for k in ("n0", "n", "alpha", "steps", "eot", "stop", "radius_tolerance") if k in config},
        "mode": config.get("mode", "fixed"),
        "statement": certified_statement(config, eps_l2=eps_l2) if alpha is not None else "",
        "results": results,
    }


def certified_statement(config: dict[str, Any], *, eps_l2: float) -> str:
    """What the certified numbers certify, at what confidence and by which rule, in words."""
    alpha, n = config["alpha"], config["n"]
    text = (
        f"Certified accuracy is the share of samples the smoothed classifier classifies correctly with an L2 radius "
        f"of at least {eps_l2:g}, each certificate holding with probability at least {1 - alpha:g} over the noise "
        "draws (Cohen et al. 2019); a lower bound on the smoothed classifier's robust accuracy"
    )
    if config.get("mode", "fixed") == "fixed":
        return text + f". Every sample drew {n} estimation draws (fixed n)"
    if config.get("stop", "decisions") == "decisions":
        rule = (
            f"until it was decided at {eps_l2:g} (certified, not certified, or out of reach within {n} draws; its "
            "class counts as predicted only where it was certified at radius 0 on the way: abstentions include the "
            "undecided); its bound is a betting confidence sequence that reads every draw"
        )
    else:
        rule = (
            f"until its radius was known to within {config.get('radius_tolerance', 0.05):g} sigma; its bound is "
            "Clopper-Pearson over doubling looks, alpha spent across them"
        )
    return text + (
        f". Sequential: each sample drew at most {n} estimation draws, {rule}, so it holds at whatever draw the "
        "sample stopped (docs/numbers.md). PREDICT answers once its top class separates at doubling looks, alpha "
        "spent across them"
    )


def draw_costs(rows: list[dict[str, Any]], config: dict[str, Any], *, purified: bool) -> dict[str, Any]:
    """Draws and passes per sample of one smoothed classifier, from its records: estimation and PREDICT draws (mean,
    max), the share of samples decided before ``n`` draws, why their draws stopped, and passes per sample (mean;
    the classifier and, through a purifier, the denoiser: one forward per draw, SmoothAdv's steps x eot forward and
    backward)."""
    if not rows:
        return {}
    estimation = [r.get("estimation_draws", config["n"]) for r in rows]
    predict = [r["attacked_draws"] for r in rows if "attacked_draws" in r]
    attack = config.get("steps", 0) * config.get("eot", 0)
    per_sample = [
        config["n0"] + r.get("estimation_draws", config["n"]) + attack + r.get("attacked_draws", 0) for r in rows
    ]
    forward = sum(per_sample) / len(rows)
    stopped: dict[str, int] = defaultdict(int)
    for row in rows:
        stopped[row.get("stopped", "fixed n")] += 1
    draws = {"estimation_mean": sum(estimation) / len(rows), "estimation_max": max(estimation)}
    if predict:
        draws.update(predict_mean=sum(predict) / len(predict), predict_max=max(predict))
    passes = {"forward": forward, "backward": attack}
    passes.update(purifier=forward if purified else 0, purifier_backward=attack if purified else 0)
    return {
        "draws": draws,
        "passes_max": {"forward": max(per_sample), "backward": attack},
        "decided_early": sum(e < config["n"] for e in estimation) / len(rows),
        "stopped": dict(stopped),
        "passes_per_sample": passes,
    }


CERTIFIED_KINDS = tuple(k for k in PASS_KINDS if k != "scoring")  # certification has no scoring draws


def certification_passes(config: dict[str, Any], *, purified: bool) -> dict[str, int]:
    """Model passes per sample of one smoothed classifier (exact): n0 + n certification draws, and with an attack
    its steps x eot forward and backward passes plus n PREDICT draws; the denoiser runs once per classifier pass."""
    attack = config.get("steps", 0) * config.get("eot", 0)
    forward = config["n0"] + config["n"] + attack + (config["n"] if attack else 0)
    passes = {"forward": forward, "backward": attack}
    return {**passes, "purifier": forward if purified else 0, "purifier_backward": attack if purified else 0}


def smoothed_result(key: str, rows: list[dict[str, Any]], *, eps_l2: float, radii: list[float]) -> dict[str, Any]:
    """One smoothed classifier's numbers from its records."""
    correct = [r for r in rows if r["prediction"] == r["label"]]
    defense, _, sigma = key.rpartition("@")
    out = {
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
    if rows and all("attacked_prediction" in r for r in rows):
        out.update(attacked_result(rows, eps_l2=eps_l2))
    return out


def attacked_result(rows: list[dict[str, Any]], *, eps_l2: float) -> dict[str, Any]:
    """The upper side of one smoothed classifier's bracket: PREDICT on its SmoothAdv images (the empirical robust
    accuracy, abstentions apart) and the certified samples the attack moved to another class (``inconsistent``)."""
    certified = [r for r in rows if r["prediction"] == r["label"] and r["radius"] >= eps_l2]
    return {
        "empirical_accuracy": rate(sum(r["attacked_prediction"] == r["label"] for r in rows), len(rows)),
        "attacked_abstained": sum(r["attacked_prediction"] < 0 for r in rows),
        "certified_samples": len(certified),
        "inconsistent": [r["sample_id"] for r in certified if r["attacked_prediction"] not in (r["label"], ABSTAIN)],
    }


def consistency_findings(section: dict[str, Any]) -> list[Finding]:
    """A finding per smoothed classifier whose attack moved certified samples to another class: expected for about
    an ``alpha`` share of them (a certificate is wrong with probability at most alpha); more than the 99.9% quantile
    of that share means a bug in the certification or in the attack's judgement."""
    findings = []
    for result in section["results"]:
        broken = result.get("inconsistent") or []
        if not broken:
            continue
        allowed = int(binom.ppf(0.999, result["certified_samples"], section["alpha"]))
        beyond = len(broken) > allowed
        findings.append(
            Finding(
                "certified-consistency",
                "error" if beyond else "info",
                f"{result['smoothed']}: the attack moved {len(broken)} certified sample(s) to another class",
                (
                    f"A certificate at radius >= {section['eps_l2']:g} is wrong with probability at most "
                    f"{section['alpha']:g}; {len(broken)} of {result['certified_samples']} is "
                    + ("more than that allows (at most " if beyond else "within that (at most ")
                    + f"{allowed} at 99.9%)"
                    + (": one of certification and attack is wrong." if beyond else ".")
                ),
                ", ".join(broken[:20]) + (" ..." if len(broken) > 20 else ""),
            )
        )
    return findings


def certified_share(correct: list[dict[str, Any]], total: int, radius: float) -> float:
    """The share of ``total`` samples certified correct at ``radius``."""
    return sum(r["radius"] >= radius for r in correct) / total if total else 0.0
