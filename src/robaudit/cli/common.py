"""Shared CLI plumbing: user errors as one line with exit code 2, the --debug switch, common options."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
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
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: completed batches are kept; re-run the same command to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


SeedOption = typer.Option(0, "--seed", help="Seed of every random choice (recorded in the manifest).")
DeviceOption = typer.Option("auto", "--device", help="cpu, cuda or auto.")
