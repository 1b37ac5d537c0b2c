"""`robaudit ls attacks|datasets|models|purifiers`: what is registered, one line each."""

from __future__ import annotations

import typer
from rich.table import Table

from robaudit.attacks import ATTACKS
from robaudit.cli.common import handle_errors
from robaudit.data import DATASETS
from robaudit.errors import ConfigError
from robaudit.models.architectures import ARCHITECTURES
from robaudit.progress import console
from robaudit.purifiers import PURIFIERS
from robaudit.registry import Registry, unknown_name_message

app = typer.Typer()

REGISTRIES: dict[str, Registry] = {
    "attacks": ATTACKS,
    "datasets": DATASETS,
    "models": ARCHITECTURES,
    "purifiers": PURIFIERS,
}


@app.command("ls")
@handle_errors
def ls(what: str = typer.Argument(..., help="attacks, datasets, models or purifiers")) -> None:
    """List registered components with one-line descriptions."""
    if what not in REGISTRIES:
        raise ConfigError(unknown_name_message("listing", what, sorted(REGISTRIES)))
    table = Table(show_header=True, box=None)
    table.add_column("name", style="bold")
    table.add_column("description")
    for entry in REGISTRIES[what]:
        table.add_row(entry.name, entry.description)
    console_out = console.__class__(stderr=False, width=200)
    console_out.print(table)
    if what == "models":
        console_out.print("Any timm architecture name is accepted too (e.g. --arch resnet18).")
