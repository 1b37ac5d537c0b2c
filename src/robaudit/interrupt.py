"""Graceful Ctrl-C: the first SIGINT asks a batch loop to stop after the current batch; a second one stops at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from robaudit.progress import console


@contextmanager
def stop_after_current_batch() -> Iterator[Callable[[], bool]]:
    """Yield a function telling whether Ctrl-C was pressed; the loop checks it between batches.

    Only the main thread can receive signals: elsewhere the function always answers False and Ctrl-C behaves as
    usual (KeyboardInterrupt).
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    requested = False

    def on_sigint(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
        nonlocal requested
        if requested:
            raise KeyboardInterrupt
        requested = True
        console.print("[yellow]Ctrl-C: stopping after the current batch (press Ctrl-C again to stop now)[/yellow]")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield lambda: requested
    finally:
        signal.signal(signal.SIGINT, previous)
