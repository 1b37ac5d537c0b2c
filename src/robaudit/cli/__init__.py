"""The robaudit command line: thin Typer commands over library functions."""

from __future__ import annotations

import typer

from robaudit import __version__
from robaudit.cli import attack, distill, evaluate, ls, purify, report, train
from robaudit.cli.common import STATE

app = typer.Typer(
    name="robaudit",
    help="Audit the adversarial robustness of image classifiers, with and without test-time purification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"robaudit {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """robaudit: train, attack, purify, distill, evaluate, report."""
    STATE["debug"] = debug


for module in (train, attack, purify, distill, evaluate, report, ls):
    app.add_typer(module.app)


def main() -> None:
    """Console-script entry point."""
    app()
