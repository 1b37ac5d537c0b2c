"""The default batch size: 128 on a CPU; on a CUDA device, as many samples as its free memory holds.

On CUDA the memory one sample costs is measured, not guessed: one gradient of every attacked pipeline on two of the
run's own images (an attack holds one such graph at a time), times the rows a sample takes in it: a randomized
pipeline whose draws run in the batch dimension (``draw_layout``) backpropagates a sample's EOT draws as rows of one
graph, at most ``draw_chunk`` rows at a time. Its purifier chain is inside the measured graph, checkpointed: the
smallest form (a call drops checkpointing where its chain fits, ``purifiers.checkpointing``). The batch is the
largest power of two whose cost fits in a share of the free memory, capped at ``CEILING``. The batch size changes no
record, and a batch that still runs out of memory is run again in halves (``PartExecutor``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from robaudit.attacks.selection import draw
from robaudit.purifiers.checkpointing import forced_checkpointing
from robaudit.rng.draw_layout import layout_of
from robaudit.rng.sample_rng import SampleRNG, is_randomized

CPU_DEFAULT = 128
CEILING = 1024
HEADROOM = 0.6  # share of the free memory a batch may take (the rest: allocator slack, purifier chains' peaks)


def batch_size_for_memory(*, free_bytes: int, per_sample_bytes: float, headroom: float = HEADROOM) -> int:
    """The largest power of two, at most ``CEILING``, whose samples take at most ``headroom`` of ``free_bytes``."""
    if per_sample_bytes <= 0:
        return CEILING
    fits = int(free_bytes * headroom // per_sample_bytes)
    size = 1
    while size * 2 <= min(fits, CEILING):
        size *= 2
    return size


def gradient_bytes_per_sample(
    models: Sequence[nn.Module], images: torch.Tensor, *, rows: Callable[[nn.Module], float] = lambda model: 1
) -> float:
    """Peak CUDA memory (bytes) of one input gradient through the costliest of ``models``, per sample of
    ``images`` (N, C, H, W) on a CUDA device, times ``rows(model)``, the rows one sample takes in that model's
    gradient graph; the models' random draws come from throwaway streams."""
    device = images.device
    rng = SampleRNG.from_seeds(list(range(len(images))), device)
    peak = 0.0
    for model in models:
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        x = images.detach().clone().requires_grad_(True)
        with torch.enable_grad(), forced_checkpointing(True):  # the smallest graph; calls drop it where it fits
            torch.autograd.grad(draw(model, x, rng).sum(), x)
        torch.cuda.synchronize(device)
        peak = max(peak, (torch.cuda.max_memory_allocated(device) - base) * rows(model))
    return peak / len(images)


def gradient_rows(model: nn.Module, *, eot: int) -> Callable[[int], float]:
    """Rows one sample takes in ``model``'s gradient graph when a batch holds ``batch`` samples: ``eot`` on a
    randomized model whose draws run batched (bounded by its layout's ``chunk`` rows over the batch), else 1."""
    layout = layout_of(model)
    if not is_randomized(model) or not layout.batched:
        return lambda batch: 1
    return lambda batch: eot if layout.chunk is None else min(eot, max(1.0, layout.chunk / batch))


def default_batch_size(models: Sequence[nn.Module], images: torch.Tensor, *, eot: int = 1) -> int:
    """``CPU_DEFAULT`` off CUDA; on CUDA the batch that fits the free memory, measured on ``images`` (N, C, H, W),
    counting ``eot`` gradient rows per sample on the randomized models whose draws run batched (``gradient_rows``:
    with a ``draw_chunk``, the largest batch's share of it, ``CEILING``)."""
    if images.device.type != "cuda" or not len(images):
        return CPU_DEFAULT
    per_sample = gradient_bytes_per_sample(models, images, rows=lambda model: gradient_rows(model, eot=eot)(CEILING))
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(images.device)
    return batch_size_for_memory(free_bytes=free, per_sample_bytes=per_sample)
