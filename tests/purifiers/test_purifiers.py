"""Contract tests over every registered purifier, the threat-model wrappers and ADP's step-size rule."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from robaudit.engine.pipeline import Pipeline
from robaudit.errors import ConfigError
from robaudit.purifiers import PURIFIERS, Purifier, recipe_for
from robaudit.purifiers.checkpointing import CheckpointedEvaluation, forced_checkpointing
from robaudit.purifiers.methods.ebm import adaptive_step_size
from robaudit.rng.seeding import generator
from tiny import TINY_PARAMS, TINY_RECIPES


# A tiny untrained network per purifier: the contract does not depend on training.
def tiny_purifier(name: str, *, shape=(1, 16, 16), **params) -> Purifier:
    recipe = recipe_for(name, TINY_RECIPES.get(name, {}))
    entry = PURIFIERS.get(name)
    torch.manual_seed(0)
    network = entry.meta["build"](recipe, list(shape)).eval()
    return PURIFIERS.build(name, {**TINY_PARAMS.get(name, {}), **params}, network).eval()


@pytest.fixture()
def images():
    return torch.rand(3, 1, 16, 16, generator=generator(0))


@pytest.mark.parametrize("name", PURIFIERS.names())
def test_purifier_contract(name, images):
    purifier = tiny_purifier(name)
    assert isinstance(purifier.randomized, bool) and isinstance(purifier.differentiable, bool)
    out = purifier(images, generator=generator(1))
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    again = purifier(images, generator=generator(1))
    assert torch.equal(out, again), "a fixed generator must give the same output"
    if purifier.randomized:
        other = purifier(images, generator=generator(2))
        assert not torch.equal(out, other), "a randomized purifier must use its generator"
    assert purifier.gradient_description()


@pytest.mark.parametrize("name", PURIFIERS.names())
def test_purifier_gradients_reach_the_input(name, images):
    purifier = tiny_purifier(name)
    assert purifier.differentiable
    x = images.clone().requires_grad_(True)
    purifier(x, generator=generator(1)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", PURIFIERS.names())
def test_graph_only_when_attacking(name, images):
    purifier = tiny_purifier(name)
    with torch.no_grad():
        out = purifier(images, generator=generator(1))
    assert out.grad_fn is None and not out.requires_grad
    attacked = purifier(images.clone().requires_grad_(True), generator=generator(1))
    assert attacked.requires_grad, "a purifier must not cut the graph (no no_grad inside its forward)"


@pytest.mark.parametrize("name", PURIFIERS.names())
def test_recipes_have_keyword_defaults_and_round_trip(name):
    recipe_cls = PURIFIERS.get(name).meta["recipe"]
    recipe = recipe_cls()  # every field has a default
    assert recipe_for(name, asdict(recipe)) == recipe
    with pytest.raises(ConfigError, match="unknown key"):
        recipe_for(name, {**asdict(recipe), "not_a_field": 1})


class _Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(256, 3)
        self.card = type("Card", (), {"num_classes": 3})()

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_bpda_gradient_is_classifier_gradient_at_purified_point(images):
    purifier = tiny_purifier("cold", variant="direct")
    classifier = _Classifier()
    defended = Pipeline(classifier, purifier, threat="bpda")
    x = images.clone().requires_grad_(True)
    defended(x).sum().backward()
    purified = purifier(images).detach().requires_grad_(True)
    classifier(purified).sum().backward()
    assert torch.allclose(x.grad, purified.grad, atol=1e-6)


def test_adaptive_gradient_differs_from_bpda(images):
    purifier = tiny_purifier("cold", variant="direct")
    classifier = _Classifier()
    grads = []
    for threat in ("bpda", "adaptive"):
        x = images.clone().requires_grad_(True)
        Pipeline(classifier, purifier, threat=threat)(x).sum().backward()
        grads.append(x.grad)
    assert not torch.allclose(grads[0], grads[1])


@pytest.mark.parametrize("variance", [0.01, 0.5, 4.0])
def test_adp_step_size_on_a_gaussian_energy(variance):
    # Energy of N(mu, variance I): score s(x) = -(x - mu) / variance. One probe step of size d gives
    # s' = s (1 - d / variance), so z = 1 - d / variance and alpha = lambda * variance (clamped to [1e-5, 0.1]).
    mu = torch.zeros(2, 1, 4, 4)
    x = torch.randn(2, 1, 4, 4, generator=generator(0))
    d, lam = 1e-3, 0.05

    def score(v):
        return -(v - mu) / variance

    s = score(x)
    alpha = adaptive_step_size(s, score(x + d * s), probe=d, lam=lam)
    expected = min(max(lam * variance, 1e-5), 0.1)
    assert torch.allclose(alpha, torch.full_like(alpha, expected), rtol=1e-3)


def _save_diffusers_dir(path, *, safetensors: bool):
    from diffusers import DDPMScheduler, UNet2DModel

    unet = UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        add_attention=False,
    )
    unet.save_pretrained(str(path / "unet"), safe_serialization=safetensors)
    DDPMScheduler(num_train_timesteps=100).save_pretrained(str(path / "scheduler"))
    return unet


def test_ddpm_loads_a_diffusers_directory(tmp_path, images):
    from robaudit.purifiers import load_purifier_network

    unet = _save_diffusers_dir(tmp_path, safetensors=True)
    kind, network, card = load_purifier_network(tmp_path)
    assert kind == "ddpm" and network.num_timesteps == 100 and card["input_size"] == [1, 16, 16]
    t = torch.zeros(3, dtype=torch.long)
    assert torch.allclose(network.noise_predictor(images, t), unet(images, t).sample, atol=1e-6)
    purifier = PURIFIERS.build("ddpm", {"steps": 2}, network)
    assert purifier(images, generator=generator(0)).shape == images.shape


def test_diffusers_directory_with_pickled_weights_is_refused(tmp_path):
    from robaudit.errors import CheckpointError
    from robaudit.purifiers import load_purifier_network

    _save_diffusers_dir(tmp_path, safetensors=False)
    weights = list((tmp_path / "unet").glob("*.bin"))
    assert weights and not list((tmp_path / "unet").glob("*.safetensors"))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"payload": Evil()}, weights[0])  # a crafted pickle: loading it would create the marker
    with pytest.raises(CheckpointError, match="pickled"):
        load_purifier_network(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("name", PURIFIERS.names())
def test_purifier_network_evaluations_are_counted(name, images):
    """Every registered purifier's network evaluations reach the pass counter: N per call of its evaluated network."""
    from robaudit.engine.passes import PassCounter, purifier_network

    purifier = tiny_purifier(name)
    network = purifier_network(purifier)
    calls = []
    network.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    counter = PassCounter(torch.nn.Identity(), [network])
    with counter.charge("purify"):
        purifier(images, generator=generator(1))
    counted = counter.take("purify").purifier
    assert calls and counted == sum(calls) and counted % len(images) == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", PURIFIERS.names())
