"""DefendedModel: purifier then classifier, the one object attacks and evaluation see.

The threat model is a property of how gradients flow through it:

- ``non-adaptive``: attacks see the classifier alone; the purifier only acts at prediction time (gray-box);
- ``bpda``: the purifier runs forward, its backward pass is the identity (Athalye et al. 2018);
- ``adaptive``: gradients flow through the whole purifier; for a stochastic purifier the logits are averaged over
  ``eot`` independent draws (EOT), so the gradient is the mean of the per-draw gradients.
"""

from __future__ import annotations

import torch
from torch import nn

from robaudit.purifiers.base import Purifier

THREATS = ("non-adaptive", "bpda", "adaptive")
THREAT_DESCRIPTIONS = {
    "none": "undefended classifier, white-box",
    "non-adaptive": "adversarial examples made against the classifier alone, then purified (gray-box)",
    "bpda": "purifier forward, identity backward (BPDA), EOT over the purifier's randomness",
    "adaptive": "gradients through the whole purifier, EOT over its randomness",
}


class DefendedModel(nn.Module):
    """``classifier(purifier(x))`` for images (N, C, H, W) in [0, 1] -> logits (N, num_classes).

    ``threat`` sets the backward pass ("bpda" or "adaptive"); ``eot`` draws are averaged per forward when the
    purifier is stochastic. All purifier randomness comes from ``self.generator`` (reseed with ``reseed``).
    """

    def __init__(
        self, purifier: Purifier, classifier: nn.Module, *, threat: str = "adaptive", eot: int = 1, seed: int = 0
    ) -> None:
        super().__init__()
        if threat not in ("bpda", "adaptive"):
            raise ValueError(f"DefendedModel differentiates under 'bpda' or 'adaptive', got {threat!r}")
        self.purifier = purifier
        self.classifier = classifier
        self.threat = threat
        self.eot = eot if purifier.stochastic else 1
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
        """Purified images; under BPDA their gradient is the identity."""
        generator = self.generator(images.device)
        if self.threat == "bpda":
            with torch.no_grad():
                purified = self.purifier(images, generator=generator)
            return images + (purified - images).detach()
        return self.purifier(images, generator=generator)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits averaged over ``eot`` purification draws: (N, C, H, W) -> (N, num_classes)."""
        total = 0
        for _ in range(self.eot):
            total = total + self.classifier(self.purify(images))
        return total / self.eot


@torch.no_grad()
def defended_predict(
    purifier: Purifier | None, classifier: nn.Module, images: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Predicted labels (N,) of the defended pipeline: softmax averaged over ``purifier.ensemble`` draws."""
    if purifier is None:
        return classifier(images).argmax(1)
    probabilities = 0
    for _ in range(purifier.ensemble):
        probabilities = probabilities + classifier(purifier(images, generator=generator)).softmax(1)
    return probabilities.argmax(1)
