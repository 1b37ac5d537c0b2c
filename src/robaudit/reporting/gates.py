"""Release gates over a run's summary: expressions such as ``robust_accuracy[pgd] >= 0.40``, maximum drops against
a baseline run, and their outputs for CI systems (exit code, JUnit XML, markdown, JSON).

Metrics (a rate's value, or its 95% interval's lower end with ``bound="ci_low"``):

- ``clean_accuracy`` or ``clean_accuracy[PURIFIER]``;
- ``robust_accuracy[ATTACK]`` (undefended), ``robust_accuracy[ATTACK/PURIFIER]`` (the worst threat model that ran)
  or ``robust_accuracy[ATTACK/PURIFIER/THREAT]``;
- ``worst_case`` (undefended) or ``worst_case[PURIFIER]``;
- ``attack_success_rate[ATTACK]`` or ``attack_success_rate[ATTACK/PURIFIER/THREAT]``;
- ``certified_accuracy[DEFENSE@SIGMA]`` (``certify:``): the share certified correct at the run's L2 budget, e.g.
  ``certified_accuracy[ddpm@0.5]`` or ``certified_accuracy[none@0.25]``.

On a randomized pipeline a gate reads the worst of N repeats; append ``:mean`` to the key to read the mean instead
(``robust_accuracy[pgd/ddpm/adaptive:mean]``). The worst-case metric is always per sample over everything run.
"""

from __future__ import annotations

import operator
import re
from dataclasses import asdict, dataclass
from typing import Any
from xml.etree import ElementTree

from robaudit.errors import ConfigError

_EXPRESSION = re.compile(r"^\s*([a-z_]+)(?:\[([^\]]+)\])?\s*(>=|<=|>|<)\s*([0-9]*\.?[0-9]+)\s*$")
_OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
BOUNDS = ("value", "ci_low")
METRICS = ("clean_accuracy", "robust_accuracy", "worst_case", "attack_success_rate", "certified_accuracy")


@dataclass
class GateResult:
    """One judged gate."""

    name: str
    observed: float | None
    passed: bool
    message: str


@dataclass
class Gate:
    """A parsed expression: metric[key] OP threshold."""

    metric: str
    key: str | None
    op: str
    threshold: float
    text: str

    @classmethod
    def parse(cls, text: str) -> Gate:
        """Parse ``metric[key] >= 0.4``; a ConfigError names what is wrong."""
        match = _EXPRESSION.match(text)
        if not match:
            raise ConfigError(f'gate {text!r} does not parse; write e.g. "robust_accuracy[pgd] >= 0.40"')
        metric, key, op, threshold = match.groups()
        if metric not in METRICS:
            raise ConfigError(f"gate {text!r}: unknown metric {metric!r}; valid: {', '.join(METRICS)}")
        if metric in ("robust_accuracy", "attack_success_rate", "certified_accuracy") and not key:
            raise ConfigError(f"gate {text!r}: {metric} needs an attack, e.g. {metric}[pgd]")
        return cls(metric, key, op, float(threshold), text.strip())

    def rate(self, summary: dict[str, Any], *, bound: str = "value") -> dict[str, Any]:
        """The rate this gate reads from ``summary``; a ConfigError when the run has no such condition.

        A randomized pipeline is read at its worst of N unless the key ends in ``:mean``; a key without a threat
        model reads the threat model whose rate is worst (lowest accuracy, highest attack success) at ``bound``; an
        attack is read at the strongest rung of its convergence ladder.
        """
        key, _, statistic = (self.key or "").partition(":")
        if statistic not in ("", "mean"):
            raise ConfigError(f"gate {self.text!r}: ':{statistic}' is not a statistic; use ':mean' or nothing")
        mean = statistic == "mean"
        if self.metric == "certified_accuracy":
            return self.certified_rate(summary, key)
        defenses = {d["label"]: d for d in summary.get("defenses", [])}
        if self.metric in ("clean_accuracy", "worst_case"):
            defense = defenses.get(key or "none")
            if defense is None:
                raise ConfigError(f"gate {self.text!r}: the run has no purifier {key!r}")
            if self.metric == "worst_case":
                return defense["worst_case"]["robust_accuracy"]
            return defense["clean_accuracy" if mean else "clean_accuracy_worst_of_n"]
        attack, purifier, threat = [*key.split("/"), None, None][:3]
        purifier = purifier or "none"
        field = (
            "attack_success_rate"
            if self.metric == "attack_success_rate"
            else ("robust_accuracy" if mean else "robust_accuracy_worst_of_n")
        )
        found = [
            result[field]
            for result in defenses.get(purifier, {}).get("results", [])
            if attack in (result["label"], result.get("convergence_of")) and threat in (None, result["threat"])
        ]  # an attack's convergence rungs count as the attack: the gate reads the strongest
        if not found:
            raise ConfigError(f"gate {self.text!r}: the run has no condition {key!r} (attack/purifier/threat)")
        worst = max if self.metric == "attack_success_rate" else min
        return worst(found, key=lambda r: -1.0 if r[bound] is None else r[bound])

    def certified_rate(self, summary: dict[str, Any], key: str) -> dict[str, Any]:
        """The certified accuracy a ``certified_accuracy[DEFENSE@SIGMA]`` gate reads."""
        results = {r["smoothed"]: r for r in (summary.get("certified") or {}).get("results", [])}
        if key not in results:
            known = ", ".join(results) or "none: run evaluate with --certify"
            raise ConfigError(f"gate {self.text!r}: the run certified no {key!r} (certified: {known})")
        return results[key]["certified_accuracy"]