def test_compiled_purifier_network_gives_the_same_output_and_counts(name, images):
    from robaudit.engine.passes import PassCounter, purifier_network
    from robaudit.models.compiled import compile_network

    purifier = tiny_purifier(name)
    network = purifier_network(purifier)
    counter = PassCounter(torch.nn.Identity(), [network])
    with counter.charge("plain"):
        plain = purifier(images, generator=generator(1))
    compile_network(network)
    compiled_method = "evaluate" if isinstance(network, CheckpointedEvaluation) else "forward"
    assert compiled_method in vars(network), f"the evaluated network's {compiled_method} is the compiled one"
    with counter.charge("compiled"):
        compiled = purifier(images, generator=generator(1))
    torch.testing.assert_close(compiled, plain, atol=1e-4, rtol=1e-3)  # fused kernels round differently
    counted = counter.take("compiled")
    assert counted == counter.take("plain") and counted.purifier > 0


CHECKPOINTED = [n for n in PURIFIERS.names() if isinstance(tiny_purifier(n).evaluated_network, CheckpointedEvaluation)]


@pytest.mark.slow
@pytest.mark.parametrize("name", CHECKPOINTED)
def test_a_compiled_network_differentiates_checkpointed_as_eager(name, images):
    """``--compile`` with gradient checkpointing on (as the CUDA batch-size measurement and long chains run it):
    inductor cannot partition a checkpoint compiled with its body, so the checkpoint stays eager around the compiled
    evaluation; the purified images, the input gradient and the pass counts equal the eager ones."""
    from robaudit.engine.passes import PassCounter, purifier_network
    from robaudit.models.compiled import compile_network

    purifier = tiny_purifier(name)
    network = purifier_network(purifier)
    counter = PassCounter(torch.nn.Identity(), [network])

    def purified_and_gradient(key: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.clone().requires_grad_(True)
        with counter.charge(key), forced_checkpointing(True):
            out = purifier(x, generator=generator(1))
            (gradient,) = torch.autograd.grad(out.square().sum(), x)
        return out.detach(), gradient

    plain = purified_and_gradient("plain")
    compile_network(network)
    compiled = purified_and_gradient("compiled")
    # fused kernels round differently, and ADP's step size lam * probe / (1 - z) magnifies that by about 1 / probe
    torch.testing.assert_close(compiled, plain, atol=1e-3, rtol=1e-2)
    counted = counter.take("compiled")
    assert counted == counter.take("plain") and counted.purifier_backward > 0


def test_a_checkpoint_from_when_the_noise_predictor_was_eps_still_loads():
    """The DDPM network's noise predictor was the attribute ``eps`` (state-dict keys ``eps.*``); such checkpoints
    load into ``noise_predictor``, also inside ADP's network made from a diffusion model."""
    from robaudit.purifiers.diffusion import DDPMNetwork
    from robaudit.purifiers.methods.ebm import DiffusionScoreNetwork

    recipe = recipe_for("ddpm", TINY_RECIPES["ddpm"])
    saved, fresh = DDPMNetwork(recipe, [1, 16, 16]), DDPMNetwork(recipe, [1, 16, 16])
    old = {key.replace("noise_predictor.", "eps.", 1): value for key, value in saved.state_dict().items()}
    assert all(key.startswith("eps.") for key in old)
    fresh.load_state_dict(old)
    for (key, a), b in zip(saved.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    wrapped = DiffusionScoreNetwork(DDPMNetwork(recipe, [1, 16, 16]))
    wrapped.load_state_dict({f"diffusion.{key}": value for key, value in old.items()})
    assert torch.equal(next(iter(wrapped.diffusion.noise_predictor.parameters())), next(iter(saved.parameters())))


def test_the_earlier_word_stochastic_still_declares_a_randomized_purifier():
    """A plugin written when the attribute was ``stochastic`` declares ``randomized``, with a DeprecationWarning."""
    with pytest.warns(DeprecationWarning, match="stochastic is the earlier name of randomized"):

        class Old(Purifier):
            stochastic = False

            def forward(self, images, *, generator=None):
                return images

    assert Old.randomized is False and Purifier.randomized is True
