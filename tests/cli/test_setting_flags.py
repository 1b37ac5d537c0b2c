"""A config key with a flag is one field: ``robaudit evaluate`` builds ``--KEY`` from the field's declaration, and
the flag's value reaches the config as the YAML's would."""

from __future__ import annotations

import pytest
import typer.main
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.engine.config import EvaluateConfig, flag_table

pytestmark = pytest.mark.usefixtures("checkpoint_here")  # configs name m.pt: parse checks it exists


def evaluate_options() -> dict[str, list[str]]:
    """The evaluate command's parameters: name -> its option strings."""
    group = typer.main.get_command(app)
    return {param.name: param.opts for param in group.commands["evaluate"].params}


def test_every_declared_flag_is_an_option_of_evaluate():
    options = evaluate_options()
    for key in flag_table():
        assert f"--{key.replace('_', '-')}" in options[key], key


def test_a_flag_sets_its_key_like_the_config(monkeypatch):
    seen = {}
    monkeypatch.setattr("robaudit.cli.evaluate.audit_and_show", lambda mapping, *a, **k: seen.update(mapping))
    flags = ["--repeats", "3", "--precision", "bf16", "--eps", "4/255"]
    args = ["evaluate", "--model", "m.pt", "--data", "digits", *flags]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    config = EvaluateConfig.parse(seen)
    assert (config.repeats, config.precision, round(config.eps * 255)) == (3, "bf16", 4)
