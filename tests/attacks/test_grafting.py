"""Gradient grafting (DiffHammer): the classifier's gradients averaged over EOT draws, sent back through one purifier
draw. It equals the full EOT gradient when the purifier's Jacobian does not depend on its draw (a deterministic
purifier; additive noise), and its expectation equals the full EOT gradient on a linear toy whose Jacobian does; the
purifier runs backward once instead of once per draw, and the pass counter sees it."""

from __future__ import annotations

import torch
from torch import nn

from robaudit.attacks.gradient import cross_entropy, eot_gradient
from robaudit.engine.passes import PassCounter, purifier_network
from robaudit.engine.pipeline import Pipeline
from robaudit.purifiers.base import Purifier, randn_like
from toys import NearestMean, WithCard, streams, toy_data


class Times1(nn.Module):
    """A network evaluation that returns a new tensor (what the pass counter hooks)."""

    def forward(self, x):
        return x * 1.0


class Squash(Purifier):
    """A deterministic, non-linear purifier: x -> sigmoid(4 (x - 0.5))."""

    randomized = False

    def __init__(self) -> None:
        super().__init__()
        self.network = Times1()

    def forward(self, images, *, generator=None):
        return torch.sigmoid(4 * (self.network(images) - 0.5))


class AdditiveNoise(Purifier):
    """x + 0.2 z: randomized, with a Jacobian (the identity) that does not depend on the draw."""

    def __init__(self) -> None:
        super().__init__()
        self.network = Times1()

    def forward(self, images, *, generator=None):
        return self.network(images) + 0.2 * randn_like(images, self.generator_for(images, generator))


class RandomGain(Purifier):
    """x * (1 + 0.5 z): randomized, with a Jacobian diag(1 + 0.5 z) that depends on the draw."""

    def __init__(self) -> None:
        super().__init__()
        self.network = Times1()

    def forward(self, images, *, generator=None):
        return self.network(images) * (1 + 0.5 * randn_like(images, self.generator_for(images, generator)))


def setup(purifier: Purifier, *, graft: int, n: int = 8):
    images, labels, means = toy_data(n, seed=1)
    classifier = WithCard(NearestMean(means)).eval()
    return Pipeline(classifier, purifier, threat="adaptive", graft_draws=graft), images, labels


def gradients(purifier: Purifier, *, draws: int, loss=cross_entropy, graft: int = 1):
    full, images, labels = setup(purifier, graft=0)
    grafted, _, _ = setup(purifier, graft=graft)
    g_full, verdict_full, loss_full = eot_gradient(full, images, labels, loss=loss, draws=draws, rng=streams(8, 3))
    g_graft, verdict_graft, loss_graft = eot_gradient(
        grafted, images, labels, loss=loss, draws=draws, rng=streams(8, 3)
    )
    assert torch.equal(verdict_full.correct_fraction, verdict_graft.correct_fraction), "the same draws judged"
    torch.testing.assert_close(loss_full, loss_graft)
    return g_full, g_graft


def test_grafting_equals_the_full_gradient_on_a_deterministic_purifier():
    g_full, g_graft = gradients(Squash(), draws=4)
    assert g_full.abs().sum() > 0
    torch.testing.assert_close(g_graft, g_full, rtol=1e-5, atol=1e-7)


def test_grafting_equals_the_full_eot_gradient_when_the_purifiers_noise_is_additive():
    g_full, g_graft = gradients(AdditiveNoise(), draws=6)
    torch.testing.assert_close(g_graft, g_full, rtol=1e-5, atol=1e-7)


def test_grafted_expectation_equals_the_full_eot_gradient_on_a_linear_toy():
    """Linear classifier, a loss linear in its logits and a gain purifier: E[J(draw)]^T c either way, exactly in
    expectation. One grafting draw has the variance of one Jacobian sample (more EOT draws do not reduce it), so the
    expectation is taken over 4000 grafting draws; both estimates sit within sampling error of the exact value."""
    logit = lambda z, y: z.gather(1, y[:, None]).squeeze(1)  # noqa: E731 - the loss: the true class's logit
    full, images, labels = setup(RandomGain(), graft=0)
    exact = torch.autograd.functional.jacobian(lambda x: logit(full.classifier(x), labels).sum(), images)  # E[gain] = 1
    g_full, g_graft = gradients(RandomGain(), draws=4000, loss=logit, graft=4000)
    assert (g_full - exact).abs().max() < 0.05 * exact.abs().max()
    assert (g_graft - exact).abs().max() < 0.05 * exact.abs().max()


def test_grafting_runs_the_purifier_backward_once_instead_of_once_per_draw():
    counts = {}
    for graft in (0, 1):
        pipeline, images, labels = setup(AdditiveNoise(), graft=graft)
        counter = PassCounter(pipeline.classifier, [purifier_network(pipeline.purifier)])
        with counter.charge("c"):
            eot_gradient(pipeline, images, labels, loss=cross_entropy, draws=8, rng=streams(8, 0))
        counts[graft] = counter.take("c")
    assert counts[0].purifier_backward == 8 * 8 and counts[1].purifier_backward == 1 * 8
    assert counts[0].backward == counts[1].backward == 8 * 8, "the classifier backward runs at every draw either way"
    assert counts[1].purifier == (8 + 1) * 8, "one more purifier forward: the grafting draw"


def test_cheap_gradients_never_change_what_candidates_are_judged_on(digits_test):
    """First law: grafting and the DDIM surrogate change only the backward pass. Judging (no gradient) runs the true
    pipeline -- the same predictions as the full-gradient pipeline's, draw for draw -- so a cheaper gradient can make
    an attack weaker but cannot make a sample count as robust that the true pipeline would break."""
    from robaudit.attacks.selection import judge
    from robaudit.purifiers.base import PURIFIERS, recipe_for
    from tiny import TINY_RECIPES

    recipe = recipe_for("ddpm", TINY_RECIPES["ddpm"])
    network = PURIFIERS.get("ddpm").meta["build"](recipe, [1, 32, 32]).eval()
    true = PURIFIERS.build("ddpm", {"t_star": 0.01, "sampler": "ddpm"}, network).eval()
    surrogate = PURIFIERS.build("ddpm", {"t_star": 0.01, "sampler": "ddpm", "backward_steps": 2}, network).eval()
    images, labels = digits_test.images[:6], digits_test.labels[:6]
    classifier = WithCard(nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))).eval()
    reference = judge(Pipeline(classifier, true), images, labels, draws=3, rng=streams(6, 5))
    for purifier, graft in ((true, 1), (surrogate, 0), (surrogate, 1)):
        cheap = Pipeline(classifier, purifier, threat="adaptive", graft_draws=graft)
        verdict = judge(cheap, images, labels, draws=3, rng=streams(6, 5))
        assert torch.equal(verdict.correct_fraction, reference.correct_fraction)
        torch.testing.assert_close(verdict.loss, reference.loss)
