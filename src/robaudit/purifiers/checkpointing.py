"""Gradient checkpointing of a purifier's network evaluations: on only where the chain's saved activations would not
fit in memory.

An adaptive gradient through a purifier keeps every network evaluation's activations until the backward pass. For a
long chain on a large batch that is more than the device holds, so the U-Nets can checkpoint each evaluation: keep
its input, recompute the rest during the backward pass. That costs one more forward evaluation per step (about a
third of the gradient's time), and buys nothing when the activations fit. So the decision is measured: one probe
purification of one row (a fixed generator, never a sample's stream; its evaluations are not counted) records the
bytes the chain saves per row, and a differentiated call checkpoints when rows x that exceed the budget (half of
the CUDA device's free memory; on a CPU half the available memory, at most a quarter of the machine's).
Checkpointing changes memory and speed, never values: the recomputed evaluation is the same computation on the same
input.

A network reads the decision with ``checkpointing_wanted()``; its own ``gradient_checkpointing`` attribute, when set
to True or False, overrides it (``bench/purifier_gradient_memory.py`` measures both). ``CheckpointedEvaluation`` is
such a network: its ``evaluate`` is the computation a checkpoint keeps the input of, and what ``--compile`` compiles
(inductor cannot partition a checkpoint compiled together with its body, so the checkpoint stays outside).
"""

from __future__ import annotations

import abc
import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_WANTED: ContextVar[bool] = ContextVar("robaudit_checkpointing", default=True)
_PROBING: ContextVar[bool] = ContextVar("robaudit_chain_probe", default=False)
_FORCED: ContextVar[bool | None] = ContextVar("robaudit_checkpointing_forced", default=None)


def checkpointing_wanted(override: bool | None = None) -> bool:
    """Whether a network evaluation under a gradient checkpoints: ``override`` when set, else the decision of the
    enclosing ``chain_checkpointing`` (checkpointing by default, outside any)."""
    return _WANTED.get() if override is None else override


def probing() -> bool:
    """Whether the current evaluations are the memory probe's (pass counters skip them)."""
    return _PROBING.get()


@contextlib.contextmanager
def _set(var: ContextVar[bool], value: bool) -> Iterator[None]:
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def memory_budget(device: torch.device) -> int:
    """Bytes a chain's saved activations may take: half of ``device``'s free memory at the call on CUDA (the batch
    is sized on the checkpointed graph, ``engine.batching``); on a CPU, half of the memory available now, at most a
    quarter of the machine's."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return min(physical // 4, available_memory(default=physical // 2) // 2)


def available_memory(*, default: int) -> int:
    """The memory the OS can give now (Linux's MemAvailable), else ``default``."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return default


def saved_bytes_per_row(purifier: nn.Module, images: torch.Tensor) -> int:
    """Bytes the autograd graph of one differentiated purification of one row of ``images`` (N, C, H, W) saves,
    checkpointing off, weights left out; measured once per purifier, image shape, dtype and device."""
    key = (tuple(images.shape[1:]), images.dtype, str(images.device))
    cache = purifier.__dict__.setdefault("_robaudit_saved_bytes", {})
    if key not in cache:
        cache[key] = probe_saved_bytes(purifier, images[:1].detach().clone().requires_grad_(True))
    return cache[key]


def probe_saved_bytes(purifier: nn.Module, row: torch.Tensor) -> int:
    """Bytes of the tensors (weights left out) that autograd saves while ``purifier`` purifies ``row`` (1, C, H, W)
    with a fixed generator and checkpointing off; the evaluations are not counted."""
    weights = {p.untyped_storage().data_ptr() for p in purifier.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    generator = torch.Generator(device=row.device).manual_seed(0)
    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)
    with torch.enable_grad(), _set(_WANTED, False), _set(_PROBING, True), hooks:
        purifier(row, generator=generator)
    return sum(storages.values())


@contextlib.contextmanager
def chain_checkpointing(purifier: nn.Module, images: torch.Tensor) -> Iterator[bool]:
    """Decide checkpointing for a differentiated purification of ``images`` (N, C, H, W) by ``purifier``: on when
    the rows' saved activations would exceed ``memory_budget``, or as ``forced_checkpointing`` forces it. Yields
    the decision."""
    needed = _FORCED.get()
    if needed is None:
        needed = saved_bytes_per_row(purifier, images) * images.shape[0] > memory_budget(images.device)
    with _set(_WANTED, needed):
        yield needed


@contextlib.contextmanager
def forced_checkpointing(on: bool) -> Iterator[None]:
    """Every differentiated purification inside checkpoints (``on``) or not, whatever it would measure: the CUDA
    batch size is measured on the checkpointed graph, the smallest, and the calls then drop checkpointing only where
    the chain fits."""
    with _set(_FORCED, on):
        yield


class CheckpointedEvaluation(nn.Module, abc.ABC):
    """A purifier's network evaluation ``net(x, level)``: (N, C, H, W), (N,) long -> (N, C, H, W), checkpointed when
    an attack differentiates it and ``checkpointing_wanted`` says so (``gradient_checkpointing`` True or False forces
    it; None: as the enclosing ``chain_checkpointing`` decides). Subclasses implement ``evaluate``."""

    gradient_checkpointing: bool | None = None

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W), level: (N,) long -> (N, C, H, W)."""
        wanted = checkpointing_wanted(self.gradient_checkpointing)
        if wanted and torch.is_grad_enabled() and x.requires_grad and not self.training:
            return checkpoint(self.evaluate, x, level, use_reentrant=False)
        return self.evaluate(x, level)

    @abc.abstractmethod
    def evaluate(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """The evaluation itself, (N, C, H, W), (N,) -> (N, C, H, W): what a checkpoint recomputes."""

    def compile_evaluation(self, **options: object) -> None:
        """``torch.compile`` ``evaluate`` in place (``options``: torch.compile's), leaving the checkpoint around it
        eager: inductor fails to partition a checkpoint traced with its body ("Node ... was invalid, but is
        output"), and the batch-size measurement on CUDA differentiates every chain checkpointed."""
        self.evaluate = torch.compile(self.evaluate, **options)
