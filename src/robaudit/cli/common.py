"""Shared CLI plumbing: user errors as one line with exit code 2, the --debug switch, common options."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from robaudit.errors import RobauditError

F = TypeVar("F", bound=Callable[..., Any])

STATE = {"debug": bool(os.environ.get("ROBAUDIT_DEBUG"))}


def handle_errors(func: F) -> F:
    """Turn RobauditError into ``error: <message>`` on stderr and exit code 2 (a traceback only with --debug)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RobauditError as exc:
            if STATE["debug"]:
                raise
            typer.echo(f"{exc.prefix}: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: completed batches are kept; re-run the same command to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


SeedOption = typer.Option(0, "--seed", help="Seed of every random choice (recorded in the manifest).")
DeviceOption = typer.Option("auto", "--device", help="cpu, cuda or auto.")
SkipBadOption = typer.Option(
    False, "--skip-bad", help="Leave unreadable files of an image folder out (the report lists them)."
)
TrustOption = typer.Option(
    False,
    "--trust-checkpoint",
    help="Load pickled checkpoints in full. Unpickling runs code from the file: only for files you trust.",
)
TrustCodeOption = typer.Option(
    False,
    "--trust-code",
    help="Let a purifier's network: {factory: package.module:function} import and run your own code.",
)


def report_gates(run_dir: Path, flags: Any, *, extra_gates: list[str]) -> None:
    """Judge ``extra_gates`` and the gates of ``flags`` (a ``GateFlags``) on a finished run (``robaudit report``);
    write gates.md and gates.json, and show them (``show_gates``)."""
    from robaudit.reporting.gates import gate_run

    gates = list(dict.fromkeys([*extra_gates, *(flags.gate or [])]))
    if gates or flags.options().asked:
        show_gates(gate_run(run_dir, gates=gates, options=flags.options()), flags)


def show_gates(results: list[Any], flags: Any) -> None:
    """Print judged gates (``reporting.gates.GateResult``), write them as JUnit XML or JSON where ``flags`` (a
    ``GateFlags``) asks; exit 1 when one failed."""
    import json

    from rich.markup import escape

    from robaudit.fileio import atomic_write_text
    from robaudit.progress import console
    from robaudit.reporting.gates import as_json, junit_xml

    if not results:
        return
    if flags.junit is not None:
        atomic_write_text(flags.junit, junit_xml(results))
    if flags.json_output:
        typer.echo(json.dumps(as_json(results), indent=2))
    for result in results:
        mark = "[green]pass[/green]" if result.passed else "[red]FAIL[/red]"
        console.print(f"{mark} {escape(result.message)}", highlight=False)  # gate keys hold [brackets]
    if not all(result.passed for result in results):
        failed = [r.name for r in results if not r.passed]
        typer.echo(f"gate failed: {'; '.join(failed)}", err=True)
        raise typer.Exit(1)
