"""Knowledge distillation of a classifier into a small student (Hinton et al. 2015), as Defensive Diffusion
(Imam et al. 2023) does to make the purified pipeline cheaper, and the comparison of teacher and student.

Loss: alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels).
With a purifier, the training images are purified once (seeded) and both teacher targets and student inputs are
the purified images: the student learns the defended pipeline.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.attacks import build_attack, resolve_attack, run_attack
from robaudit.data import ImageSet
from robaudit.engine.pipeline import Pipeline, score
from robaudit.models.classifiers import NormalizedClassifier, create_classifier
from robaudit.models.training import ClassifierRecipe, make_card
from robaudit.purifiers.base import Purifier
from robaudit.purifiers.dataset import purify_dataset
from robaudit.reporting.results import rate
from robaudit.rng.sample_rng import SampleRNG
from robaudit.rng.seeding import derive_seed, isolated_global_rng
from robaudit.training.loop import train_epochs


@dataclass
class DistillRecipe:
    """Student and training hyperparameters. ``temperature`` 1 as in the paper."""

    student: str = "cnn"  # a registered architecture (robaudit ls models) or any timm model name
    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    temperature: float = 1.0
    alpha: float = 0.5
    max_shift: int = 2


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * CE; logits (N, K), labels (N,). Batch mean."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits / t, dim=1), reduction="batchmean")
    return alpha * t * t * kl + (1 - alpha) * F.cross_entropy(student_logits, labels)


def distill(
    teacher: nn.Module,
    train_set: ImageSet,
    *,
    recipe: DistillRecipe,
    purifier: Purifier | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> NormalizedClassifier:
    """Train a student on ``train_set`` (purified once when ``purifier`` is given) to match ``teacher``."""
    teacher = teacher.to(device).eval()
    if purifier is not None:
        train_set = purify_dataset(
            purifier, train_set, seed=derive_seed(seed, "distill-purify"), batch_size=128, device=torch.device(device)
        )
    card = make_card(train_set, ClassifierRecipe(arch=recipe.student), teacher.card.num_classes)
    card.class_names = list(teacher.card.class_names)
    with isolated_global_rng(derive_seed(seed, "student-init")):
        student = create_classifier(card).to(device)
    generator = torch.Generator().manual_seed(derive_seed(seed, "distill-data"))
    optimizer = torch.optim.AdamW(student.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = math.ceil(len(train_set) / recipe.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, total_steps=max(1, recipe.epochs * steps)
    )

    def step_loss(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(images)
        return distillation_loss(
            student(images), teacher_logits, labels, temperature=recipe.temperature, alpha=recipe.alpha
        )

    train_epochs(
        student,
        train_set,
        step_loss,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=generator,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        device=device,
        description="distill",
        max_shift=recipe.max_shift,
    )
    card.training = {
        "distilled_from": teacher.card.arch,
        "recipe": asdict(recipe),
        "seed": seed,
        "purified_inputs": purifier is not None,
    }
    return student.eval().cpu()


def latency_per_image(model: nn.Module, images: torch.Tensor, *, repeats: int = 3) -> float:
    """Median seconds per image of a forward pass over ``images`` (N, C, H, W), after one warm-up."""
    model.eval()
    with torch.no_grad():
        model(images[:2])
        times = []
        for _ in range(repeats):
            tic = time.perf_counter()
            model(images)
            times.append((time.perf_counter() - tic) / len(images))
    return sorted(times)[len(times) // 2]


def compare_teacher_and_student(
    teacher: nn.Module,
    student: nn.Module,
    test_set: ImageSet,
    *,
    purifier: Purifier | None = None,
    eps: float = 8 / 255,
    steps: int = 20,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Parameters, latency and clean / PGD robust accuracy of teacher and student.

    Robust accuracy is white-box PGD (Linf, ``eps``, ``steps``) against each model; with a purifier, the examples
    made against each model are purified before classification (non-adaptive).
    """
    attack_spec = resolve_attack("pgd", {"steps": steps}, eps=eps, eps_l2=0.5)
    images, labels = test_set.images.to(device), test_set.labels.to(device)
    out: dict[str, Any] = {
        "threat_model": f"PGD-{steps}, Linf eps={eps:.4g}, white-box against each model"
        + (", then purified (non-adaptive)" if purifier is not None else ""),
        "n_samples": len(test_set),
    }
    for name, model in (("teacher", teacher), ("student", student)):
        model = model.to(device).eval()
        attack = build_attack(attack_spec, model, num_classes=model.card.num_classes, seed=derive_seed(seed, name))
        rng = SampleRNG.for_samples(seed, test_set.ids, name, "pgd", device=device)
        adversarial = run_attack(attack, attack_spec, images, labels, rng=rng, seed=derive_seed(seed, name, "pgd"))
        scored = Pipeline(model, purifier)
        clean = score(scored, images, SampleRNG.for_samples(seed, test_set.ids, name, "clean", device=device))
        robust = score(scored, adversarial, SampleRNG.for_samples(seed, test_set.ids, name, "scored", device=device))
        out[name] = {
            "arch": model.card.arch,
            "parameters": sum(p.numel() for p in model.parameters()),
            "seconds_per_image": latency_per_image(model, images),
            "clean_accuracy": rate(int((clean == labels).sum()), len(labels)),
            "robust_accuracy": rate(int((robust == labels).sum()), len(labels)),
        }
    out["parameter_ratio"] = out["student"]["parameters"] / out["teacher"]["parameters"]
    out["speedup"] = out["teacher"]["seconds_per_image"] / max(out["student"]["seconds_per_image"], 1e-12)
    return out


def comparison_markdown(result: dict[str, Any]) -> str:
    """The comparison as a markdown table."""
    from robaudit.reporting.report import escape_markdown, with_ci

    lines = [
        "# Distillation: teacher vs student",
        "",
        f"Threat model: {result['threat_model']}; {result['n_samples']} test images.",
        "",
        "| model | architecture | parameters | s / image (forward) | clean accuracy [95% CI] "
        "| robust accuracy [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("teacher", "student"):
        r = result[name]
        lines.append(
            f"| {name} | {escape_markdown(r['arch'])} | {r['parameters']:,} | {r['seconds_per_image']:.6f} | "
            f"{with_ci(r['clean_accuracy'])} | {with_ci(r['robust_accuracy'])} |"
        )
    lines += [
        "",
        f"Student / teacher parameters: {result['parameter_ratio']:.3f}; speed-up: {result['speedup']:.2f}x.",
        "",
    ]
    return "\n".join(lines)
