"""`robaudit report RUN_DIR`: rebuild summary.json, results.csv and report.md from the run directory alone."""

from __future__ import annotations

from pathlib import Path

import typer

from robaudit.cli.common import handle_errors
from robaudit.progress import console
from robaudit.report import rebuild_reports

app = typer.Typer()


@app.command("report")
@handle_errors
def report(
    run_dir: Path = typer.Argument(..., help="A run directory written by evaluate."),
    template: Path = typer.Option(None, "--template", help="A jinja2 template to render instead of report.md."),
) -> None:
    """Rebuild a run's reports from its stored records."""
    written = rebuild_reports(run_dir, template=template)
    for path in written.values():
        console.print(f"wrote {path}")
