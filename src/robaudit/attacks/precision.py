"""Reduced-precision attack iterations, with every verdict in float32 (compiled networks: ``models.compiled``).

``--precision bf16`` runs an attack's iterations under autocast (bfloat16 matrix products on CPUs with AVX512-BF16
or AMX and on GPUs). The verdicts that decide anything are float32: the cascade judges candidates with autocast off
(``selection.judge``), early exit confirms a reduced-precision "fooled" in float32, and scoring is float32. Where a
final adversarial image's verdict differs between the two precisions, the float32 verdict stands and the run counts
the disagreement.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from robaudit.errors import ConfigError
from robaudit.sample_rng import is_randomized

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


def check_precision(precision: str) -> str:
    """``precision`` if known, else a ConfigError naming the choices."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return precision


@contextlib.contextmanager
def attack_precision(precision: str, device: torch.device) -> Iterator[None]:
    """Autocast to ``precision`` on ``device`` for the block (nothing for fp32)."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


@torch.no_grad()
def disagreements(
    model: nn.Module, adversarial: torch.Tensor, labels: torch.Tensor, *, precision: str
) -> tuple[int, int]:
    """(samples whose correctness differs between ``precision`` and float32, samples compared) on a deterministic
    ``model``; a randomized one compares nothing (its verdicts differ from draw to draw anyway)."""
    if PRECISIONS[check_precision(precision)] is None or is_randomized(model) or not len(labels):
        return 0, 0
    full = model(adversarial).argmax(1) == labels
    with attack_precision(precision, adversarial.device):
        reduced = model(adversarial).float().argmax(1) == labels
    return int((full != reduced).sum()), len(labels)
