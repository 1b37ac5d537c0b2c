"""Randomized smoothing's statistics and the smoothed classifier, against known answers: Clopper-Pearson bounds
against the binomial tail they invert, a linear classifier's exact robustness radius, an even vote, a schedule's
matched step, and counts that do not depend on the batch size."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import beta, binom
from torch import nn

from robaudit.certify.bounds import ABSTAIN, certify_from_counts, clopper_pearson_lower, predict_from_counts
from robaudit.certify.sequential import StoppingRule
from robaudit.certify.smoothing import OneShotDenoiser, SmoothedClassifier
from robaudit.certify.timestep import diffused, matched_timestep, noise_levels
from tiny import TINY_RECIPES


@pytest.mark.parametrize(("successes", "trials", "alpha"), [(10, 10, 0.05), (990, 1000, 0.001), (60, 100, 0.01)])
def test_clopper_pearson_is_the_binomial_tail_inverted(successes, trials, alpha):
    bound = clopper_pearson_lower(successes, trials, alpha=alpha)
    assert bound == pytest.approx(beta.ppf(alpha, successes, trials - successes + 1), rel=1e-12)
    # at the bound, seeing at least `successes` has probability alpha: the one-sided interval's definition
    assert binom.sf(successes - 1, trials, bound) == pytest.approx(alpha, rel=1e-6)


def test_clopper_pearson_known_values():
    assert clopper_pearson_lower(10, 10, alpha=0.05) == pytest.approx(0.05 ** (1 / 10), rel=1e-12)  # all successes
    assert clopper_pearson_lower(0, 10, alpha=0.05) == 0.0
    with pytest.raises(ValueError, match="alpha"):
        clopper_pearson_lower(5, 10, alpha=1.0)


class Linear(nn.Module):
    """Binary f(x) = sign(w.x + b) as two logits, on (N, 1, 1, D) inputs."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        margin = x.flatten(1).double() @ self.w.double() + self.b
        return torch.stack([-margin, margin], 1)


@pytest.mark.parametrize("mode", ["fixed", "sequential radius"])
def test_a_smoothed_linear_classifier_certifies_at_most_its_true_radius_and_close_to_it(mode):
    """Gaussian smoothing leaves a linear classifier unchanged; its true L2 radius at x is |w.x + b| / ||w||."""
    torch.manual_seed(0)
    w, b, sigma = torch.tensor([3.0, -4.0]), 0.2, 0.5
    points = torch.randn(12, 1, 1, 2) * 0.6
    true_radius = ((points.flatten(1) @ w + b).abs() / w.norm()).tolist()
    smoothed = SmoothedClassifier(Linear(w, b), sigma=sigma, num_classes=2, batch_size=20_000)
    if mode == "fixed":
        certificates = smoothed.certify(points, list(range(12)), n0=100, n=100_000, alpha=0.001)
    else:
        rule = StoppingRule(100_000, 0.001, stop="radius", tolerance=0.02)
        certificates = smoothed.certify_sequential(points, list(range(12)), n0=100, rule=rule)
    close = 0
    for certificate, radius in zip(certificates, true_radius, strict=True):
        assert certificate.radius <= radius + 1e-9
        if 0.1 * sigma <= radius <= 2 * sigma:  # where the margin allows: p_A far enough from 1/2 and from 1
            assert certificate.radius >= 0.9 * radius, (certificate, radius)
            close += 1
    assert close >= 4


