"""The batch loop of evaluate: clean predictions, attacks under each defense and threat model, per-sample records.

Conditions per batch: for the undefended classifier and each purifier (``defense``), the clean prediction
(``repeats`` times for a stochastic purifier); then for each attack and threat model, adversarial examples made on
the samples that defense classifies correctly in at least one clean repeat, and their prediction per repeat.
Non-adaptive adversarial examples are made once per attack against the classifier alone and shared by the
undefended condition and every purifier's non-adaptive condition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robaudit.attacks import ResolvedAttack, build_attack, prepare_model, run_attack
from robaudit.data import ImageSet
from robaudit.data.imageset import map_images
from robaudit.defense import DefendedModel, defended_predict
from robaudit.errors import Interrupted, RobauditError
from robaudit.interrupt import stop_after_current_batch
from robaudit.progress import console, progress_bar
from robaudit.purifiers.base import Purifier
from robaudit.rundir import RunDir, add_timing
from robaudit.seeding import derive_seed

NONE = "none"


@dataclass
class Defense:
    """The undefended classifier (``purifier is None``) or one purifier in front of it."""

    label: str
    purifier: Purifier | None
    repeats: int
    threats: list[str]


def condition_key(attack: str, defense: str, threat: str) -> str:
    """The ``condition`` column: attack | defense | threat model."""
    return f"{attack}|{defense}|{threat}"


def perturbation_norms(adversarial: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (Linf, L2) norms of ``adversarial - images``, both (N,)."""
    delta = (adversarial - images).flatten(1)
    return delta.abs().amax(dim=1), delta.norm(dim=1)


