"""Seeds derived from the run seed, and isolation of libraries that reseed the global RNG."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads where a generator is made: derive_seed is read by config checks that import none
    import torch


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed determined by ``seed`` and ``parts`` (names, indices); stable across runs and platforms."""
    text = "/".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


GOLDEN_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment: 2^64 / the golden ratio


def _mix64(values: Any) -> Any:
    """splitmix64's finalizer (Steele, Lea and Flood 2014) on uint64 numpy values, modulo 2^64."""
    import numpy as np

    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def draw_seeds(seeds: Sequence[int], draws: int) -> list[int]:
    """``draws`` 63-bit seeds per seed of ``seeds`` (up to 64 bits), seed-major: ``mix(seed ^ mix((d + 1) * gamma))``
    with splitmix64's mixer, all at once (a sample's draw streams, made at every step of an attack: ``derive_seed``'s
    hash per (sample, draw) would cost more than the draws). Stable across runs and platforms."""
    import numpy as np

    base = np.asarray([int(s) for s in seeds], dtype=np.uint64).reshape(-1, 1)
    offsets = (np.arange(1, draws + 1, dtype=np.uint64) * np.uint64(GOLDEN_GAMMA)).reshape(1, -1)
    return (_mix64(base ^ _mix64(offsets)) >> np.uint64(1)).ravel().tolist()


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
