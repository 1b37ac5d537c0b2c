"""Known-answer test: robaudit's AutoAttack (standard) on a deterministic model against the reference implementation
of Croce & Hein (the ``autoattack`` code, installed from PyPI as ``pyautoattack``), same model, images and eps."""

from __future__ import annotations

import logging

import pytest
import torch
from pyautoattack import AutoAttack as ReferenceAutoAttack

from robaudit.attacks import build_attack, predict, resolve_attack, run_attack
from robaudit.data import load_dataset
from robaudit.models.classifiers import load_classifier
from toys import streams

pytestmark = pytest.mark.slow  # end-to-end runs; `pytest -m "not slow"` skips them

EPS = 1 / 255


def test_standard_autoattack_matches_the_reference_within_one_sample(digits_model_path):
    model = load_classifier(digits_model_path).eval()
    data = load_dataset("digits", split="test", limit=40)
    images, labels = data.images, data.labels
    resolved = resolve_attack("autoattack", {"version": "standard"}, eps=EPS, eps_l2=0.5)
    attack = build_attack(resolved, model, num_classes=10, seed=0)
    ours = run_attack(attack, resolved, images, labels, rng=streams(len(labels), 0), seed=0)
    robust_ours = int((predict(model, ours) == labels).sum())

    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    reference = ReferenceAutoAttack(model, norm="Linf", eps=EPS, version="standard", seed=0)
    theirs, _ = reference.run_standard_evaluation(images, labels, batch_size=64)  # (adversarial, predictions)
    robust_theirs = int((predict(model, theirs) == labels).sum())

    clean = int((predict(model, images) == labels).sum())
    assert 0 < robust_theirs < clean, "the budget must leave the comparison something to measure"
    assert abs(robust_ours - robust_theirs) <= 1, (robust_ours, robust_theirs)
    assert torch.equal(ours, ours.clamp(images - EPS, images + EPS))


@pytest.mark.parametrize("rescale", [True, False])
def test_square_matches_the_reference_square_within_one_sample(digits_model_path, rescale):
    """robaudit's Linf Square (per-sample windows) against the reference's SquareAttack, same p schedule."""
    from pyautoattack.square import SquareAttack

    from robaudit.attacks.methods.square import SquareLinf

    model = load_classifier(digits_model_path).eval()
    data = load_dataset("digits", split="test", limit=40)
    images, labels = data.images, data.labels
    ours = SquareLinf(model, eps=8 / 255, n_queries=300, p_init=0.8, rescale=rescale)(images, labels, streams(40))[0]
    reference = SquareAttack(
        model,
        p_init=0.8,
        n_queries=300,
        eps=8 / 255,
        norm="Linf",
        n_restarts=1,
        seed=0,
        device="cpu",
        resc_schedule=rescale,
    )
    theirs = reference.perturb(images, labels)
    robust_ours, robust_theirs = (
        int((predict(model, ours) == labels).sum()),
        int((predict(model, theirs) == labels).sum()),
    )
    assert robust_theirs < int((predict(model, images) == labels).sum())
    assert abs(robust_ours - robust_theirs) <= 2, (robust_ours, robust_theirs)
    assert (ours - images).abs().max() <= 8 / 255 + 1e-6
