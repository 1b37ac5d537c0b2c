"""The batch loop of evaluate: clean predictions, attacks on initially-correct samples, per-sample records."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from robaudit.attacks import ResolvedAttack, build_attack, predict, prepare_model, run_attack
from robaudit.data import ImageSet
from robaudit.progress import progress_bar
from robaudit.results import CLEAN
from robaudit.rundir import RunDir
from robaudit.seeding import derive_seed


def perturbation_norms(adversarial: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (Linf, L2) norms of ``adversarial - images``, both (N,)."""
    delta = (adversarial - images).flatten(1)
    return delta.abs().amax(dim=1), delta.norm(dim=1)


def _record(index: int, sample_id: str, label: int, condition: dict[str, Any], **values: Any) -> dict[str, Any]:
    return {"sample_id": sample_id, "index": index, "label": label, **condition, **values}


def evaluate_batches(
    model: nn.Module,
    dataset: ImageSet,
    attacks: list[ResolvedAttack],
    *,
    run_dir: RunDir,
    completed: set[str],
    seed: int,
    batch_size: int,
    device: torch.device,
    on_built: Callable[[str, Any], None] | None = None,
) -> None:
    """Evaluate ``model`` on ``dataset`` under each attack, writing one records part per batch.

    Parts already in ``completed`` are skipped (resumption). Samples misclassified when clean are not attacked:
    they count as non-robust under every attack, so skipping them changes no number.
    """
    prepare_model(model)
    num_classes = model.card.num_classes
    built = {}
    for attack in attacks:
        built[attack.label] = build_attack(attack, model, num_classes=num_classes, seed=derive_seed(seed, attack.label))
        if on_built is not None:
            on_built(attack.label, built[attack.label])
    batches = list(dataset.batches(batch_size))
    with progress_bar() as bar:
        task = bar.add_task("evaluate", total=len(batches) * (1 + len(attacks)), status="")
        for start, stop in batches:
            if RunDir.part_name(start, stop) in completed:
                bar.advance(task, 1 + len(attacks))
                continue
            records = evaluate_batch(
                model,
                dataset,
                attacks,
                built,
                start,
                stop,
                seed=seed,
                device=device,
                advance=lambda s: bar.update(task, advance=1, status=s),
            )
            run_dir.write_part(start, stop, records)


def evaluate_batch(model, dataset, attacks, built, start, stop, *, seed, device, advance) -> list[dict[str, Any]]:
    """Records of samples [start, stop): the clean condition and each attack."""
    images = dataset.images[start:stop].to(device=device, dtype=torch.float32)
    labels = dataset.labels[start:stop].to(device)
    ids = dataset.ids[start:stop]
    tic = time.perf_counter()
    clean_pred = predict(model, images)
    clean_time = (time.perf_counter() - tic) / len(labels)
    correct = clean_pred == labels
    none = {
        "condition": CLEAN,
        "attack": "none",
        "norm": "none",
        "eps": 0.0,
        "purifier": "none",
        "threat": "none",
        "repeat": 0,
    }
    records = [
        _record(
            start + i,
            ids[i],
            int(labels[i]),
            none,
            clean_pred=int(clean_pred[i]),
            pred=int(clean_pred[i]),
            correct=bool(correct[i]),
            attacked=False,
            linf=0.0,
            l2=0.0,
            time_s=round(clean_time, 6),
        )
        for i in range(len(labels))
    ]
    advance(f"batch {start}-{stop} clean")
    target = correct.nonzero().flatten()
    for attack in attacks:
        tic = time.perf_counter()
        adversarial = run_attack(
            built[attack.label], attack, images[target], labels[target], seed=derive_seed(seed, attack.label, start)
        )
        adv_pred = clean_pred.clone()
        linf = torch.zeros(len(labels), device=device)
        l2 = torch.zeros(len(labels), device=device)
        if len(target):
            adv_pred[target] = predict(model, adversarial)
            linf[target], l2[target] = perturbation_norms(adversarial, images[target])
        per_sample = (time.perf_counter() - tic) / max(1, len(target))
        condition = {
            "condition": attack.label,
            "attack": attack.name,
            "norm": attack.norm,
            "eps": attack.eps,
            "purifier": "none",
            "threat": "white-box" if attack.name != "square" else "black-box",
            "repeat": 0,
        }
        for i in range(len(labels)):
            hit = bool(correct[i])
            records.append(
                _record(
                    start + i,
                    ids[i],
                    int(labels[i]),
                    condition,
                    clean_pred=int(clean_pred[i]),
                    pred=int(adv_pred[i]),
                    correct=bool(adv_pred[i] == labels[i]),
                    attacked=hit,
                    linf=round(float(linf[i]), 7),
                    l2=round(float(l2[i]), 7),
                    time_s=round(per_sample, 6) if hit else 0.0,
                )
            )
        advance(f"batch {start}-{stop} {attack.label}")
    return records


def attack_dataset(
    model: nn.Module,
    dataset: ImageSet,
    attack: ResolvedAttack,
    *,
    seed: int,
    batch_size: int,
    device: torch.device,
) -> ImageSet:
    """Adversarial copies of every sample of ``dataset`` (float32, in the eps-ball), with the same ids and labels."""
    prepare_model(model)
    built = build_attack(attack, model, num_classes=model.card.num_classes, seed=derive_seed(seed, attack.label))
    outputs = []
    batches = list(dataset.batches(batch_size))
    with progress_bar() as bar:
        task = bar.add_task(f"attack {attack.label}", total=len(batches), status="")
        for start, stop in batches:
            images = dataset.images[start:stop].to(device=device, dtype=torch.float32)
            labels = dataset.labels[start:stop].to(device)
            adv = run_attack(built, attack, images, labels, seed=derive_seed(seed, attack.label, start))
            outputs.append(adv.cpu())
            bar.advance(task)
    return ImageSet(
        images=torch.cat(outputs),
        labels=dataset.labels.clone(),
        ids=list(dataset.ids),
        class_names=list(dataset.class_names),
        description=f"{attack.label} adversarial examples of {dataset.description}",
    )
