"""Release gates: parsing, pass/fail, exit codes (0 pass, 1 gate failed, 2 bad input), JUnit XML validity."""

from __future__ import annotations

import json
import shutil
from xml.etree import ElementTree

import pytest
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.errors import ConfigError
from robaudit.reporting.gates import Gate, judge, judge_max_drop, junit_xml


def _rate(value, low=None):
    return {"value": value, "ci_low": low if low is not None else value - 0.1, "ci_high": value + 0.1}


def _result(label, threat, mean, worst, *, low=None):
    return {
        "label": label,
        "threat": threat,
        "robust_accuracy": _rate(mean),
        "robust_accuracy_worst_of_n": _rate(worst, low),
        "attack_success_rate": _rate(1 - worst),
    }


SUMMARY = {
    "complete": True,
    "defenses": [
        {
            "label": "none",
            "clean_accuracy": _rate(0.98),
            "clean_accuracy_worst_of_n": _rate(0.98),
            "worst_case": {"robust_accuracy": _rate(0.2)},
            "results": [_result("pgd", "none", 0.3, 0.3)],
        },
        {
            "label": "ddpm",
            "clean_accuracy": _rate(0.95),
            "clean_accuracy_worst_of_n": _rate(0.9),
            "worst_case": {"robust_accuracy": _rate(0.4)},
            "results": [
                _result("pgd", "non-adaptive", 0.8, 0.7),
                _result("pgd", "adaptive", 0.6, 0.45, low=0.38),
            ],
        },
    ],
}


@pytest.mark.parametrize(
    "text, passed",
    [
        ("clean_accuracy >= 0.95", True),
        ("robust_accuracy[pgd] >= 0.40", False),
        ("robust_accuracy[pgd] > 0.25", True),
        ("worst_case >= 0.30", False),
        ("worst_case[ddpm] >= 0.4", True),
        ("worst_case[ddpm] >= 0.41", False),
        # a randomized pipeline is read at its worst of N unless the gate asks for the mean
        ("clean_accuracy[ddpm] >= 0.95", False),
        ("clean_accuracy[ddpm:mean] >= 0.95", True),
        ("robust_accuracy[pgd/ddpm/adaptive] >= 0.55", False),
        ("robust_accuracy[pgd/ddpm/adaptive:mean] >= 0.55", True),
        # no threat model named: the worst threat model that ran (adaptive, 0.45), not the first (0.7)
        ("robust_accuracy[pgd/ddpm] >= 0.5", False),
        ("robust_accuracy[pgd/ddpm] >= 0.45", True),
        ("robust_accuracy[pgd/ddpm:mean] >= 0.65", False),
        ("attack_success_rate[pgd] < 0.8", True),
        ("attack_success_rate[pgd/ddpm] <= 0.3", False),
    ],
)
def test_gate_expressions(text, passed):
    assert judge([text], SUMMARY)[0].passed is passed


def test_a_gate_on_an_attack_reads_the_strongest_rung_of_its_convergence_ladder():
    summary = json.loads(json.dumps(SUMMARY))
    rung = {**_result("pgd+x4", "adaptive", 0.5, 0.31), "convergence_of": "pgd", "rung": 1}
    summary["defenses"][1]["results"].append(rung)
    assert judge(["robust_accuracy[pgd/ddpm/adaptive] >= 0"], summary)[0].observed == 0.31
    assert judge(["robust_accuracy[pgd/ddpm] >= 0.4"], summary)[0].passed is False, "the x4 rung broke more"
    assert judge(["robust_accuracy[pgd/ddpm/non-adaptive] >= 0"], summary)[0].observed == 0.7, "other threats alone"


def test_gate_reads_the_observed_value():
    assert judge(["robust_accuracy[pgd/ddpm] >= 0"], SUMMARY)[0].observed == 0.45
    assert judge(["robust_accuracy[pgd/ddpm] >= 0"], SUMMARY, bound="ci_low")[0].observed == 0.38


def test_gate_on_lower_confidence_bound():
    assert judge(["robust_accuracy[pgd/ddpm/adaptive] >= 0.4"], SUMMARY)[0].passed is True
    assert judge(["robust_accuracy[pgd/ddpm/adaptive] >= 0.4"], SUMMARY, bound="ci_low")[0].passed is False


@pytest.mark.parametrize("text", ["robust_accuracy >= 0.4", "accuracy[pgd] >= 1", "worst_case => 0.3", "worst_case"])
def test_malformed_gates_are_named(text):
    with pytest.raises(ConfigError, match="gate"):
        Gate.parse(text)


