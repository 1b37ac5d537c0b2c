"""``--compile``: classifiers and purifier networks compiled with ``torch.compile`` in place, pass-counting hooks
kept outside the compiled graphs (it changes speed, never records)."""

from __future__ import annotations

import torch
from torch import nn


def compile_classifier(classifier: nn.Module, *, mode: str | None = None) -> bool:
    """``torch.compile`` the network inside ``classifier`` in place (its ``net``; the classifier itself when it has
    none), so hooks on the classifier -- pass counting -- stay outside the compiled graph. Compiled once, cached
    across batches (shapes that recur reuse their graph). A convolutional network is also put in channels-last
    memory layout, which the CPU and GPU convolution kernels run faster. ``mode``: torch.compile's (None: its
    default; ``reduce-overhead`` adds CUDA graphs, measured by ``bench/throughput.py --compile-mode``). A TorchScript
    network is left as it is (torch.compile cannot trace TorchScript): returns whether the network was compiled."""
    inner = getattr(classifier, "net", None)
    target = inner if isinstance(inner, nn.Module) else classifier
    if isinstance(target, torch.jit.ScriptModule):
        return False
    target.requires_grad_(False)
    to_channels_last(target)
    target.compile(mode=mode)
    return True


def compile_network(network: nn.Module, *, mode: str | None = None) -> nn.Module:
    """``torch.compile`` a purifier's evaluated network (``engine.passes.purifier_network``: a U-Net, an autoencoder)
    in place. Hooks run around ``forward``, so pass counting stays outside the compiled graph, as does the purifier's
    Python-level sampling schedule. A network that checkpoints its own evaluation (``compile_evaluation``,
    ``purifiers.checkpointing.CheckpointedEvaluation``) compiles the evaluation inside its checkpoint; any other
    compiles its ``forward``. Parameters are frozen (input gradients only); convolutional networks go channels-last.
    ``mode``: torch.compile's, as for ``compile_classifier``."""
    network.requires_grad_(False)
    to_channels_last(network)
    compile_evaluation = getattr(network, "compile_evaluation", None)
    if callable(compile_evaluation):
        compile_evaluation(mode=mode)
    else:
        network.forward = torch.compile(network.forward, mode=mode)
    return network


def to_channels_last(module: nn.Module) -> None:
    """Put ``module``'s 4-d parameters in channels-last layout when it has convolutions (no change otherwise)."""
    if any(isinstance(m, nn.Conv2d) for m in module.modules()):
        module.to(memory_format=torch.channels_last)
