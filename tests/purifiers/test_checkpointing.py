"""Gradient checkpointing of purifier chains is decided by memory, and changes neither gradients nor counts."""

from __future__ import annotations

import pytest
import torch
from test_purifiers import tiny_purifier

from robaudit.engine.passes import PassCounter, purifier_network
from robaudit.engine.pipeline import Pipeline
from robaudit.purifiers import checkpointing
from robaudit.rng.sample_rng import SampleRNG
from robaudit.rng.seeding import generator
from toys import WithCard

CHECKPOINTING_PURIFIERS = ["ddpm", "cold", "ebm"]  # the U-Net purifiers: their networks checkpoint


def recorded_checkpoints(monkeypatch) -> list[int]:
    """Rows of every checkpointed network evaluation from now on."""
    calls: list[int] = []
    original = torch.utils.checkpoint.checkpoint

    def counting(function, *args, **kwargs):
        calls.append(args[0].shape[0])
        return original(function, *args, **kwargs)

    monkeypatch.setattr("robaudit.purifiers.checkpointing.checkpoint", counting)
    return calls


def gradient_and_counts(name: str, images: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """d sum(pipeline(x)) / dx through purifier ``name`` (adaptive, per-sample streams) and the passes counted."""
    purifier = tiny_purifier(name)
    torch.manual_seed(0)
    classifier = WithCard(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 10)))
    pipeline = Pipeline(classifier, purifier).eval()
    counter = PassCounter(pipeline.classifier, [purifier_network(purifier)])
    x = images.clone().requires_grad_(True)
    with counter.charge("attack"):
        pipeline(x, rng=SampleRNG.from_seeds(range(len(x)))).sum().backward()
    return x.grad, counter.take("attack").to_dict()


@pytest.mark.parametrize("name", CHECKPOINTING_PURIFIERS)
def test_chains_that_fit_are_not_checkpointed_and_the_gradient_is_the_same(name, monkeypatch):
    images = torch.rand(4, 1, 16, 16, generator=generator(0))
    calls = recorded_checkpoints(monkeypatch)
    plain, plain_counts = gradient_and_counts(name, images)
    assert calls == [], "a tiny chain fits in memory: no evaluation is recomputed"
    monkeypatch.setattr(checkpointing, "memory_budget", lambda device: 0)
    checkpointed, checkpointed_counts = gradient_and_counts(name, images)
    assert calls and all(rows % len(images) == 0 for rows in calls), "over the budget, evaluations checkpoint"
    assert torch.equal(checkpointed, plain), "checkpointing recomputes the same values"
    assert checkpointed_counts == plain_counts, "the probe and the recomputations are not counted"


def test_the_decision_is_rows_times_the_probed_bytes_against_the_budget(monkeypatch):
    purifier = tiny_purifier("ddpm")
    images = torch.rand(6, 1, 16, 16, generator=generator(0))
    per_row = checkpointing.saved_bytes_per_row(purifier, images)
    assert per_row > 0
    assert checkpointing.saved_bytes_per_row(purifier, images[:2]) == per_row, "measured once per shape"
    monkeypatch.setattr(checkpointing, "memory_budget", lambda device: per_row * 6)
    with checkpointing.chain_checkpointing(purifier, images) as needed:
        assert not needed and not checkpointing.checkpointing_wanted()
    with checkpointing.chain_checkpointing(purifier, torch.cat([images, images[:1]])) as needed:
        assert needed and checkpointing.checkpointing_wanted()
    assert checkpointing.checkpointing_wanted(), "outside any decision, checkpointing stays on"
    assert not checkpointing.checkpointing_wanted(False), "a network's own setting overrides the decision"


def test_the_probe_leaves_every_stream_alone():
    """The probe draws from its own fixed generator: neither the global RNG nor any sample's stream moves."""
    purifier = tiny_purifier("ddpm")
    images = torch.rand(2, 1, 16, 16, generator=generator(0))
    state = torch.get_rng_state()
    checkpointing.saved_bytes_per_row(purifier, images)
    assert torch.equal(state, torch.get_rng_state())


def test_the_batch_size_probe_forces_the_smallest_graph(monkeypatch):
    """``engine.batching`` measures the checkpointed graph; a forced setting wins over the measured decision."""
    purifier = tiny_purifier("ddpm")
    images = torch.rand(2, 1, 16, 16, generator=generator(0))
    with checkpointing.forced_checkpointing(True), checkpointing.chain_checkpointing(purifier, images) as needed:
        assert needed
    monkeypatch.setattr(checkpointing, "memory_budget", lambda device: 0)
    with checkpointing.forced_checkpointing(False), checkpointing.chain_checkpointing(purifier, images) as needed:
        assert not needed
