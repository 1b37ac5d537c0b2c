"""Selective EOT (DiffHammer): the draws' gradients weighted by softmax_i(L_i) instead of averaged, so the attack
aims at "wrong in at least one draw". Known answers against the explicit weighted sum, the same gradient as the mean
on a deterministic pipeline, the same weighting through grafting, a one-line error for an unknown mode, and the
first law: the mode changes only the gradient, never how candidates are judged."""

from __future__ import annotations

import pytest
import torch
from test_grafting import RandomGain, Squash, setup
from typer.testing import CliRunner

from robaudit.attacks.base import ResolvedAttack, build_attack
from robaudit.attacks.gradient import DrawAverage, cross_entropy, eot_gradient
from robaudit.attacks.selection import draw
from robaudit.cli import app
from robaudit.errors import ConfigError
from toys import CLASSES, streams


def explicit(pipeline, images, labels, *, draws: int, rng):
    """Every draw's gradient and loss kept, then weighted by softmax over draws of the losses: the known answer.
    Draw d of sample i comes from the stream ``rng.split(draws)`` gives row i * draws + d."""
    grads, losses = [], []
    rows = rng.split(draws)
    for d in range(draws):
        x = images.detach().requires_grad_(True)
        value = cross_entropy(draw(pipeline, x, rows[list(range(d, len(labels) * draws, draws))]), labels)
        grads.append(torch.autograd.grad(value.sum(), x)[0])
        losses.append(value.detach())
    weights = torch.softmax(torch.stack(losses), dim=0)  # (draws, N)
    return (weights[:, :, None, None, None] * torch.stack(grads)).sum(0), torch.stack(grads).mean(0)


def test_selective_equals_the_softmax_weighted_sum_of_the_draws_gradients():
    pipeline, images, labels = setup(RandomGain(), graft=0)
    want_selective, want_mean = explicit(pipeline, images, labels, draws=6, rng=streams(8, 3))
    selective, _, _ = eot_gradient(
        pipeline, images, labels, loss=cross_entropy, draws=6, rng=streams(8, 3), mode="selective"
    )
    mean, _, _ = eot_gradient(pipeline, images, labels, loss=cross_entropy, draws=6, rng=streams(8, 3))
    torch.testing.assert_close(selective, want_selective, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(mean, want_mean, rtol=1e-5, atol=1e-7)
    assert (selective - mean).abs().max() > 1e-4, "a randomized pipeline's draws differ, so the weighting matters"


def test_selective_is_the_mean_on_a_deterministic_pipeline():
    pipeline, images, labels = setup(Squash(), graft=0)
    selective, _, _ = eot_gradient(
        pipeline, images, labels, loss=cross_entropy, draws=4, rng=streams(8, 3), mode="selective"
    )
    mean, _, _ = eot_gradient(pipeline, images, labels, loss=cross_entropy, draws=4, rng=streams(8, 3))
    torch.testing.assert_close(selective, mean, rtol=1e-5, atol=1e-7)


def test_the_online_weights_survive_losses_far_apart():
    """The running maximum keeps exp() finite when one draw's loss is 1000 above another's."""
    average = DrawAverage("selective")
    average.add(torch.ones(2, 3), torch.tensor([0.0, 1000.0]))
    average.add(2 * torch.ones(2, 3), torch.tensor([1000.0, 0.0]))
    torch.testing.assert_close(average.result(), torch.tensor([[2.0] * 3, [1.0] * 3]))


def test_grafting_weights_the_classifier_gradients_the_same_way():
    """Through an additive-noise purifier (Jacobian the identity), grafted selective = full selective."""
    from test_grafting import AdditiveNoise

    full, images, labels = setup(AdditiveNoise(), graft=0)
    grafted, _, _ = setup(AdditiveNoise(), graft=1)
    kwargs = {"loss": cross_entropy, "draws": 6, "mode": "selective"}
    g_full, _, _ = eot_gradient(full, images, labels, rng=streams(8, 3), **kwargs)
    g_graft, _, _ = eot_gradient(grafted, images, labels, rng=streams(8, 3), **kwargs)
    torch.testing.assert_close(g_graft, g_full, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["pgd", "autoattack"])
def test_an_unknown_eot_mode_is_a_config_error(name):
    pipeline, _, _ = setup(RandomGain(), graft=0)
    resolved = ResolvedAttack(name=name, norm="Linf", eps=8 / 255, params={"steps": 2, "eot_mode": "median"})
    with pytest.raises(ConfigError, match="eot_mode must be one of mean, selective"):
        build_attack(resolved, pipeline, num_classes=CLASSES, seed=0, eot=2, draws=2)


def test_the_cli_names_a_bad_eot_mode_in_one_line(tmp_path, digits_model_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: {name: digits, split: test, limit: 4}\nattacks: [{name: pgd, steps: 2, eot_mode: max}]\n")
    args = ["evaluate", "--config", str(config), "--model", str(digits_model_path), "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "eot_mode must be one of mean, selective" in result.output and "Traceback" not in result.output


def test_selective_pgd_stays_in_the_ball_and_never_returns_the_clean_image():
    """The mode changes the gradient only: the output is projected, every sample was moved, and it breaks at least
    as many samples in fresh draws as no attack does."""
    from robaudit.attacks.selection import judge

    pipeline, images, labels = setup(RandomGain(), graft=0)
    resolved = ResolvedAttack(name="pgd", norm="Linf", eps=0.1, params={"steps": 5, "eot_mode": "selective"})
    attack = build_attack(resolved, pipeline, num_classes=CLASSES, seed=0, eot=3, draws=4)
    adversarial = attack(images, labels, streams(8, 7))
    assert (adversarial - images).abs().amax() <= 0.1 + 1e-6
    assert (adversarial != images).flatten(1).any(1).all(), "no sample comes back as its clean image"
    clean = judge(pipeline, images, labels, draws=8, rng=streams(8, 9)).correct_fraction
    attacked = judge(pipeline, adversarial, labels, draws=8, rng=streams(8, 9)).correct_fraction
    assert attacked.sum() <= clean.sum()