class BatchEvaluator:
    """Evaluates one batch under every condition; attacks are built once and reseeded per batch."""

    def __init__(
        self,
        classifier: nn.Module,
        defenses: list[Defense],
        attacks: list[ResolvedAttack],
        *,
        seed: int,
        eot: int,
        on_built: Callable[[str, Any], None] | None = None,
    ) -> None:
        prepare_model(classifier)
        self.classifier, self.defenses, self.attacks, self.seed = classifier, defenses, attacks, seed
        num_classes = classifier.card.num_classes
        self.on_classifier = {}
        self.defended: dict[tuple[str, str, str], tuple[DefendedModel, Any]] = {}
        for attack in attacks:
            built = build_attack(attack, classifier, num_classes=num_classes, seed=derive_seed(seed, attack.label))
            self.on_classifier[attack.label] = built
            if on_built is not None:
                on_built(attack.label, built)
            for defense in defenses:
                for threat in defense.threats:
                    if threat in ("bpda", "adaptive"):
                        model = DefendedModel(defense.purifier, classifier, threat=threat, eot=eot)
                        prepare_model(model)
                        key = (attack.label, defense.label, threat)
                        self.defended[key] = (
                            model,
                            build_attack(attack, model, num_classes=num_classes, seed=derive_seed(seed, *key)),
                        )

    gallery_size = 6

    @torch.no_grad()
    def keep_examples(self, adversarial: torch.Tensor, attack: ResolvedAttack, defense: Defense, threat: str) -> None:
        """Keep the first samples' adversarial (and purified) images for the report's gallery."""
        key = f"{attack.label}|{defense.label}|{threat}"
        head = adversarial[: self.gallery_size]
        self.gallery[f"adversarial|{key}"] = head.cpu()
        if defense.purifier is not None:
            generator = torch.Generator(device=head.device).manual_seed(derive_seed(self.seed, "gallery", key))
            self.gallery[f"purified|{key}"] = defense.purifier(head, generator=generator).cpu()

    def steps(self) -> int:
        """Progress units per batch."""
        return len(self.defenses) + sum(len(d.threats) for d in self.defenses) * len(self.attacks)

    def predict(self, defense: Defense, images: torch.Tensor, *parts: object) -> torch.Tensor:
        """Predictions of ``defense`` on images, with purifier randomness seeded by ``parts``."""
        generator = None
        if defense.purifier is not None:
            generator = torch.Generator(device=images.device).manual_seed(derive_seed(self.seed, *parts))
        return defended_predict(defense.purifier, self.classifier, images, generator)

    def __call__(
        self, dataset: ImageSet, start: int, stop: int, *, device: torch.device, advance: Callable[[str], None]
    ) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
        """Records of samples [start, stop) under every condition, and the batch's timings.

        Records hold no wall-clock values (same seed and config: same bytes); timings are
        ``{condition: {"seconds": total, "samples": count}}``: attack time over attacked samples, and clean
        prediction time over predicted samples (all repeats).
        """
        images = dataset.images[start:stop].to(device=device, dtype=torch.float32)
        labels = dataset.labels[start:stop].to(device)
        ids = dataset.ids[start:stop]
        n = len(labels)
        records: list[dict[str, Any]] = []
        timings: dict[str, dict[str, float]] = {}

        def emit(
            attack: ResolvedAttack | None,
            defense: Defense,
            threat: str,
            repeat: int,
            clean_pred,
            pred,
            attacked,
            linf,
            l2,
        ) -> None:
            condition = {
                "condition": condition_key(attack.label if attack else NONE, defense.label, threat),
                "attack": attack.name if attack else NONE,
                "norm": attack.norm if attack else NONE,
                "eps": attack.eps if attack else 0.0,
                "purifier": defense.label,
                "threat": threat,
                "repeat": repeat,
            }
            for i in range(n):
                hit = bool(attacked[i])
                records.append(
                    {
                        "sample_id": ids[i],
                        "index": start + i,
                        "label": int(labels[i]),
                        **condition,
                        "clean_pred": int(clean_pred[i]),
                        "pred": int(pred[i]),
                        "correct": bool(pred[i] == labels[i]),
                        "attacked": hit,
                        "linf": round(float(linf[i]), 7),
                        "l2": round(float(l2[i]), 7),
                    }
                )

        zeros = torch.zeros(n, device=device)
        if start == 0:
            self.gallery = {"clean": images[: self.gallery_size].cpu()}
            self.gallery_ids = ids[: self.gallery_size]
        clean: dict[str, list[torch.Tensor]] = {}
        for defense in self.defenses:
            clean[defense.label] = []
            for repeat in range(defense.repeats):
                tic = time.perf_counter()
                pred = self.predict(defense, images, "clean", defense.label, repeat, start)
                add_timing(timings, condition_key(NONE, defense.label, NONE), time.perf_counter() - tic, n)
                clean[defense.label].append(pred)
                emit(None, defense, NONE, repeat, pred, pred, torch.zeros(n, dtype=torch.bool), zeros, zeros)
            advance(f"batch {start}-{stop} clean {defense.label}")

        def targets(defense: Defense) -> torch.Tensor:
            correct = torch.stack([p == labels for p in clean[defense.label]]).any(0)
            return correct

        shared_need = torch.zeros(n, dtype=torch.bool, device=device)
        for defense in self.defenses:
            if NONE in defense.threats or "non-adaptive" in defense.threats:
                shared_need |= targets(defense)
        for attack in self.attacks:
            index = shared_need.nonzero().flatten()
            tic = time.perf_counter()
            shared = images.clone()
            shared[index] = run_attack(
                self.on_classifier[attack.label],
                attack,
                images[index],
                labels[index],
                seed=derive_seed(self.seed, attack.label, start),
            )
            shared_seconds_per_sample = (time.perf_counter() - tic) / max(1, len(index))
            for defense in self.defenses:
                want = targets(defense)
                for threat in defense.threats:
                    if threat in (NONE, "non-adaptive"):
                        adversarial = torch.where(want.view(-1, 1, 1, 1), shared, images)
                        seconds = shared_seconds_per_sample * int(want.sum())
                    else:
                        model, built = self.defended[(attack.label, defense.label, threat)]
                        model.reseed(derive_seed(self.seed, "purifier", attack.label, defense.label, threat, start))
                        index = want.nonzero().flatten()
                        tic = time.perf_counter()
                        adversarial = images.clone()
                        adversarial[index] = run_attack(
                            built,
                            attack,
                            images[index],
                            labels[index],
                            seed=derive_seed(self.seed, attack.label, defense.label, threat, start),
                        )
                        seconds = time.perf_counter() - tic
                    add_timing(timings, condition_key(attack.label, defense.label, threat), seconds, int(want.sum()))
                    linf, l2 = perturbation_norms(adversarial, images)
                    if start == 0 and not attack.sweep:
                        self.keep_examples(adversarial, attack, defense, threat)
                    for repeat in range(defense.repeats):
                        pred = self.predict(defense, adversarial, attack.label, defense.label, threat, repeat, start)
                        clean_pred = clean[defense.label][repeat]
                        pred = torch.where(want, pred, clean_pred)
                        emit(attack, defense, threat, repeat, clean_pred, pred, want, linf * want, l2 * want)
                    advance(f"batch {start}-{stop} {attack.label} {defense.label} {threat}")
        return records, timings


