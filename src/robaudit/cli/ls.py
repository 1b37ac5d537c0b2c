"""`robaudit ls attacks|datasets|models|architectures|purifiers`: what is registered, one line each."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from robaudit.cli.common import handle_errors
from robaudit.errors import ConfigError
from robaudit.progress import console
from robaudit.registry import Registry, unknown_name_message

app = typer.Typer()


def registries() -> dict[str, Registry]:
    """The registries ``ls`` lists by name (imported here, when a listing is asked for)."""
    from robaudit.attacks import ATTACKS
    from robaudit.data import DATASETS
    from robaudit.models.architectures import ARCHITECTURES

    return {"attacks": ATTACKS, "datasets": DATASETS, "architectures": ARCHITECTURES}


def model_rows() -> list[tuple[str, str, str]]:
    """(kind, description, example --model) of every model a --model can name: files and pretrained sources."""
    from robaudit.models.sources import FILE_KINDS, MODEL_SOURCES

    files = [(kind, text, f"--model {example}") for kind, text, example in FILE_KINDS]
    sources = [(f"{e.name}:", e.description, f"--model {e.meta['example']}") for e in MODEL_SOURCES]
    return files + sources


@app.command("ls")
@handle_errors
def ls(what: str = typer.Argument(..., help="attacks, datasets, models, architectures or purifiers")) -> None:
    """List registered components with one-line descriptions (models: every source with an example)."""
    from robaudit.purifiers import PURIFIERS

    listings = {name: registry_rows(registry) for name, registry in registries().items()}
    listings.update(models=model_rows(), purifiers=registry_rows(PURIFIERS) + purifier_source_rows())
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
    from robaudit.purifiers.sources import PURIFIER_SOURCES

    rows = [(f"{e.name}:", f"{e.description}; e.g. {e.meta['example']}") for e in PURIFIER_SOURCES]
    factory = "your own network code: purifiers: [{name: ddpm, network: {factory: pkg.module:function, kwargs: {...}, "
    rows.append(
        ("network:", factory + "weights: PATH}}] with --trust-code, or a robaudit.purifier_networks entry point")
    )
    return rows


def registry_rows(registry: Registry) -> list[tuple[str, str]]:
    """(name, description) of each entry."""
    return [(entry.name, entry.description) for entry in registry]
