"""`robaudit report RUN_DIR`: rebuild summary.json, results.csv and report.md from the run directory alone."""

from __future__ import annotations

from pathlib import Path

import typer

from robaudit.cli.common import (
    BaselineOption,
    GateBoundOption,
    GateOption,
    JsonOption,
    JunitOption,
    MaxDropOption,
    handle_errors,
    report_gates,
)
from robaudit.progress import console
from robaudit.report import rebuild_reports

app = typer.Typer()


@app.command("report")
@handle_errors
def report(
    run_dir: Path = typer.Argument(..., help="A run directory written by evaluate."),
    template: Path = typer.Option(None, "--template", help="A jinja2 template to render instead of report.md."),
    gate: list[str] = GateOption,
    gate_bound: str = GateBoundOption,
    baseline: Path = BaselineOption,
    max_drop: float = MaxDropOption,
    junit: Path = JunitOption,
    json_output: bool = JsonOption,
) -> None:
    """Rebuild a run's reports from its stored records; judge release gates on it."""
    written = rebuild_reports(run_dir, template=template)
    for path in written.values():
        console.print(f"wrote {path}")
    report_gates(
        run_dir,
        gates=list(gate or []),
        bound=gate_bound,
        baseline=baseline,
        max_drop=max_drop,
        junit=junit,
        as_json_output=json_output,
    )
