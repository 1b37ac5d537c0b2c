"""Distillation: the loss against a hand computation, a student that tracks a tiny teacher, the CLI."""

from __future__ import annotations

import json
import math
import shutil

import torch
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.data import load_dataset
from robaudit.distill.loop import DistillRecipe, distill, distillation_loss
from robaudit.models.classifiers import load_classifier
from robaudit.models.training import accuracy


def test_loss_matches_hand_computation():
    student = torch.tensor([[2.0, 0.0, -1.0]])
    teacher = torch.tensor([[1.0, 1.0, 0.0]])
    labels = torch.tensor([0])
    t, alpha = 2.0, 0.3
    p = [math.exp(v / t) for v in teacher[0].tolist()]
    p = [v / sum(p) for v in p]
    q = [math.exp(v / t) for v in student[0].tolist()]
    q = [v / sum(q) for v in q]
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    s = [math.exp(v) for v in student[0].tolist()]
    ce = -math.log(s[0] / sum(s))
    expected = alpha * t * t * kl + (1 - alpha) * ce
    got = distillation_loss(student, teacher, labels, temperature=t, alpha=alpha)
    assert math.isclose(float(got), expected, rel_tol=1e-5)


def test_student_tracks_teacher(digits_model_path):
    teacher = load_classifier(digits_model_path)
    train = load_dataset("digits", split="train")
    test = load_dataset("digits", split="test", limit=120)
    untrained = distill(teacher, train, recipe=DistillRecipe(epochs=0), seed=0)
    student = distill(teacher, train, recipe=DistillRecipe(epochs=8, alpha=1.0, max_shift=0), seed=0)
    with torch.no_grad():
        target = teacher(test.images).argmax(1)
        agreement = (student(test.images).argmax(1) == target).float().mean()
        before = (untrained(test.images).argmax(1) == target).float().mean()
    # Trained on the teacher's soft labels alone (alpha = 1), the student agrees with the (tiny, imperfect) teacher.
    assert agreement >= 0.7 and agreement >= before + 0.4, (float(agreement), float(before))
    assert accuracy(student, test) >= accuracy(teacher, test) - 0.15
    assert student.card.num_classes == 10 and student.card.arch == "robaudit_small_cnn"


def test_distill_cli(tmp_path, monkeypatch, digits_model_path):
    monkeypatch.chdir(tmp_path)
    shutil.copy(digits_model_path, "teacher.pt")
    result = CliRunner().invoke(
        app,
        ["distill", "--teacher", "teacher.pt", "--data", "digits", "--epochs", "1", "--out", "student.pt"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    comparison = json.loads((tmp_path / "student.comparison.json").read_text())
    student_params = sum(p.numel() for p in load_classifier(tmp_path / "student.pt").parameters())
    assert comparison["student"]["parameters"] == student_params
    assert {"clean_accuracy", "robust_accuracy", "seconds_per_image"} <= set(comparison["student"])
    assert load_classifier(tmp_path / "student.pt").card.arch == "robaudit_small_cnn"
    assert "| teacher |" in (tmp_path / "student.comparison.md").read_text()
