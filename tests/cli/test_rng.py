"""``--rng``: the random streams' engine is a run setting -- saved in config.yaml, part of the run's fingerprint (a
finished run is not resumed under the other engine), and an unknown engine is a one-line error."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from robaudit.cli import app

runner = CliRunner()


def evaluate(model, out, *extra):
    args = ["evaluate", "--model", model, "--data", "digits", "--attacks", "pgd", "--limit", 8, "--out", out]
    args += ["--no-convergence", *extra]
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_the_engine_is_saved_and_fingerprinted(digits_model_path, tmp_path):
    result = evaluate(digits_model_path, tmp_path / "run", "--rng", "philox")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["rng"] == "philox"
    again = evaluate(digits_model_path, tmp_path / "run")  # the default engine: another run
    assert again.exit_code == 2 and "Traceback" not in again.output
    assert len(again.output.strip().splitlines()) == 1, again.output


def test_an_unknown_engine_is_a_one_line_error(digits_model_path, tmp_path):
    result = evaluate(digits_model_path, tmp_path / "run", "--rng", "mt19937")
    assert result.exit_code == 2 and "rng" in result.output and "philox" in result.output, result.output
    assert not (tmp_path / "run").exists()