def test_unknown_condition_is_an_error():
    with pytest.raises(ConfigError, match="no condition"):
        judge(["robust_accuracy[cw] >= 0.1"], SUMMARY)


def test_max_drop():
    worse = json.loads(json.dumps(SUMMARY))
    worse["defenses"][0]["results"][0]["robust_accuracy_worst_of_n"]["value"] = 0.25
    results = {r.name: r.passed for r in judge_max_drop(worse, SUMMARY, max_drop=0.02)}
    assert results["max drop 0.02: robust_accuracy[pgd/none/none]"] is False
    assert results["max drop 0.02: clean_accuracy[none]"] is True


def test_junit_is_valid_xml():
    results = judge(["clean_accuracy >= 0.95", "worst_case >= 0.30"], SUMMARY)
    root = ElementTree.fromstring(junit_xml(results).split("?>", 1)[1])
    assert root.tag == "testsuite" and root.get("tests") == "2" and root.get("failures") == "1"
    assert [case.find("failure") is not None for case in root.iter("testcase")] == [False, True]


def test_cli_exit_codes(tmp_path, monkeypatch, digits_model_path):
    monkeypatch.chdir(tmp_path)
    shutil.copy(digits_model_path, "m.pt")
    runner = CliRunner()
    base = ["evaluate", "--model", "m.pt", "--data", "digits", "--limit", "8", "--attacks", "fgsm", "--out", "run"]
    result = runner.invoke(app, [*base, "--gate", "clean_accuracy >= 0", "--junit", "gates.xml"])
    assert result.exit_code == 0, result.output
    assert ElementTree.parse("gates.xml").getroot().get("failures") == "0"
    result = runner.invoke(app, ["report", "run", "--gate", "worst_case >= 1.01", "--gate", "clean_accuracy >= 0"])
    assert result.exit_code == 1 and "worst_case >= 1.01" in result.output
    assert "FAIL" in (tmp_path / "run" / "gates.md").read_text()
    result = runner.invoke(app, ["report", "run", "--gate", "worst_case >= 0", "--json"])
    assert result.exit_code == 0 and '"passed": true' in result.output
    result = runner.invoke(app, ["report", "run", "--max-drop", "0.0", "--baseline", "run"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["report", "run", "--gate", "worst_case =< 0.3"])
    assert result.exit_code == 2 and "does not parse" in result.output


def test_delta_interval_and_comparison(tmp_path, monkeypatch, digits_model_path):
    from robaudit.reporting.compare import delta_interval
    from robaudit.reporting.results import rate

    delta, low, high = delta_interval(rate(50, 100), rate(60, 100))
    # By hand from the Wilson intervals [0.50200, 0.69060] (60/100) and [0.40383, 0.59617] (50/100), Newcombe's
    # method 10: 0.1 - sqrt(0.09800^2 + 0.09617^2) = -0.03730 and 0.1 + sqrt(0.09060^2 + 0.09617^2) = 0.23212.
    assert rate(60, 100)["ci_low"] == pytest.approx(0.50200, abs=1e-5)
    assert rate(50, 100)["ci_high"] == pytest.approx(0.59617, abs=1e-5)
    assert delta == pytest.approx(0.10) and low == pytest.approx(-0.03730, abs=1e-4)
    assert high == pytest.approx(0.23212, abs=1e-4)
    monkeypatch.chdir(tmp_path)
    shutil.copy(digits_model_path, "m.pt")
    runner = CliRunner()
    for out, eps in (("old", "8/255"), ("new", "16/255")):
        args = ["evaluate", "--model", "m.pt", "--data", "digits", "--limit", "16", "--attacks", "pgd", "--eps", eps]
        assert runner.invoke(app, [*args, "--out", out]).exit_code == 0
    result = runner.invoke(app, ["report", "old", "new"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "new" / "comparison.md").read_text()
    assert "robust accuracy [pgd / none / none]" in text and "delta [95% CI]" in text


def test_strict_reads_the_findings_and_an_older_summarys_flags(tmp_path):
    """Schema 5 calls them ``findings``; a schema-4 summary's ``flags`` still fail ``--strict``."""
    from robaudit.reporting.gates import GateOptions, gate_run

    finding = {"check": "gradients", "severity": "error", "title": "zero gradients", "explanation": "", "evidence": {}}
    summary = {"defenses": [], "attacks": [], "clean_accuracy": _rate(0.9)}
    for key in ("findings", "flags"):
        run = tmp_path / key
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({**summary, key: [finding]}))
        results = gate_run(run, gates=[], options=GateOptions(strict=True))
        strict = next(r for r in results if r.name == "sanity checks (--strict)")
        assert not strict.passed and strict.observed == 1, key
