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