def judge(gates: list[str], summary: dict[str, Any], *, bound: str = "value") -> list[GateResult]:
    """Judge each gate expression on ``summary``, reading each rate's ``bound`` (value or ci_low)."""
    if bound not in BOUNDS:
        raise ConfigError(f"gate bound must be one of {', '.join(BOUNDS)}, got {bound!r}")
    results = []
    for text in gates:
        gate = Gate.parse(text)
        observed = gate.rate(summary, bound=bound)[bound]
        passed = observed is not None and _OPERATORS[gate.op](observed, gate.threshold)
        shown = "n/a" if observed is None else f"{observed:.4f}"
        name = gate.text if bound == "value" else f"{gate.text} (on {bound})"
        results.append(GateResult(name, observed, passed, f"{name}: observed {shown}"))
    return results


def judge_max_drop(summary: dict[str, Any], baseline: dict[str, Any], *, max_drop: float) -> list[GateResult]:
    """One gate per rate present in both runs: it fails when the rate fell by more than ``max_drop``."""

    def rates(s: dict[str, Any]) -> dict[str, float]:
        out = {}
        for defense in s.get("defenses", []):
            label = defense["label"]
            out[f"clean_accuracy[{label}]"] = defense.get("clean_accuracy_worst_of_n", defense["clean_accuracy"])[
                "value"
            ]
            out[f"worst_case[{label}]"] = defense["worst_case"]["robust_accuracy"]["value"]
            for r in defense["results"]:
                worst = r.get("robust_accuracy_worst_of_n", r["robust_accuracy"])
                out[f"robust_accuracy[{r['label']}/{label}/{r['threat']}]"] = worst["value"]
        return out

    now, before = rates(summary), rates(baseline)
    results = []
    for name in sorted(set(now) & set(before)):
        if now[name] is None or before[name] is None:
            continue
        drop = before[name] - now[name]
        passed = drop <= max_drop + 1e-12
        results.append(
            GateResult(
                f"max drop {max_drop:g}: {name}",
                now[name],
                passed,
                f"{name}: {before[name]:.4f} -> {now[name]:.4f} (drop {drop:+.4f})",
            )
        )
    return results


def junit_xml(results: list[GateResult], *, suite: str = "robaudit gates") -> str:
    """A JUnit XML document with one test case per gate."""
    root = ElementTree.Element(
        "testsuite", name=suite, tests=str(len(results)), failures=str(sum(not r.passed for r in results))
    )
    for result in results:
        case = ElementTree.SubElement(root, "testcase", classname="robaudit.reporting.gates", name=result.name)
        if not result.passed:
            ElementTree.SubElement(case, "failure", message=result.message).text = result.message
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def markdown(results: list[GateResult]) -> str:
    """A markdown table of gates, for a CI step summary."""
    lines = ["| gate | observed | result |", "|---|---|---|"]
    for r in results:
        observed = "n/a" if r.observed is None else f"{r.observed:.4f}"
        lines.append(f"| `{r.name}` | {observed} | {'pass' if r.passed else '**FAIL**'} |")
    verdict = "all gates pass" if all(r.passed for r in results) else "a gate failed"
    return f"## robaudit gates: {verdict}\n\n" + "\n".join(lines) + "\n"


def as_json(results: list[GateResult]) -> dict[str, Any]:
    """JSON form: overall verdict and each gate."""
    return {"passed": all(r.passed for r in results), "gates": [asdict(r) for r in results]}


@dataclass(frozen=True)
class GateOptions:
    """How gates are judged besides their expressions: each rate's ``bound`` (value or ci_low), a ``baseline``
    run directory with the largest allowed drop of any rate (``max_drop``), and ``strict`` (a sanity warning or
    error fails)."""

    bound: str = "value"
    baseline: str | None = None
    max_drop: float | None = None
    strict: bool = False

    @property
    def asked(self) -> bool:
        """Whether these options judge anything without a gate expression."""
        return self.max_drop is not None or self.strict


def gate_run(run_dir, *, gates: list[str], options: GateOptions | None = None) -> list[GateResult]:
    """Judge a run directory's summary; write ``gates.md`` and ``gates.json`` beside it."""
    import json
    from pathlib import Path

    from robaudit.fileio import atomic_write_json, atomic_write_text
    from robaudit.reporting.report import load_summary

    options = options or GateOptions()
    bound, baseline, max_drop = options.bound, options.baseline, options.max_drop
    run_dir = Path(run_dir)
    summary = load_summary(run_dir)
    results = judge(gates, summary, bound=bound)
    if max_drop is not None:
        if baseline is None:
            raise ConfigError("--max-drop needs --baseline RUN_DIR (the run to compare against)")
        baseline_path = Path(baseline) / "summary.json"
        if not baseline_path.is_file():
            raise ConfigError(f"baseline {str(baseline)!r} has no summary.json; pass a run directory")
        results += judge_max_drop(summary, json.loads(baseline_path.read_text(encoding="utf-8")), max_drop=max_drop)
    if options.strict:
        serious = [f for f in summary.get("findings", []) if f["severity"] in ("warning", "error")]
        names = "; ".join(f"{f['severity']}: {f['title']}" for f in serious)
        results.append(
            GateResult(
                "sanity checks (--strict)",
                float(len(serious)),
                not serious,
                f"sanity checks (--strict): {names or 'no warning or error'}",
            )
        )
    if not summary.get("complete", False):
        results.append(GateResult("run is complete", None, False, "the run is incomplete: gates cannot pass"))
    atomic_write_text(run_dir / "gates.md", markdown(results))
    atomic_write_json(run_dir / "gates.json", as_json(results))
    return results
