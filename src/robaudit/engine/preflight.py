"""Checks before a run, on the model, the data and each pipeline the run will attack: randomness (detected or
declared), logits, input range, accuracy above chance, class balance and input gradients. They build pipelines, so
they belong to the audit engine; their findings go into the manifest and the reports show them."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.data import ImageSet
from robaudit.engine.pipeline import Pipeline
from robaudit.rng.seeding import isolated_global_rng
from robaudit.runs.findings import Finding


def detect_randomized(model: nn.Module, dataset: ImageSet, *, batch: int = 16) -> bool:
    """True when two eval-mode forward passes of ``model`` on the same images differ (noise inside the model)."""
    images = dataset.images[:batch].float()
    model.eval()
    with torch.no_grad(), isolated_global_rng(0):
        first, second = model(images), model(images)
    return not torch.equal(first, second)


def randomness_findings(randomized: dict[str, bool] | None) -> list[Finding]:
    """An info flag saying how a randomized classifier was found and how it is evaluated."""
    if not randomized or not randomized.get("randomized"):
        return []
    how = "declared (--randomized)" if randomized.get("declared") else ""
    if randomized.get("detected"):
        how = (how + " and " if how else "") + "detected: two forward passes on the same images differ"
    if "row_draws" in randomized:
        how += (
            "; every random draw inside it has one row per sample, so it runs batched, each row's draws from the "
            "sample's own stream"
            if randomized["row_draws"]
            else "; it draws randomness that has no row per sample (e.g. one draw for the whole batch), so it runs "
            "one sample per call"
        )
    return [
        Finding(
            "randomized-model",
            "info",
            "the classifier is randomized",
            "Its outputs vary between identical calls, so it is audited like a randomized defense: attack gradients "
            "average EOT draws, candidates are chosen on selection draws, and every prediction is repeated (mean "
            "and worst of N).",
            how,
        )
    ]


def preflight(
    model: nn.Module,
    dataset: ImageSet,
    *,
    purifiers: dict[str, Any] | None = None,
    randomized: dict[str, bool] | None = None,
    batch: int = 64,
) -> list[Finding]:
    """Checks before a run, on the first ``batch`` samples: randomness, logits, input range, accuracy above chance,
    input gradients (of the classifier, and through each purifier under the adaptive threat), and each purifier's
    declared randomness."""
    images = dataset.images[:batch].float()
    labels = dataset.labels[:batch]
    model.eval()
    with torch.no_grad(), isolated_global_rng(0):
        logits = model(images)
    flags = randomness_findings(randomized) + output_findings(
        logits, images, labels, num_classes=model.card.num_classes
    )
    flags += class_balance_findings(dataset.labels, num_classes=model.card.num_classes)
    flags += gradient_findings(model, images, labels, where="the classifier")
    for label, purifier in (purifiers or {}).items():
        flags += purifier_randomness_findings(label, purifier, images[:8])
        pipeline = Pipeline(model, purifier, threat="adaptive")
        flags += gradient_findings(pipeline, images[:16], labels[:16], where=f"the {label} pipeline (adaptive)")
    return flags


def class_balance_findings(labels: torch.Tensor, *, num_classes: int, share: float = 0.9) -> list[Finding]:
    """A warning when one class makes up ``share`` or more of the audited samples (e.g. the first N of a split
    sorted by label): accuracy then says little about the model on the other classes."""
    if len(labels) < 20 or num_classes < 2:
        return []
    counts = torch.bincount(labels, minlength=num_classes)
    top = int(counts.argmax())
    if float(counts[top]) / len(labels) < share:
        return []
    return [
        Finding(
            "class-balance",
            "warning",
            "the audited samples are nearly all one class",
            "Accuracy and robustness measured on one class say little about the others (a model or purifier that "
            "predicts that class for everything scores 100%). A split sorted by label gives this with `limit`; "
            "audit a seeded random subset instead (`subset_seed`), or more samples.",
            f"class {top}: {int(counts[top])} of {len(labels)} samples",
        )
    ]


def output_findings(
    logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, *, num_classes: int
) -> list[Finding]:
    """Logits that look like probabilities, clean accuracy near chance, nearly black images."""
    flags = []
    rows = logits.float()
    if bool(((rows >= 0) & (rows <= 1)).all()) and torch.allclose(rows.sum(1), torch.ones(len(rows)), atol=1e-3):
        flags.append(
            Finding(
                "logits",
                "error",
                "model outputs look like probabilities, not logits",
                "Every output row lies in [0, 1] and sums to 1. Cross-entropy attacks on probabilities "
                "suffer vanishing gradients; return logits.",
            )
        )
    accuracy = float((logits.argmax(1) == labels).float().mean())
    chance = 1 / num_classes
    if len(labels) >= 20 and accuracy <= chance + 0.1 * (1 - chance):
        flags.append(
            Finding(
                "normalization",
                "error",
                "clean accuracy is near chance",
                "The model barely beats guessing on clean data: normalization may be applied twice or not "
                "at all, or the data does not match the model.",
                f"clean accuracy {accuracy:.3f} on {len(labels)} samples, chance {chance:.3f}",
            )
        )
    if float(images.max()) <= 1 / 255 + 1e-6:
        flags.append(
            Finding(
                "input-range",
                "warning",
                "images are nearly black",
                "Every pixel is at most 1/255: the data may have been scaled to [0, 1] twice.",
            )
        )
    return flags


def gradient_findings(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, where: str) -> list[Finding]:
    """NaN, infinite, zero or exploding input gradients of the cross-entropy of ``model`` (obfuscated gradients)."""
    x = images.clone().requires_grad_(True)
    with isolated_global_rng(0):
        loss = F.cross_entropy(model(x), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    per_sample = grad.flatten(1).abs().sum(1)
    explanation = (
        "White-box attacks fail for the wrong reason (obfuscated gradients, Athalye et al. 2018); robust accuracy "
        "from gradient attacks would be overstated. Use BPDA or black-box attacks and do not trust white-box numbers."
    )
    if not torch.isfinite(grad).all():
        return [Finding("gradients", "error", f"input gradients through {where} are NaN or infinite", explanation)]
    zero = int((per_sample == 0).sum())
    if zero > 0.5 * len(per_sample):
        evidence = f"{zero} of {len(per_sample)} samples have a zero gradient"
        return [
            Finding(
                "gradients",
                "error",
                f"input gradients through {where} are zero (gradient masking)",
                explanation,
                evidence,
            )
        ]
    if float(per_sample.max()) > 1e6 * max(float(per_sample.median()), 1e-12):
        evidence = f"largest per-sample gradient {float(per_sample.max()):.3g}, median {float(per_sample.median()):.3g}"
        return [Finding("gradients", "warning", f"input gradients through {where} explode", explanation, evidence)]
    return []


def purifier_randomness_findings(label: str, purifier: Any, images: torch.Tensor) -> list[Finding]:
    """An error when a purifier's output and its declared randomness disagree; an info finding when randomized."""
    with torch.no_grad():
        a = purifier(images, generator=torch.Generator().manual_seed(0))
        b = purifier(images, generator=torch.Generator().manual_seed(1))
    varies = not torch.equal(a, b)
    if varies != purifier.randomized:
        return [
            Finding(
                "purifier-randomness",
                "error",
                f"purifier {label} misdeclares its randomness",
                f"It declares randomized={purifier.randomized} but its output "
                f"{'changes' if varies else 'does not change'} with the generator's seed.",
            )
        ]
    if varies:
        return [
            Finding(
                "purifier-randomness",
                "info",
                f"purifier {label} is randomized",
                "Its output depends on its random draws: robust accuracy is reported as the worst of N repeats "
                "(with the mean beside it), attack gradients average EOT draws and candidates are chosen on "
                "selection draws independent of scoring.",
            )
        ]
    return []
