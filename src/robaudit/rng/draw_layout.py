"""How a randomized pipeline's draws run: in the batch dimension, as rows of one batch, or one draw at a time.

EOT draws, selection draws, scoring repeats and a purifier ensemble's draws are *rows*: N samples x D draws, laid out
sample-major (row ``i * D + d`` is sample i's draw d), each row with its own random stream
(``SampleRNG.split`` / ``SampleRNG.interleave``). A ``DrawLayout`` says which rows go through the pipeline together:

- ``batched`` (the default): consecutive rows in chunks of ``chunk`` rows (None: all N x D at once), so the D draws
  of one sample sit in one chunk wherever they fit -- the hardware sees large batches instead of D small ones;
- looped (``batched=False``): one draw at a time, the N rows of draw d together, as robaudit ran before.

Every row draws only from its own stream, so a sample's records are identical whatever the layout, the chunk size,
the batch size or the number of processes. The layout lives on the model robaudit attacks (``Pipeline.layout``);
a model without one runs batched, all rows at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from robaudit.rng.sample_rng import SampleRNG, is_randomized


@dataclass(frozen=True)
class DrawLayout:
    """``batched``: rows run sample-major in chunks of ``chunk`` rows (None: all at once); else draw by draw."""

    batched: bool = True
    chunk: int | None = None

    def row_groups(self, samples: int, draws: int, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """The row indices (into the N x D sample-major rows) that run together, in the order they run."""
        rows = samples * draws
        if not self.batched:
            return [torch.arange(samples, device=device) * draws + d for d in range(draws)]
        size = rows if self.chunk is None else max(1, int(self.chunk))
        return [torch.arange(start, min(rows, start + size), device=device) for start in range(0, rows, size)]


def layout_of(model: object) -> DrawLayout:
    """The draw layout ``model`` carries (``Pipeline.layout``), else batched, all rows at once."""
    layout = getattr(model, "layout", None)
    return layout if isinstance(layout, DrawLayout) else DrawLayout()


def over_rows(
    fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], samples: int, draws: int, layout: DrawLayout, device
) -> tuple[torch.Tensor, ...]:
    """Run ``fn(rows)`` (the row indices of one group -> tensors with one leading entry per row) group by group and
    put each output's rows back in sample-major order: tensors of N x D rows."""
    groups = layout.row_groups(samples, draws, device)
    if len(groups) == 1:  # every row at once, in order
        return tuple(fn(groups[0]))
    outputs: list[torch.Tensor] = []
    for rows in groups:
        for k, value in enumerate(fn(rows)):
            if len(outputs) <= k:
                outputs.append(value.new_empty((samples * draws, *value.shape[1:])))
            outputs[k][rows] = value
    return tuple(outputs)


def draw_streams(model: object, rng: SampleRNG | None, draws: int) -> Callable[[torch.Tensor], SampleRNG | None]:
    """Rows -> their streams: on a randomized ``model``, every (sample, draw) row its own (``SampleRNG.split``); on
    a deterministic one the samples' own streams (it draws nothing), or None without ``rng``."""
    if rng is None:
        return lambda rows: None
    if is_randomized(model):
        streams = rng.split(draws)
        return lambda rows: streams[rows]
    return lambda rows: rng[rows // draws]


def rows_of(images: torch.Tensor, rows: torch.Tensor, draws: int) -> torch.Tensor:
    """The images (N, ...) of the sample-major ``rows`` of their ``draws`` draws (R, ...)."""
    if draws == 1 and len(rows) == images.shape[0]:
        return images  # one draw of every sample, in order: no copy
    return images[rows // draws]


def by_draw(rows: torch.Tensor, draws: int) -> list[torch.Tensor]:
    """N x D sample-major rows (N * D, ...) as D tensors (N, ...), one per draw."""
    if draws == 1:
        return [rows]
    return list(rows.view(-1, draws, *rows.shape[1:]).transpose(0, 1).contiguous().unbind(0))