def evaluate_batches(
    classifier: nn.Module,
    dataset: ImageSet,
    attacks: list[ResolvedAttack],
    *,
    defenses: list[Defense],
    run_dir: RunDir,
    completed: set[str],
    seed: int,
    batch_size: int,
    eot: int,
    device: torch.device,
    on_built: Callable[[str, Any], None] | None = None,
    on_split: Callable[[int, int, int], None] | None = None,
) -> None:
    """Evaluate every condition batch by batch, writing one records part per batch; completed parts are skipped.

    Samples a defense misclassifies in every clean repeat are not attacked: they count as non-robust under every
    attack, so skipping them changes no number. Ctrl-C stops after the current batch (raising ``Interrupted``)
    with every finished batch written. When the device runs out of memory, the batch is run in halves (again and
    again, down to one sample) and later batches in chunks of the size that fitted; ``on_split(start, stop,
    chunk)`` reports each batch that ran in chunks.
    """
    evaluator = BatchEvaluator(classifier, defenses, attacks, seed=seed, eot=eot, on_built=on_built)
    batches = list(dataset.batches(batch_size))
    chunk = batch_size
    with progress_bar() as bar, stop_after_current_batch() as stop_requested:
        task = bar.add_task("evaluate", total=len(batches) * evaluator.steps(), status="")
        for number, (start, stop) in enumerate(batches):
            if RunDir.part_name(start, stop) in completed:
                bar.advance(task, evaluator.steps())
                continue

            def advance(status: str) -> None:
                bar.update(task, advance=1, status=status)

            records, timings, chunk = evaluate_in_chunks(evaluator, dataset, start, stop, chunk, device, advance)
            if chunk < stop - start and on_split is not None:
                on_split(start, stop, chunk)
            run_dir.write_timings(start, stop, timings)
            run_dir.write_part(start, stop, records)  # last: the part marks the batch as done
            if start == 0:
                run_dir.write_gallery(evaluator.gallery, evaluator.gallery_ids)
            if stop_requested() and number + 1 < len(batches):
                raise Interrupted(
                    f"stopped after samples {start}-{stop}; finished batches are saved in {run_dir.path}. "
                    "Re-run the same command to resume"
                )


OUT_OF_MEMORY = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)


def evaluate_in_chunks(
    evaluator: BatchEvaluator,
    dataset: ImageSet,
    start: int,
    stop: int,
    chunk: int,
    device: torch.device,
    advance: Callable[[str], None],
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]], int]:
    """Records and timings of samples [start, stop), evaluated ``chunk`` samples at a time; on out-of-memory the
    chunk is halved and the failed chunk run again. Returns the chunk size that fitted."""
    records: list[dict[str, Any]] = []
    timings: dict[str, dict[str, float]] = {}
    position = start
    while position < stop:
        end = min(position + chunk, stop)
        try:
            part, part_timings = evaluator(dataset, position, end, device=device, advance=advance)
        except OUT_OF_MEMORY:
            if end - position == 1:
                raise RobauditError(
                    f"out of {device.type} memory on a single sample ({dataset.ids[position]!r}); "
                    "use a device with more memory, fewer purifier steps or EOT draws, or --device cpu"
                ) from None
            if device.type == "cuda":
                torch.cuda.empty_cache()
            chunk = max(1, (end - position) // 2)
            console.print(f"[yellow]out of memory: running samples {position}-{end} in chunks of {chunk}[/yellow]")
            continue
        records.extend(part)
        for condition, entry in part_timings.items():
            add_timing(timings, condition, entry["seconds"], entry["samples"])
        position = end
    return records, timings, chunk


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

    def perturb(start: int, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return run_attack(built, attack, images, labels, seed=derive_seed(seed, attack.label, start))

    return map_images(
        dataset,
        perturb,
        batch_size=batch_size,
        device=device,
        task=f"attack {attack.label}",
        description=f"{attack.label} adversarial examples of {dataset.description}",
    )
