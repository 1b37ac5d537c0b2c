"""EOT that grows where the attack stalls on gradient noise (``attacks.eot_growth``): the rule's decisions and their
error rates, simulated; growth per sample, capped, independent of the batch; the rung that uses it."""

from __future__ import annotations

import torch
from torch import nn

from robaudit.attacks import resolve_attack
from robaudit.attacks.eot_growth import RESOLVED_SHARE, GrowingEOT
from robaudit.attacks.gradient import SignResolution, cross_entropy, eot_gradient
from robaudit.engine.convergence import ConvergenceSpec, rungs_for
from robaudit.engine.pipeline import Pipeline
from toys import WithCard, streams


def grown(mean: float, *, n: int = 20_000, coordinates: int = 64, draws: int = 4) -> float:
    """The share of ``n`` simulated samples the rule grows: ``draws`` gradients whose ``coordinates`` are a
    ``mean`` plus standard normal noise."""
    generator = torch.Generator().manual_seed(0)
    spread = SignResolution()
    for _ in range(draws):
        spread.add(mean + torch.randn(n, coordinates, generator=generator))
    return float((spread.resolved_share() < RESOLVED_SHARE).float().mean())


def test_the_rule_grows_pure_noise_and_leaves_a_resolved_signal():
    """Its two errors, measured on 20,000 samples each at D = 4: a gradient that is pure noise (mean 0) is always
    grown; one whose coordinates have a mean of 1.5 standard deviations of a draw is never grown. The boundary sits
    near a mean of 1 standard deviation, where the mean of 4 draws is 2 standard errors from 0."""
    assert grown(0.0) == 1.0
    assert grown(1.5) == 0.0
    assert 0.02 < grown(1.0) < 0.5 < grown(0.5)


class NoisyWhereFlagged(nn.Module):
    """Logits of a linear map of x times (1 + s noise), s set by the sample's first pixel: 0 gives the same gradient
    in every draw, 1 a gradient whose every coordinate is drowned in noise."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.linspace(-1, 1, 48).view(3, 16))
            self.fc.bias.zero_()  # not left to the global RNG: the same toy in every run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        scale = 20 * x[:, :1].detach()
        return self.fc(x * (1 + scale * torch.randn_like(x)))


def flagged_batch(n: int = 8) -> tuple[Pipeline, torch.Tensor, torch.Tensor]:
    model = WithCard(NoisyWhereFlagged(), num_classes=3).eval()
    pipeline = Pipeline(model, randomized_classifier=True, row_draws=True)
    images = torch.full((n, 1, 4, 4), 0.5)
    images[:, 0, 0, 0] = torch.tensor([0.0, 1.0] * (n // 2))  # even samples quiet, odd ones noisy
    return pipeline, images, torch.zeros(n, dtype=torch.long)


def test_draws_double_only_where_the_signs_are_unresolved_up_to_the_cap():
    pipeline, images, labels = flagged_batch()
    growing = GrowingEOT(pipeline, len(labels), eot=2, growth=4, mode="mean", device=images.device)
    index, rng = torch.arange(len(labels)), streams(len(labels), seed=1)
    for expected in ([2, 4], [2, 8], [2, 8]):
        growing(images, labels, index, rng, lambda index: cross_entropy)
        assert growing.draws[0::2].tolist() == [expected[0]] * 4 and growing.draws[1::2].tolist() == [expected[1]] * 4


def test_a_sample_grows_and_draws_the_same_whatever_the_samples_beside_it():
    pipeline, images, labels = flagged_batch()
    chosen = torch.tensor([1, 2, 5])
    together = GrowingEOT(pipeline, 8, eot=2, growth=4, mode="mean", device=images.device)
    apart = GrowingEOT(pipeline, 3, eot=2, growth=4, mode="mean", device=images.device)
    rng_all, rng_chosen = streams(8, seed=2), streams(8, seed=2)[chosen]
    for _ in range(3):
        grad, verdict, _ = together(images, labels, torch.arange(8), rng_all, lambda index: cross_entropy)
        alone = apart(images[chosen], labels[chosen], torch.arange(3), rng_chosen, lambda index: cross_entropy)
        scale = float(grad[chosen].abs().max())  # batched matmuls: float rounding, relative to the gradient's size
        assert torch.allclose(alone[0], grad[chosen], rtol=1e-5, atol=1e-6 * scale)
        assert torch.equal(alone[1].correct_fraction, verdict.correct_fraction[chosen])
        assert together.draws[chosen].tolist() == apart.draws.tolist()


def test_without_growth_the_gradient_is_eot_gradient():
    pipeline, images, labels = flagged_batch()
    fixed = GrowingEOT(pipeline, 8, eot=4, growth=1, mode="mean", device=images.device)
    a = fixed(images, labels, torch.arange(8), streams(8, seed=3), lambda index: cross_entropy)[0]
    b = eot_gradient(pipeline, images, labels, loss=cross_entropy, draws=4, rng=streams(8, seed=3))[0]
    assert torch.equal(a, b)


def test_the_pgd_rung_grows_its_eot_from_the_base_instead_of_doubling_it_everywhere():
    pgd = resolve_attack("pgd", {"steps": 10}, eps=8 / 255, eps_l2=0.5)
    (rung,) = rungs_for(pgd, ConvergenceSpec.parse("check"))
    assert rung.params["eot_growth"] == 2 and rung.eot_scale == 1 and rung.params["randomized_steps"] == 10
    autoattack = resolve_attack("autoattack", {"version": "rand"}, eps=8 / 255, eps_l2=0.5)
    (aa_rung,) = rungs_for(autoattack, ConvergenceSpec.parse("check"))
    assert aa_rung.eot_scale == 2, "AutoAttack-rand's rung keeps 2x EOT: it restores AutoAttack-rand's own 20"
