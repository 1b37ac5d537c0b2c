"""Rich progress bars and console output shared by long-running steps (written to stderr).

On a terminal the bars redraw in place. Elsewhere -- a CI log, a file -- rich draws nothing until a bar stops, so a
long run would sit silent (and some CI systems kill a job after ten silent minutes): there each bar prints a plain
line per unfinished task at least every ``PLAIN_EVERY`` seconds -- what it is doing, the units done, the time
elapsed and the time remaining as rich estimates it.
"""

from __future__ import annotations

import threading

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
PLAIN_EVERY = 30.0  # seconds between plain progress lines where the console is not a terminal


def clock(seconds: float | None) -> str:
    """``3725.0`` -> ``"1:02:05"``; None -> ``"unknown"``."""
    if seconds is None:
        return "unknown"
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def remaining(task: Task) -> float | None:
    """Seconds ``task`` has left at its pace so far (elapsed per unit done, so a unit that runs long raises the
    estimate while it runs); None before the first unit."""
    if not task.completed or task.total is None or task.elapsed is None:
        return None
    return task.elapsed / task.completed * max(0.0, task.total - task.completed)


def plain_line(task: Task) -> str:
    """One line saying where ``task`` stands: description, status, units done, elapsed and remaining."""
    total = "?" if task.total is None else f"{task.total:.0f}"
    status = task.fields.get("status") or ""
    return (
        f"progress: {task.description}: {task.completed:.0f}/{total} {status}".rstrip()
        + f", elapsed {clock(task.elapsed)}, remaining {clock(remaining(task))}"
    )


class LoggedProgress(Progress):
    """A rich ``Progress`` that, on a console that is not a terminal, prints ``plain_line`` for every unfinished task
    every ``every`` seconds (from a daemon thread, stopped with the bar)."""

    def __init__(self, *columns, every: float = PLAIN_EVERY, **options) -> None:
        super().__init__(*columns, **options)
        self.every = every
        self._quit = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def start(self) -> None:
        super().start()
        if not self.console.is_terminal and self._heartbeat is None:
            self._quit.clear()
            self._heartbeat = threading.Thread(target=self._beat, name="robaudit-progress", daemon=True)
            self._heartbeat.start()

    def stop(self) -> None:
        if self._heartbeat is not None:
            self._quit.set()
            self._heartbeat.join()
            self._heartbeat = None
        super().stop()

    def _beat(self) -> None:
        while not self._quit.wait(self.every):
            for line in self.plain_lines():
                self.console.print(escape(line), highlight=False, soft_wrap=True)

    def plain_lines(self) -> list[str]:
        """``plain_line`` of every task still running."""
        with self._lock:
            tasks = [task for task in self.tasks if task.started and not task.finished]
        return [plain_line(task) for task in tasks]


def progress_bar(*, transient: bool = False, target: Console | None = None, every: float | None = None) -> Progress:
    """A progress bar with counts, elapsed and remaining time (``transient``: erased when done), on ``target``
    (default: the shared stderr console); off a terminal, a plain line every ``every`` seconds (``PLAIN_EVERY``)."""
    return LoggedProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=target or console,
        transient=transient,
        every=PLAIN_EVERY if every is None else every,
    )
