"""Pass accounting: the classifier's forward and backward passes and the purifiers' network evaluations, counted
per sample where they happen and charged to the condition that is running.

Counts are exact and the same on every machine (a batch of N samples through the classifier is N forward passes;
a gradient flowing back through those logits is N backward passes), so they are the unit of an audit's cost.
Hooks on the classifier module and on each purifier's network do the counting; ``charge(key)`` names the condition
the passes belong to, and nothing is counted outside a ``charge`` block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from robaudit.purifiers.checkpointing import probing

if TYPE_CHECKING:
    from robaudit.purifiers.base import Purifier


@dataclass
class PassCount:
    """Sample-passes: classifier ``forward`` and ``backward``, purifier network evaluations (``purifier``: forward,
    not the recomputations of gradient checkpointing) and gradients through the purifier network
    (``purifier_backward``); and ``scoring``: the scoring draws among them (sample-draws, each a pass through the
    scored pipeline; counted by ``count_scoring``, not by a hook)."""

    forward: int = 0
    backward: int = 0
    purifier: int = 0
    purifier_backward: int = 0
    scoring: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class PassCounter:
    """Counts passes through ``classifier`` and through each module of ``purifier_networks`` (forward hooks)."""

    def __init__(self, classifier: nn.Module, purifier_networks: list[nn.Module]) -> None:
        self.counts: dict[str, PassCount] = {}
        self.current: str | None = None
        hooks = [(classifier, self._classifier_pass)] + [(n, self._purifier_pass) for n in purifier_networks]
        for module, hook in hooks:
            for handle in getattr(module, "_robaudit_pass_hooks", []):
                handle.remove()  # a module counts for one counter at a time (the newest)
            module._robaudit_pass_hooks = [module.register_forward_hook(hook)]

    def _bucket(self) -> PassCount | None:
        return None if self.current is None or probing() else self.counts.setdefault(self.current, PassCount())

    def _classifier_pass(self, module: nn.Module, inputs: Any, output: Any) -> None:
        bucket = self._bucket()
        if bucket is None or not isinstance(output, torch.Tensor):
            return
        samples = output.shape[0]
        bucket.forward += samples
        if output.requires_grad:
            output.register_hook(lambda grad: self._backward(bucket, samples))

    @staticmethod
    def _backward(bucket: PassCount, samples: int) -> None:
        bucket.backward += samples

    def _purifier_pass(self, module: nn.Module, inputs: Any, output: Any) -> None:
        bucket = self._bucket()
        if bucket is None or not inputs or not isinstance(inputs[0], torch.Tensor):
            return
        samples = inputs[0].shape[0]
        bucket.purifier += samples
        recomputing = torch._C._current_graph_task_id() != -1  # a checkpoint recomputing inside a backward pass
        fresh = isinstance(output, torch.Tensor) and output is not inputs[0]  # a hook on the input would pile up
        if fresh and output.requires_grad and not recomputing:
            output.register_hook(lambda grad: self._purifier_backward(bucket, samples))

    @staticmethod
    def _purifier_backward(bucket: PassCount, samples: int) -> None:
        bucket.purifier_backward += samples

    @contextlib.contextmanager
    def charge(self, key: str) -> Iterator[None]:
        """Count the passes of the block (and the backward passes of its graphs) under ``key``."""
        previous, self.current = self.current, key
        try:
            yield
        finally:
            self.current = previous

    def count_scoring(self, key: str, draws: int) -> None:
        """Note ``draws`` scoring draws (sample-draws) under ``key``."""
        self.counts.setdefault(key, PassCount()).scoring += draws

    def take(self, key: str) -> PassCount:
        """The passes counted under ``key`` so far, removed from the counter."""
        return self.counts.pop(key, PassCount())


def purifier_network(purifier: Purifier) -> nn.Module:
    """The module a purifier calls once per network evaluation, as the purifier declares it (``evaluated_network``:
    a DDPM's noise predictor, cold diffusion's restorer, ADP's score network, MAEP's autoencoder)."""
    return purifier.evaluated_network
