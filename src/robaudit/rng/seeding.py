"""Seeds derived from the run seed, and isolation of libraries that reseed the global RNG."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads where a generator is made: derive_seed is read by config checks that import none
    import torch


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed determined by ``seed`` and ``parts`` (names, indices); stable across runs and platforms."""
    text = "/".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


@contextlib.contextmanager
def isolated_global_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block with the global torch RNG seeded to ``seed``, restoring the caller's state afterwards.

    torchattacks draws from (and reseeds) the global RNG; this keeps its randomness seeded and recorded without
    changing anything outside the block.
    """
    import torch

    device = torch.device(device)
    if device.type != "cpu":
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield
        return
    state = torch.get_rng_state()  # on a CPU, the CPU generator alone: torch.manual_seed would queue every
    torch.default_generator.manual_seed(seed)  # accelerator's seeding too, with a stack trace each (milliseconds)
    try:
        yield
    finally:
        torch.set_rng_state(state)
