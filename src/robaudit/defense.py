"""Pipeline: [purifier ->] classifier, the one object that attacks see and that predictions score.

The threat model is a property of how gradients flow through it:

- ``non-adaptive``: attacks see the classifier alone; the purifier only acts at prediction time (gray-box);
- ``bpda``: the purifier runs forward, its backward pass is the identity (Athalye et al. 2018);
- ``adaptive``: gradients flow through the whole purifier.

One call of a pipeline is one draw of its randomness (a stochastic purifier's noise, drawn from the pipeline's
generator; a randomized classifier's noise, drawn from the global RNG, which robaudit seeds around every attack and
every prediction). A purifier with an ensemble (ADP: K = 10) is part of the pipeline: one call averages the softmax
of K purified draws and returns its log, exactly what a prediction takes the argmax of. EOT -- the mean over draws
of the gradient of the per-draw loss -- is the attacks' job (``attacks.gradient``), never averaged logits.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from robaudit.purifiers.base import Purifier
from robaudit.seeding import isolated_global_rng

THREATS = ("non-adaptive", "bpda", "adaptive")
THREAT_DESCRIPTIONS = {
    "none": "undefended classifier, white-box",
    "non-adaptive": "adversarial examples made against the classifier alone, then purified (gray-box)",
    "bpda": "purifier forward, identity backward (BPDA), EOT over the pipeline's randomness",
    "adaptive": "gradients through the whole purifier, EOT over the pipeline's randomness",
}


class Pipeline(nn.Module):
    """``classifier(purifier(x))``: images (N, C, H, W) in [0, 1] -> (N, num_classes) scores; one call, one draw.

    The scores are the classifier's logits, or with a purifier ensemble of K > 1 the log of the softmax averaged
    over K purified draws. ``threat`` ("bpda" or "adaptive") sets the purifier's backward pass. ``stochastic`` is
    true when the purifier is stochastic or the classifier is declared or detected randomized.
    """

    def __init__(
        self,
        classifier: nn.Module,
        purifier: Purifier | None = None,
        *,
        threat: str = "adaptive",
        stochastic_classifier: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if threat not in ("bpda", "adaptive"):
            raise ValueError(f"a pipeline differentiates under 'bpda' or 'adaptive', got {threat!r}")
        self.purifier = purifier
        self.classifier = classifier
        self.threat = threat
        self.stochastic = stochastic_classifier or (purifier is not None and purifier.stochastic)
        self.ensemble = purifier.ensemble if purifier is not None else 1
        self.card = classifier.card
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

    def purify(self, images: torch.Tensor) -> torch.Tensor:
        """One purified draw (N, C, H, W); under BPDA its gradient is the identity."""
        generator = self.generator(images.device)
        if self.threat == "bpda":
            with torch.no_grad():
                purified = self.purifier(images, generator=generator)
            return images + (purified - images).detach()
        return self.purifier(images, generator=generator)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """One draw of the pipeline's scores: (N, C, H, W) -> (N, num_classes)."""
        if self.purifier is None:
            return self.classifier(images)
        if self.ensemble == 1:
            return self.classifier(self.purify(images))
        log_probs = torch.stack([self.classifier(self.purify(images)).log_softmax(1) for _ in range(self.ensemble)])
        return log_probs.logsumexp(0) - math.log(self.ensemble)


@torch.no_grad()
def score(pipeline: Pipeline, images: torch.Tensor, *, seed: int) -> torch.Tensor:
    """Predicted labels (N,) of one scoring draw of ``pipeline``, all its randomness seeded by ``seed``."""
    pipeline.reseed(seed)
    with isolated_global_rng(seed, images.device):
        return pipeline(images).argmax(1)
