"""User-facing errors: one line naming the problem and the fix; the CLI maps them to exit code 2."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type name when the message is empty), for one-line errors."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]


TRUST_HINT = (
    "unpickling can run arbitrary code, so robaudit refuses it. Re-save the weights as a state dict, a robaudit "
    "checkpoint or safetensors, or pass --trust-checkpoint if you trust whoever made this file"
)


class RobauditError(Exception):
    """A problem with the user's input (files, names, values). Its message is shown as one line."""

    exit_code = 2
    prefix = "error"


class ConfigError(RobauditError):
    """An invalid configuration value or key."""


class DataError(RobauditError):
    """A dataset that cannot be read or does not fit the model."""


class CheckpointError(RobauditError):
    """A checkpoint that cannot be loaded safely or is malformed."""


class Interrupted(RobauditError):
    """The user stopped a run (Ctrl-C); completed work is on disk and the run can resume."""

    exit_code = 130
    prefix = "interrupted"
