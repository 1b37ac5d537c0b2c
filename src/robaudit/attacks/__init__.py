"""Registered attacks and the contract they run under (selection rules in ``attacks.selection``).

The methods sit in ``attacks/methods/``, one file each, the machinery they share beside this file. Every module of
``attacks/methods/`` is imported here, so an attack in a new file there registers itself with no other edit;
installed plugins add theirs through the ``robaudit.attacks`` entry-point group (``robaudit.components.plugins``).
"""

from robaudit.attacks.base import (
    ATTACKS,
    NORMS,
    AttackFn,
    ResolvedAttack,
    build_attack,
    format_eps,
    predict,
    prepare_model,
    project,
    resolve_attack,
    run_attack,
)

__all__ = [
    "ATTACKS",
    "NORMS",
    "AttackFn",
    "ResolvedAttack",
    "build_attack",
    "format_eps",
    "predict",
    "prepare_model",
    "project",
    "resolve_attack",
    "run_attack",
]

from robaudit.components.plugins import discover, load_plugins  # noqa: E402  (after the names plugins import from here)

discover(f"{__name__}.methods")
load_plugins("robaudit.attacks")
