"""``robaudit.audit``: the library's one entry point. A config enters as a path, a mapping or an EvaluateConfig;
its gates (the config's and the caller's) are judged inside the library, and the CLI's exit code is read from
``AuditResult.passed``."""

from __future__ import annotations

import dataclasses
import json
import runpy
import sys

import pytest
import yaml
from typer.testing import CliRunner

import robaudit
from conftest import REPO
from robaudit.cli import app
from robaudit.engine.config import EvaluateConfig
from robaudit.errors import ConfigError


def tiny_config(model, out) -> dict:
    return {
        "model": str(model),
        "data": {"name": "digits", "split": "test", "limit": 8},
        "attacks": [{"name": "pgd", "steps": 3}],
        "convergence": "off",
        "out": str(out),
    }


def test_a_mapping_audits_and_its_gates_are_judged_in_the_library(tmp_path, digits_model_path):
    config = {**tiny_config(digits_model_path, tmp_path / "run"), "gates": ["clean_accuracy >= 0.0"]}
    result = robaudit.audit(config, gates=["worst_case >= 0.99"])
    assert result.complete and result.run_dir == tmp_path / "run"
    assert [g.name for g in result.gates][:2] == ["clean_accuracy >= 0.0", "worst_case >= 0.99"]
    assert result.gates[0].passed and not result.gates[1].passed and result.passed is False
    assert (result.run_dir / "gates.json").is_file()
    assert result.headline["robust_accuracy"]["value"] == result.summary["worst_case"]["robust_accuracy"]["value"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.passed = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        result.summary["clean_accuracy"] = None  # type: ignore[index]


def test_a_yaml_path_and_an_evaluate_config_give_the_same_run(tmp_path, digits_model_path):
    mapping = tiny_config(digits_model_path, tmp_path / "a")
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(mapping))
    from_path = robaudit.audit(path)
    from_config = robaudit.audit(EvaluateConfig.parse({**mapping, "out": str(tmp_path / "b")}))
    assert from_path.passed is True and from_path.gates == ()
    records = [(run.run_dir / "records").glob("*.jsonl") for run in (from_path, from_config)]
    a, b = ([p.read_bytes() for p in sorted(found)] for found in records)
    assert a == b and a


def test_a_gated_run_escalates_by_the_one_rule_in_the_config(tmp_path, digits_model_path):
    mapping = {key: value for key, value in tiny_config(digits_model_path, tmp_path).items() if key != "convergence"}
    assert EvaluateConfig.parse(mapping).convergence.mode is None  # left to the defaults
    assert EvaluateConfig.parse(mapping).with_defaults().convergence.mode == "check"
    gated = EvaluateConfig.parse({**mapping, "gates": ["worst_case >= 0.1"]})
    assert gated.with_defaults().convergence.mode == "escalate"
    chosen = EvaluateConfig.parse({**mapping, "gates": ["worst_case >= 0.1"], "convergence": "check"})
    assert chosen.with_defaults().convergence.mode == "check"  # a mode the config names is kept


def test_an_evaluate_config_and_a_mapping_with_gates_resolve_to_the_same_audit(tmp_path, digits_model_path):
    """``audit(EvaluateConfig, gates=...)`` escalates as ``audit(mapping, gates=...)`` does: one settled config,
    the same saved config and the same run fingerprint."""
    mapping = {key: value for key, value in tiny_config(digits_model_path, tmp_path).items() if key != "convergence"}
    gate = ["worst_case >= 0.0"]
    runs = [
        robaudit.audit({**mapping, "out": str(tmp_path / "mapping")}, gates=gate),
        robaudit.audit(EvaluateConfig.parse({**mapping, "out": str(tmp_path / "config")}), gates=gate),
    ]
    saved = [yaml.safe_load((run.run_dir / "config.yaml").read_text()) for run in runs]
    assert saved[0] == saved[1] and saved[0]["convergence"]["mode"] == "escalate"
    manifests = [json.loads((run.run_dir / "manifest.json").read_text()) for run in runs]
    assert manifests[0]["fingerprint"] == manifests[1]["fingerprint"]
    assert [run.passed for run in runs] == [True, True]


def test_bad_input_is_refused_before_any_work(tmp_path, digits_model_path):
    with pytest.raises(ConfigError, match="gate"):
        robaudit.audit(tiny_config(digits_model_path, tmp_path / "run"), gates=["robust_accuracy >> 2"])
    with pytest.raises(ConfigError, match="colour"):
        robaudit.audit({**tiny_config(digits_model_path, tmp_path / "run"), "colour": "red"})
    assert not (tmp_path / "run").exists()


def test_the_cli_exit_code_is_the_results_verdict(tmp_path, digits_model_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", "--model", str(digits_model_path), "--data", "digits", "--limit", "8", "--attacks", "fgsm"]
    args += ["--no-convergence", "--out", "run"]
    failed = CliRunner().invoke(app, [*args, "--gate", "worst_case >= 0.99"])
    assert failed.exit_code == 1, failed.output
    passed = CliRunner().invoke(app, [*args, "--gate", "clean_accuracy >= 0.0"])
    assert passed.exit_code == 0, passed.output


@pytest.mark.slow
def test_the_python_api_example_prints_a_verdict(tmp_path, digits_model_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["python_api.py", "--model", str(digits_model_path), "--limit", "8", "--out", str(tmp_path / "run")]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "examples" / "python_api.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "robust accuracy, worst case over" in out and "verdict: " in out
    assert "convergence check:" in out, "a gated run escalates, and says what its check certified"