class CoinFlip(nn.Module):
    """A classifier whose answer is the sign of its input's first pixel: at x = 0 an even vote under noise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x.flatten(1)[:, 0]
        return torch.stack([-first, first], 1)


def test_an_even_vote_abstains():
    smoothed = SmoothedClassifier(CoinFlip(), sigma=0.25, num_classes=2)
    images = torch.zeros(4, 1, 2, 2)
    assert all(c.abstained and c.radius == 0 for c in smoothed.certify(images, [0, 1, 2, 3], n0=50, n=2000, alpha=0.01))
    assert smoothed.predict(images, [0, 1, 2, 3], n=2000, alpha=0.001).count(ABSTAIN) >= 3
    assert certify_from_counts([30, 20], [480, 520], sigma=0.25, alpha=0.001).abstained
    assert (
        predict_from_counts([500, 495, 5], alpha=0.01) == ABSTAIN and predict_from_counts([900, 100], alpha=0.01) == 0
    )


def test_the_counts_do_not_depend_on_the_batch_size():
    w = torch.tensor([1.0, 1.0, -1.0, 0.5])
    images = torch.rand(5, 1, 2, 2)
    counts = [
        SmoothedClassifier(Linear(w, 0.0), sigma=0.5, num_classes=2, batch_size=size).counts(images, [7] * 5, draws=333)
        for size in (1, 64, 5000)
    ]
    assert torch.equal(counts[0], counts[1]) and torch.equal(counts[0], counts[2])
    assert counts[0].sum(1).tolist() == [333] * 5


def schedule_with_level(level: float, *, steps: int = 50) -> torch.Tensor:
    """alphas_cumprod of a linear-beta schedule, with step 20 moved to the noise level ``level`` exactly."""
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, steps), 0)
    abar[20] = 1 / (1 + level**2)
    return torch.sort(abar, descending=True).values


def test_the_matched_step_diffuses_the_image_as_the_forward_process_does():
    """With s_t = 2 sigma (a [-1, 1] model doubles sigma), x_t = sqrt(abar_t)(x + sigma * noise) in the model's range
    is exactly the forward process q(x_t | x_0) at t."""
    sigma = 0.25
    abar = schedule_with_level(2 * sigma)
    t = matched_timestep(abar, sigma, value_range="[-1, 1]")
    assert noise_levels(abar)[t].item() == pytest.approx(2 * sigma, rel=1e-6)
    assert matched_timestep(abar, sigma, value_range="[0, 1]") != t  # the range matters
    images, noise = torch.rand(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    x_t = diffused(images, noise, sigma=sigma, abar=float(abar[t]), value_range="[-1, 1]")
    forward = abar[t].sqrt() * (2 * images - 1) + (1 - abar[t]).sqrt() * noise
    assert torch.allclose(x_t, forward, atol=1e-5)
    with pytest.raises(ValueError, match="sigma"):
        matched_timestep(abar, 0.0)


@pytest.fixture
def tiny_ddpm_network() -> nn.Module:
    """An untrained tiny DDPM network on 1x16x16 images (the tiny recipe its registration declares)."""
    from robaudit.purifiers import recipe_for
    from robaudit.purifiers.diffusion import DDPMNetwork

    torch.manual_seed(0)
    return DDPMNetwork(recipe_for("ddpm", TINY_RECIPES["ddpm"]), [1, 16, 16]).eval()


def test_one_shot_denoising_returns_images_in_range(tiny_ddpm_network):
    denoiser = OneShotDenoiser.matched(tiny_ddpm_network, sigma=0.5)
    assert 0 < denoiser.timestep < tiny_ddpm_network.num_timesteps
    out = denoiser(
        torch.rand(6, *tiny_ddpm_network.input_size), torch.randn(6, *tiny_ddpm_network.input_size), sigma=0.5
    )
    assert out.shape == (6, *tiny_ddpm_network.input_size) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert math.isfinite(float(out.sum()))


def test_smooth_adv_stays_in_the_l2_ball_and_in_range_and_moves_a_linear_classifier():
    """The attack's own output respects eps and [0, 1]; on a linear classifier it crosses the boundary exactly where
    the true radius is below eps, and PREDICT sees it."""
    from robaudit.certify.attack import smooth_adv

    w, b, sigma = torch.tensor([1.0, -1.0, 0.5, 0.5]), 0.0, 0.25
    images = torch.tensor([[0.55, 0.45, 0.5, 0.5], [0.9, 0.1, 0.8, 0.8], [0.2, 0.8, 0.1, 0.1]]).view(3, 1, 2, 2)
    margins = images.flatten(1) @ w + b
    labels = (margins > 0).long()
    true_radius = margins.abs() / w.norm()
    smoothed = SmoothedClassifier(Linear(w, b), sigma=sigma, num_classes=2, batch_size=16)
    eps = 0.3
    adversarial = smooth_adv(smoothed, images, labels, [1, 2, 3], eps=eps, steps=10, eot=4)
    assert ((adversarial - images).flatten(1).norm(dim=1) <= eps + 1e-5).all()
    assert float(adversarial.min()) >= 0 and float(adversarial.max()) <= 1
    judged = smoothed.predict(adversarial, [4, 5, 6], n=4000, alpha=0.001)
    for radius, label, verdict in zip(true_radius.tolist(), labels.tolist(), judged, strict=True):
        if radius < eps - 0.05:
            assert verdict == 1 - label, (radius, verdict)
        elif radius > eps + 0.05:
            assert verdict == label, (radius, verdict)
    again = smooth_adv(
        SmoothedClassifier(Linear(w, b), sigma=sigma, num_classes=2, batch_size=4),
        images,
        labels,
        [1, 2, 3],
        eps=eps,
        steps=10,
        eot=4,
    )
    assert torch.allclose(adversarial, again, atol=1e-6), "the batch size changes no adversarial image"
