"""A purifier at its own resolution in front of a classifier at another: differentiable resizes inside the attacked
pipeline, both ways (a 48 px classifier with a 32 px purifier, and the reverse); gradients reach the input under the
adaptive threat; on a toy the adaptive attack breaks at least as many samples as BPDA, which a bridge that cut the
gradients would fail."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robaudit.attacks import build_attack, resolve_attack, run_attack
from robaudit.data import load_dataset
from robaudit.engine.pipeline import Pipeline, score
from robaudit.models.classifiers import load_classifier
from robaudit.purifiers.base import PURIFIERS
from robaudit.purifiers.bridge import ResolutionBridge, bridged
from robaudit.purifiers.factories import network_from_factory
from toys import streams


def tiny_ddpm(size: int, channels: int = 1, **params) -> nn.Module:
    network, card = network_from_factory(
        {"factory": "tiny_factory:tiny_noise_predictor", "kwargs": {"image_size": size, "channels": channels}},
        kind="ddpm",
        trust_code=True,
    )
    purifier = PURIFIERS.build("ddpm", {"t_star": 0.01, "steps": 2, **params}, network)
    assert card["input_size"] == [channels, size, size]
    return purifier.eval()


class SmallCNN(nn.Module):
    """A classifier for (N, 1, H, W) images of any size, with the card the attack path reads."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.head = nn.Linear(64, 10)
        self.card = type("Card", (), {"num_classes": 10})()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))


@pytest.mark.parametrize(("classifier_size", "purifier_size"), [(48, 32), (32, 48)])
def test_the_bridge_keeps_the_classifiers_size_and_passes_gradients(classifier_size, purifier_size):
    purifier = bridged(
        tiny_ddpm(purifier_size),
        purifier_shape=[1, purifier_size, purifier_size],
        input_shape=(1, classifier_size, classifier_size),
    )
    assert isinstance(purifier, ResolutionBridge)
    assert purifier.description() == f"{classifier_size} -> {purifier_size} (bicubic) -> purify -> {classifier_size}"
    images = torch.rand(3, 1, classifier_size, classifier_size, requires_grad=True)
    pipeline = Pipeline(SmallCNN().eval(), purifier, threat="adaptive")
    logits = pipeline(images, rng=streams(3, 0))
    assert logits.shape == (3, 10)
    logits.sum().backward()
    gradient = images.grad
    assert gradient is not None and torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    with torch.no_grad():
        assert purifier(images, generator=streams(3, 0)).shape == images.shape


def test_a_purifier_at_the_classifiers_size_is_not_bridged_and_channels_must_agree():
    purifier = tiny_ddpm(32)
    assert bridged(purifier, purifier_shape=[1, 32, 32], input_shape=(1, 32, 32)) is purifier
    from robaudit.errors import ConfigError

    with pytest.raises(ConfigError, match="1-channel images but the classifier's input has 3"):
        bridged(purifier, purifier_shape=[1, 32, 32], input_shape=(3, 32, 32))


def test_through_the_bridge_the_adaptive_attack_breaks_at_least_as_many_samples_as_bpda(digits_model_path):
    """The digits ViT (32 px) behind a 48 px purifier: 32 -> 48 -> purify -> 32."""
    classifier = load_classifier(digits_model_path).eval()
    data = load_dataset("digits", split="test", limit=32)
    purifier = bridged(tiny_ddpm(48), purifier_shape=[1, 48, 48], input_shape=(1, 32, 32))
    robust = {}
    for threat in ("bpda", "adaptive"):
        pipeline = Pipeline(classifier, purifier, threat=threat)
        resolved = resolve_attack("pgd", {"steps": 10}, eps=4 / 255, eps_l2=0.5)
        attack = build_attack(resolved, pipeline, num_classes=10, seed=0, eot=2, draws=2)
        adversarial = run_attack(attack, resolved, data.images, data.labels, rng=streams(32, 0), seed=0)
        assert (adversarial - data.images).abs().max() <= 4 / 255 + 1e-6
        draws = torch.stack([score(pipeline, adversarial, streams(32, 100 + r)) == data.labels for r in range(4)])
        robust[threat] = int(draws.all(0).sum())
    clean = torch.stack([score(Pipeline(classifier, purifier), data.images, streams(32, 200 + r)) for r in range(4)])
    assert int((clean == data.labels).all(0).sum()) - robust["bpda"] >= 5, "BPDA breaks samples: the toy measures"
    assert robust["adaptive"] <= robust["bpda"], robust
