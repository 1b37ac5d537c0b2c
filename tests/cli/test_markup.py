"""What robaudit prints is what the user types: registry text and paths with brackets survive rich's markup."""

from __future__ import annotations

from typer.testing import CliRunner

from robaudit.cli import app, ls
from robaudit.components.catalog import Catalog, CatalogEntry

runner = CliRunner()


def test_ls_prints_names_and_descriptions_in_brackets_literally(monkeypatch):
    entry = CatalogEntry("[bold]x", "m:x", "needs pip install -e '.[extra]' and [red]nothing[/red] else")
    monkeypatch.setattr(ls, "catalog", lambda kind: Catalog(kind, [entry] if kind == "attack" else []))
    result = runner.invoke(app, ["ls", "attacks"])
    assert result.exit_code == 0
    assert "[bold]x" in result.output and "pip install -e '.[extra]'" in result.output
    assert "[red]nothing[/red]" in result.output


def test_ls_models_tells_a_robustbench_user_the_whole_install_command():
    result = runner.invoke(app, ["ls", "models"])
    assert "pip install -e '.[robustbench]'" in result.output


def test_a_run_directory_with_brackets_is_printed_as_typed(tmp_path, digits_model_path):
    out = tmp_path / "runs[v2]"
    args = ["evaluate", "--model", str(digits_model_path), "--data", "digits", "--limit", "4", "--attacks", "fgsm"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"report: {out / 'report.md'}" in result.output.replace("\n", "")


def test_a_gate_is_printed_with_its_bracketed_key(capsys):
    """A gate's key (``robust_accuracy[pgd]``) is text, not rich markup: the console shows it as written."""
    import pytest

    from robaudit.cli.common import show_gates
    from robaudit.cli.flags import GateFlags
    from robaudit.reporting.gates import GateResult

    failed = GateResult("robust_accuracy[pgd] >= 0.99", 0.125, False, "robust_accuracy[pgd] >= 0.99: observed 0.1250")
    with pytest.raises(Exception) as exit_info:
        show_gates([failed], GateFlags())
    assert getattr(exit_info.value, "exit_code", None) == 1
    assert "FAIL robust_accuracy[pgd] >= 0.99: observed" in capsys.readouterr().err.replace("\n", " ")
