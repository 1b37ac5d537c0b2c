"""Release gates: parsing, pass/fail, exit codes (0 pass, 1 gate failed, 2 bad input), JUnit XML validity."""

from __future__ import annotations

import json
import shutil
from xml.etree import ElementTree

import pytest
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.errors import ConfigError
from robaudit.gates import Gate, judge, judge_max_drop, junit_xml


def _rate(value, low=None):
    return {"value": value, "ci_low": low if low is not None else value - 0.1, "ci_high": value + 0.1}


SUMMARY = {
    "complete": True,
    "defenses": [
        {
            "label": "none",
            "clean_accuracy": _rate(0.98),
            "worst_case": {"robust_accuracy": _rate(0.2)},
            "results": [
                {"label": "pgd", "threat": "none", "robust_accuracy": _rate(0.3), "attack_success_rate": _rate(0.7)}
            ],
        },
        {
            "label": "ddpm",
            "clean_accuracy": _rate(0.95),
            "worst_case": {"robust_accuracy": _rate(0.6)},
            "results": [
                {
                    "label": "pgd",
                    "threat": "adaptive",
                    "robust_accuracy": _rate(0.6, 0.52),
                    "attack_success_rate": _rate(0.35),
                }
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
        ("worst_case[ddpm] >= 0.5", True),
        ("robust_accuracy[pgd/ddpm/adaptive] >= 0.55", True),
        ("attack_success_rate[pgd] < 0.8", True),
    ],
)
def test_gate_expressions(text, passed):
    assert judge([text], SUMMARY)[0].passed is passed


def test_gate_on_lower_confidence_bound():
    assert judge(["robust_accuracy[pgd/ddpm/adaptive] >= 0.55"], SUMMARY, bound="ci_low")[0].passed is False


@pytest.mark.parametrize("text", ["robust_accuracy >= 0.4", "accuracy[pgd] >= 1", "worst_case => 0.3", "worst_case"])
def test_malformed_gates_are_named(text):
    with pytest.raises(ConfigError, match="gate"):
        Gate.parse(text)


def test_unknown_condition_is_an_error():
    with pytest.raises(ConfigError, match="no condition"):
        judge(["robust_accuracy[cw] >= 0.1"], SUMMARY)


def test_max_drop():
    worse = json.loads(json.dumps(SUMMARY))
    worse["defenses"][0]["results"][0]["robust_accuracy"]["value"] = 0.25
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
    from robaudit.compare import delta_interval
    from robaudit.results import rate

    delta, low, high = delta_interval(rate(50, 100), rate(60, 100))
    # By hand from the Wilson intervals [0.5020, 0.6906] (60/100) and [0.4038, 0.5962] (50/100):
    # 0.1 -/+ sqrt(0.098^2 + 0.0962^2) and sqrt(0.0906^2 + 0.0962^2) -> [-0.0373, 0.2321].
    assert (
        delta == pytest.approx(0.10)
        and low == pytest.approx(-0.0366, abs=2e-3)
        and high == pytest.approx(0.2302, abs=2e-3)
    )
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
