"""`robaudit report RUN_DIR`: merge a run's shards and rebuild its reports from the run directory alone."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from robaudit.cli.common import handle_errors, report_gates
from robaudit.cli.flags import GATE_FLAGS, GateFlags, with_flags
from robaudit.errors import ConfigError
from robaudit.fileio import atomic_write_text
from robaudit.progress import console

app = typer.Typer()


@app.command("report")
@handle_errors
@with_flags(GATE_FLAGS)
def report(
    run_dirs: list[Path] = typer.Argument(..., help="A run directory; two to compare (the last release first)."),
    out: Path = typer.Option(
        None, "--out", help="With two runs: where to write the comparison (default RUN_B/comparison.md)."
    ),
    template: Path = typer.Option(None, "--template", help="A jinja2 template to render instead of report.md."),
    gate_flags: GateFlags = None,  # type: ignore[assignment]  (filled by with_flags)
) -> None:
    """Rebuild a run's reports from its stored records and judge release gates on it; with two runs, compare them."""
    from robaudit.engine.run import merge
    from robaudit.reporting.compare import compare_summaries, comparison_markdown
    from robaudit.reporting.report import load_summary, rebuild_reports

    if len(run_dirs) > 2:
        raise ConfigError("report takes one run directory, or two to compare (the last release first)")
    for run_dir in run_dirs:
        missing = merge(run_dir)  # the shards' parts that exist; the reports say what is missing
        if missing:
            names = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
            console.print(f"[yellow]incomplete run: {len(missing)} part(s) missing: {escape(names)}[/yellow]")
        rebuild_reports(run_dir)
        if template is not None:
            for path in rebuild_reports(run_dir, template=template).values():
                console.print(f"wrote {escape(str(path))}")
        else:
            console.print(
                f"rebuilt the reports in {escape(str(run_dir))}: summary.json, results.csv, report.md, report.html"
            )
    run_dir = run_dirs[-1]
    if len(run_dirs) == 2:
        before, after = load_summary(run_dirs[0]), load_summary(run_dirs[1])
        text = comparison_markdown(compare_summaries(before, after), before=str(run_dirs[0]), after=str(run_dirs[1]))
        target = atomic_write_text(out or run_dir / "comparison.md", text)
        typer.echo(text)
        console.print(f"wrote {escape(str(target))}")
    report_gates(run_dir, gate_flags, extra_gates=configured_gates(run_dir))


def configured_gates(run_dir: Path) -> list[str]:
    """The ``gates:`` saved in the run's config (a sharded run is gated when its report is merged)."""
    from robaudit.runs.rundir import RunDir

    return list(RunDir(run_dir).read_config().get("gates", []))
