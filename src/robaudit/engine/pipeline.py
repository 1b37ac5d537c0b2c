"""Pipeline: [purifier ->] classifier, the one object that attacks see and that predictions score.

The threat model is a property of how gradients flow through it:

- ``non-adaptive``: attacks see the classifier alone; the purifier only acts at prediction time (gray-box);
- ``bpda``: the purifier runs forward, its backward pass is the identity (Athalye et al. 2018);
- ``adaptive``: gradients flow through the whole purifier.

One call of a pipeline is one draw of its randomness. Given the rows' own streams (``rng``, a ``SampleRNG``), a
randomized purifier draws each row's noise from its stream: a sample's draws never depend on its batch. A randomized
classifier draws its own noise from the global RNG, so it runs one row at a time under a global RNG seeded from the
row's stream: its records too are the same whatever the batch. One whose every random draw can be given to rows
(``row_draws``: ``row_draws.attributable``, found before the run) runs batched instead, each random operation inside
it answered row by row from the rows' own streams (``row_draws.RowDraws``): the same independence, one call. Without
``rng`` (callers that do not know which samples they hold), the purifier draws from the pipeline's own generator and
the classifier from the global RNG, which robaudit seeds around every attack. A purifier with an ensemble (ADP: K =
10) is part of the pipeline: one call averages the softmax of K purified draws, run as K rows per sample in one batch,
each from its own stream, and returns its log, exactly what a prediction takes the argmax of. EOT -- the mean over
draws of the gradient of the per-draw loss -- is the attacks' job (``attacks.gradient``), never averaged logits.
``layout`` (``draw_layout.DrawLayout``) says how the attacks and scoring run a sample's many draws through the
pipeline: in the batch dimension by default.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from robaudit.errors import ConfigError
from robaudit.purifiers.base import Purifier
from robaudit.purifiers.checkpointing import chain_checkpointing
from robaudit.rng.draw_layout import DrawLayout, by_draw, layout_of, over_rows, rows_of
from robaudit.rng.row_draws import with_row_draws
from robaudit.rng.sample_rng import SampleRNG, is_randomized, per_sample
from robaudit.threats import PIPELINE_THREATS, threat_model


class Pipeline(nn.Module):
    """``classifier(purifier(x))``: images (N, C, H, W) in [0, 1] -> (N, num_classes) scores; one call, one draw.

    The scores are the classifier's logits, or with a purifier ensemble of K > 1 the log of the softmax averaged
    over K purified draws. ``threat`` ("bpda" or "adaptive") sets the purifier's backward pass. ``randomized`` is
    true when the purifier is randomized or the classifier is declared or detected randomized; ``row_draws``: such a
    classifier runs batched, its draws given to rows (``row_draws``), else one row per call. ``graft_draws`` > 0
    makes attacks graft their EOT gradients through that many purifier draws (``attacks.gradient``).
    """

    takes_sample_rng = True  # attacks pass the samples' streams (``attacks.selection.draw``)

    def __init__(
        self,
        classifier: nn.Module,
        purifier: Purifier | None = None,
        *,
        threat: str = "adaptive",
        randomized_classifier: bool = False,
        seed: int = 0,
        graft_draws: int = 0,
        layout: DrawLayout | None = None,
        row_draws: bool = False,
    ) -> None:
        super().__init__()
        if threat not in PIPELINE_THREATS:
            raise ValueError(f"a pipeline differentiates under {' or '.join(PIPELINE_THREATS)}, got {threat!r}")
        self.purifier = purifier
        self.classifier = classifier
        self.threat = threat
        self.randomized_classifier = randomized_classifier
        self.row_draws = randomized_classifier and row_draws
        self.randomized = randomized_classifier or (purifier is not None and is_randomized(purifier))
        self.ensemble = purifier.ensemble if purifier is not None else 1
        if graft_draws and (purifier is None or self.ensemble != 1 or threat != "adaptive"):
            raise ConfigError(
                "gradient grafting needs a purifier without a prediction ensemble, under the adaptive threat"
            )
        self.graft_draws = graft_draws  # > 0: EOT gradients are grafted (attacks.gradient.grafted_gradient)
        self.scoring_draws = 1  # N, the repeats that score its verdicts (the engine sets it; attacks.stopping)
        self.card = classifier.card
        self.layout = layout or DrawLayout()
        self._seed = seed
        self._generators: dict[str, torch.Generator] = {}

    def reseed(self, seed: int) -> None:
        """Restart the purifier's random stream from ``seed``."""
        self._seed = seed
        self._generators.clear()

    def generator(self, device: torch.device) -> torch.Generator:
        """The generator for ``device`` (created from the current seed on first use)."""
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self._seed)
        return self._generators[key]

    def purify(self, images: torch.Tensor, rng: SampleRNG | None = None) -> torch.Tensor:
        """One purified draw (N, C, H, W); under BPDA its gradient is the identity."""
        generator = rng if rng is not None else self.generator(images.device)
        if threat_model(self.threat).purifier_backward == "identity":
            with torch.no_grad():
                purified = self.purifier(images, generator=generator)
            return images + (purified - images).detach()
        if not (torch.is_grad_enabled() and images.requires_grad):
            return self.purifier(images, generator=generator)
        with chain_checkpointing(self.purifier, images):
            return self.purifier(images, generator=generator)

    def classify(self, images: torch.Tensor, rng: SampleRNG | None) -> torch.Tensor:
        """The classifier's logits (N, K); a randomized one under a global RNG seeded from the streams when given."""
        if rng is not None and self.randomized_classifier:
            run = with_row_draws if self.row_draws else per_sample
            return run(self.classifier, images, rng)
        return self.classifier(images)

    def forward(self, images: torch.Tensor, rng: SampleRNG | None = None) -> torch.Tensor:
        """One draw of the pipeline's scores: (N, C, H, W) -> (N, num_classes), from the samples' streams ``rng``."""
        if self.purifier is None:
            return self.classify(images, rng)
        if self.ensemble == 1:
            return self.classify(self.purify(images, rng), rng)
        k = self.ensemble
        streams = rng.split(k) if rng is not None else None
        rows = images.repeat_interleave(k, dim=0)  # sample-major: row i * K + j is sample i's draw j
        scores = self.classify(self.purify(rows, streams), streams).log_softmax(1)
        return scores.view(images.shape[0], k, -1).logsumexp(1) - math.log(k)


@torch.no_grad()
def score(pipeline: Pipeline, images: torch.Tensor, rng: SampleRNG) -> torch.Tensor:
    """Predicted labels (N,) of one scoring draw of ``pipeline`` on (N, C, H, W) images, from the streams ``rng``."""
    return pipeline(images, rng=rng).argmax(1)


@torch.no_grad()
def score_draws(pipeline: nn.Module, images: torch.Tensor, streams: list[SampleRNG]) -> list[torch.Tensor]:
    """Predicted labels (N,) of one scoring draw per stream set of ``streams`` (a repeat each), the draws run in the
    batch dimension as ``pipeline``'s layout says: the same labels as ``score`` called once per repeat."""
    draws = len(streams)
    rows_rng = SampleRNG.interleave(streams)

    def rows_pass(rows: torch.Tensor) -> tuple[torch.Tensor]:
        return (pipeline(rows_of(images, rows, draws), rng=rows_rng[rows]).argmax(1),)

    return by_draw(over_rows(rows_pass, images.shape[0], draws, layout_of(pipeline), images.device)[0], draws)
