"""Registered attacks and the contract they run under (selection rules in ``attacks.selection``)."""

from robaudit.attacks import autoattack, cw, pgd  # noqa: F401  (registers the attacks)
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
