"""Progress off a terminal: a CI log gets a plain line at least every PLAIN_EVERY seconds (rich draws nothing there)."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

import robaudit.progress as progress
from robaudit.progress import clock, progress_bar


def run_bar(*, terminal: bool, seconds: float) -> str:
    out = io.StringIO()
    target = Console(file=out, force_terminal=terminal, width=200)
    with progress_bar(target=target, every=0.05) as bar:
        task = bar.add_task("evaluate 0/1", total=4, status="")
        bar.update(task, advance=1, status="samples 0-16 autoattack|none|none")
        time.sleep(seconds)
    return out.getvalue()


def test_a_bar_off_a_terminal_prints_plain_lines_with_condition_counts_elapsed_and_remaining():
    text = run_bar(terminal=False, seconds=0.3)
    lines = [line for line in text.splitlines() if line.startswith("progress: ")]
    assert len(lines) >= 2, text
    where = r"progress: evaluate 0/1: 1/4 samples 0-16 autoattack\|none\|none"
    pattern = where + r", elapsed \d:\d\d:\d\d, remaining \d:\d\d:\d\d"
    assert re.fullmatch(pattern, lines[-1]), lines[-1]


def test_a_bar_on_a_terminal_prints_no_plain_lines():
    assert "progress: " not in run_bar(terminal=True, seconds=0.2)


def test_the_plain_line_interval_is_at_most_a_minute():
    assert 0 < progress.PLAIN_EVERY <= 60
    assert clock(3725.4) == "1:02:05" and clock(None) == "unknown"


def test_an_evaluate_run_in_a_ci_log_prints_progress_lines(tmp_path, monkeypatch, digits_model_path):
    """Through the CLI (its output is not a terminal), a run of a few seconds with a short interval prints them."""
    from typer.testing import CliRunner

    from robaudit.cli import app

    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.01)
    args = ["evaluate", "--model", str(digits_model_path), "--data", "digits", "--limit", "8", "--attacks", "pgd"]
    result = CliRunner().invoke(app, [*args, "--no-convergence", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert re.search(r"progress: evaluate 0/1: \d+/\d+ .*elapsed .*remaining", result.output), result.output
