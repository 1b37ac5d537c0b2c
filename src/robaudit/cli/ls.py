"""`robaudit ls attacks|datasets|models|architectures|purifiers`: what is registered, one line each."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from robaudit.cli.common import handle_errors
from robaudit.components.catalog import Catalog, catalog
from robaudit.config import unknown_name_message
from robaudit.errors import ConfigError
from robaudit.progress import console

app = typer.Typer()

LISTED = {"attacks": "attack", "datasets": "dataset", "architectures": "architecture"}  # listing -> registry


def model_rows() -> list[tuple[str, str, str]]:
    """(kind, description, example --model) of every model a --model can name: files and pretrained sources."""
    from robaudit.models.references import FILE_KINDS

    files = [(kind, text, f"--model {example}") for kind, text, example in FILE_KINDS]
    sources = [(f"{e.name}:", e.description, f"--model {e.meta['example']}") for e in catalog("model source")]
    return files + sources


@app.command("ls")
@handle_errors
def ls(what: str = typer.Argument(..., help="attacks, datasets, models, architectures or purifiers")) -> None:
    """List registered components with one-line descriptions (models: every source with an example)."""
    listings = {name: registry_rows(catalog(kind)) for name, kind in LISTED.items()}
    listings.update(models=model_rows(), purifiers=registry_rows(catalog("purifier")) + purifier_source_rows())
    if what not in listings:
        raise ConfigError(unknown_name_message("listing", what, sorted(listings)))
    table = Table(show_header=True, box=None)
    columns = ("model", "description", "example") if what == "models" else ("name", "description")
    for i, column in enumerate(columns):
        table.add_column(column, style="bold" if i == 0 else None)
    for row in listings[what]:
        table.add_row(*(escape(cell) for cell in row))
    console_out = console.__class__(stderr=False, width=220)
    console_out.print(table)
    if what == "architectures":
        console_out.print("Any timm architecture name is accepted too (e.g. --arch resnet18).")


def purifier_source_rows() -> list[tuple[str, str]]:
    """Where a purifier's network may come from, each with an example."""
    rows = [(f"{e.name}:", f"{e.description}; e.g. {e.meta['example']}") for e in catalog("purifier source")]
    factory = "your own network code: purifiers: [{name: ddpm, network: {factory: pkg.module:function, kwargs: {...}, "
    rows.append(
        ("network:", factory + "weights: PATH}}] with --trust-code, or a robaudit.purifier_networks entry point")
    )
    return rows


def registry_rows(entries: Catalog) -> list[tuple[str, str]]:
    """(name, description) of each entry."""
    return [(entry.name, entry.description) for entry in entries]
