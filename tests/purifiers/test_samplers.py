"""DDPM purification's reverse processes on a toy whose exact answer is known: data x0 ~ N(mu, s^2) per pixel and
the exact noise predictor for it, so a correct reverse process returns N(mu, s^2). DiffPure's reverse VP-SDE
approaches the ancestral chain's output distribution as its step shrinks; its per-sample noise streams make outputs
independent of the batch; ADP's score from a diffusion model is the exact score of its noise level."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from robaudit.purifiers.diffusion import DDPMNetwork
from robaudit.purifiers.methods.ddpm import DDPMPurifier
from robaudit.purifiers.methods.ebm import DiffusionScoreNetwork
from toys import streams

MU, S = 0.1, 0.3  # the toy data distribution, in the diffusion's [-1, 1] space


class GaussianEps(nn.Module):
    """The exact noise predictor for x0 ~ N(MU, S^2): E[eps | x_t] = sqrt(1 - abar)(x_t - sqrt(abar) MU) /
    (abar S^2 + 1 - abar)."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("abar", alphas_cumprod.float())

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.abar[t].view(-1, 1, 1, 1)
        return (1 - abar).sqrt() * (x - abar.sqrt() * MU) / (abar * S * S + 1 - abar)


@pytest.fixture(scope="module")
def network() -> DDPMNetwork:
    schedule = DDPMScheduler(num_train_timesteps=1000)  # Ho et al.'s linear betas 1e-4 .. 0.02
    return DDPMNetwork.from_eps_model(GaussianEps(schedule.alphas_cumprod), schedule, [1, 16, 16]).eval()


def purified_moments(network, sampler: str, **params) -> tuple[float, float]:
    x0 = MU + S * torch.randn(256, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    purifier = DDPMPurifier(network, t_star=0.3, sampler=sampler, steps=10, backward_steps=None, **params)
    with torch.no_grad():
        out = purifier((x0 + 1) / 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return float(out.mean()), float(out.var())


def test_the_ancestral_chain_and_diffpures_sde_return_the_data_distribution(network):
    """Measured here: ancestral var 0.0875, SDE at dt 1e-3 0.0906, dt 1e-2 0.0916, dt 0.1 (3 steps) 0.198; S^2 0.09."""
    ancestral = purified_moments(network, "ddpm")
    fine, medium, coarse = (purified_moments(network, "sde", sde_dt=dt) for dt in (1e-3, 1e-2, 0.1))
    for mean, var in (ancestral, fine):
        assert abs(mean - MU) < 0.01 and abs(var / S**2 - 1) < 0.05, (mean, var)
    assert abs(coarse[1] / S**2 - 1) > 0.5, "three Euler-Maruyama steps are far from the answer"
    gaps = [abs(var - ancestral[1]) for _, var in (coarse, medium, fine)]
    assert gaps[0] > gaps[1] and gaps[0] > gaps[2], f"the SDE approaches the ancestral chain as dt shrinks: {gaps}"


def test_the_sde_draws_each_samples_noise_from_its_own_stream(network):
    purifier = DDPMPurifier(network, t_star=0.1, sampler="sde", steps=10, backward_steps=None, sde_dt=0.01)
    images = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = purifier(images, generator=streams(6, 7))
        halves = streams(6, 7)
        split = torch.cat([purifier(images[:3], generator=halves[:3]), purifier(images[3:], generator=halves[3:])])
        other = purifier(images, generator=streams(6, 8))
    assert torch.equal(whole, split), "a sample's output does not depend on its batch"
    assert not torch.allclose(whole, other), "other streams, other noise"


def test_the_sde_counts_one_network_evaluation_per_step_and_says_what_it_runs(network):
    from robaudit.engine.passes import PassCounter, purifier_network

    purifier = DDPMPurifier(network, t_star=0.1, sampler="sde", steps=10, backward_steps=None, sde_dt=1e-3)
    assert purifier.sde_steps == 100 and "Euler-Maruyama, 100 steps" in purifier.process_description()
    counter = PassCounter(nn.Identity(), [purifier_network(purifier)])
    with counter.charge("purify"):
        purifier(torch.rand(2, 1, 16, 16), generator=torch.Generator().manual_seed(0))
    assert counter.take("purify").purifier == 100 * 2, "one evaluation per step and sample"


def test_adps_score_from_a_diffusion_model_is_the_exact_score_of_its_noise_level(network):
    """For x ~ N(m, v) in [0, 1] and y = x + sigma z, grad log p(y) = -(y - m) / (v + sigma^2)."""
    scores = DiffusionScoreNetwork(network)
    level = scores.level_for(0.25)
    sigma = float(scores.sigmas[level])
    assert abs(sigma - 0.25) < 0.01
    m, v = (MU + 1) / 2, S * S / 4
    y = torch.rand(3, 1, 16, 16)
    torch.testing.assert_close(scores.score(y, level), -(y - m) / (v + sigma**2), rtol=1e-4, atol=1e-5)
