"""What robaudit prints is what the user types: registry text and paths with brackets survive rich's markup."""

from __future__ import annotations

from typer.testing import CliRunner

from robaudit.cli import app, ls
from robaudit.registry import Registry

runner = CliRunner()


def test_ls_prints_names_and_descriptions_in_brackets_literally(monkeypatch):
    registry = Registry("attack")
    registry.register("[bold]x", description="needs pip install -e '.[extra]' and [red]nothing[/red] else")(print)
    monkeypatch.setattr(ls, "registries", lambda: {"attacks": registry})
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
