"""Reduced-precision attack iterations, with every verdict in float32 (compiled networks: ``models.compiled``).

``--precision bf16`` runs an attack's iterations under autocast (bfloat16 matrix products on CPUs with AVX512-BF16
or AMX and on GPUs). The verdicts that decide anything are float32: the cascade judges candidates with autocast off
(``selection.judge``), early exit confirms a reduced-precision "fooled" in float32, and scoring is float32. Where a
final adversarial image's verdict differs between the two precisions, the float32 verdict stands and the run counts
the disagreement. Autocast covers the whole pipeline: a purifier's network runs its iterations in the reduced
precision too, and a randomized pipeline's disagreements are counted on one shared draw.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from robaudit.errors import ConfigError
from robaudit.rng.sample_rng import SampleRNG, is_randomized

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
    """(samples whose correctness differs between ``precision`` and float32, samples compared). A randomized
    pipeline (one that takes per-sample streams: a purifier's noise, a randomized classifier) is compared on one
    shared draw, the same throwaway streams in both precisions, so only the precision differs; a randomized model
    that draws from elsewhere compares nothing."""
    if PRECISIONS[check_precision(precision)] is None or not len(labels):
        return 0, 0
    if is_randomized(model) and not getattr(model, "takes_sample_rng", False):
        return 0, 0
    full = one_draw(model, adversarial).argmax(1) == labels
    with attack_precision(precision, adversarial.device):
        reduced = one_draw(model, adversarial).float().argmax(1) == labels
    return int((full != reduced).sum()), len(labels)


def one_draw(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``model``'s scores (N, K) on images (N, C, H, W); a randomized pipeline's from streams seeded 0..N-1."""
    if not is_randomized(model):
        return model(images)
    return model(images, rng=SampleRNG.from_seeds(range(len(images)), images.device))
