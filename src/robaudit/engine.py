"""The batch loop of evaluate: clean predictions, attacks under each defense and threat model, per-sample records.

Conditions per batch: for the undefended classifier and each purifier (``defense``), the clean prediction
(``repeats`` scoring draws for a randomized pipeline); then for each attack and threat model, adversarial examples
made on every sample that defense classifies correctly in at least one clean draw, and their prediction per draw.
Non-adaptive adversarial examples are made once per attack against the classifier alone, on every sample some
defense needs, and shared by the undefended condition and every purifier's non-adaptive condition. Attacks on a
randomized pipeline take EOT gradients and choose candidates on selection draws (``attacks.selection``); scoring
draws are seeded apart from them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robaudit.attacks import ResolvedAttack, build_attack, prepare_model, run_attack
from robaudit.data import ImageSet
from robaudit.data.imageset import map_images
from robaudit.defense import Pipeline, score
from robaudit.errors import Interrupted, RobauditError
from robaudit.interrupt import stop_after_current_batch
from robaudit.progress import console, progress_bar
from robaudit.purifiers.base import Purifier
from robaudit.rundir import RunDir, add_timing
from robaudit.seeding import derive_seed

NONE = "none"


@dataclass
class Defense:
    """The undefended classifier (``purifier is None``) or one purifier in front of it, and how it is scored.

    ``scoring`` is the pipeline whose draws predictions take (``repeats`` scoring draws per condition).
    """

    label: str
    purifier: Purifier | None
    repeats: int
    threats: list[str]
    scoring: Pipeline
    eot: int | None = None  # EOT draws per gradient against this defense (None: the run's)


def condition_key(attack: str, defense: str, threat: str) -> str:
    """The ``condition`` column: attack | defense | threat model."""
    return f"{attack}|{defense}|{threat}"


def perturbation_norms(adversarial: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (Linf, L2) norms of ``adversarial - images``, both (N,)."""
    delta = (adversarial - images).flatten(1)
    return delta.abs().amax(dim=1), delta.norm(dim=1)


@dataclass
class Batch:
    """Samples [start, start + N) on the device: images (N, C, H, W), labels (N,), ids."""

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    start: int


def batch_records(
    batch: Batch,
    condition: dict[str, Any],
    clean_pred: torch.Tensor,
    pred: torch.Tensor,
    attacked: torch.Tensor,
    adversarial: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """One record per sample of ``batch`` under ``condition`` (the record schema: ``results.RECORD_FIELDS``)."""
    n = len(batch.labels)
    if adversarial is None:
        linf = l2 = torch.zeros(n)
    else:
        linf, l2 = perturbation_norms(adversarial, batch.images)
    return [
        {
            "sample_id": batch.ids[i],
            "index": batch.start + i,
            "label": int(batch.labels[i]),
            **condition,
            "clean_pred": int(clean_pred[i]),
            "pred": int(pred[i]),
            "correct": bool(pred[i] == batch.labels[i]),
            "attacked": bool(attacked[i]),
            "linf": round(float(linf[i]) if attacked[i] else 0.0, 7),
            "l2": round(float(l2[i]) if attacked[i] else 0.0, 7),
        }
        for i in range(n)
    ]


def condition_fields(attack: ResolvedAttack | None, defense: Defense, threat: str, repeat: int) -> dict[str, Any]:
    """The condition part of a record."""
    return {
        "condition": condition_key(attack.label if attack else NONE, defense.label, threat),
        "attack": attack.name if attack else NONE,
        "norm": attack.norm if attack else NONE,
        "eps": attack.eps if attack else 0.0,
        "purifier": defense.label,
        "threat": threat,
        "repeat": repeat,
    }


class BatchEvaluator:
    """Evaluates one batch under every condition; attacks are built once and reseeded per batch.

    Every sample a defense classifies correctly in at least one clean repeat is attacked, by every attack, under
    every threat model (records mark it ``attacked``); the others count as non-robust without an attack.
    Non-adaptive adversarial examples are made once per attack against the classifier alone, on every sample some
    defense needs, and shared by the undefended and the non-adaptive conditions.
    """

    gallery_size = 6

    def __init__(
        self,
        classifier: nn.Module,
        defenses: list[Defense],
        attacks: list[ResolvedAttack],
        *,
        seed: int,
        eot: int,
        draws: int,
        on_built: Callable[[str, Any], None] | None = None,
    ) -> None:
        prepare_model(classifier)
        self.classifier, self.defenses, self.attacks, self.seed = classifier, defenses, attacks, seed
        bare = defenses[0].scoring  # the undefended pipeline: the classifier alone
        context = {"num_classes": classifier.card.num_classes, "eot": eot, "draws": draws}
        self.on_classifier = {}
        self.defended: dict[tuple[str, str, str], tuple[Pipeline, Any]] = {}
        for attack in attacks:
            built = build_attack(attack, bare, seed=derive_seed(seed, attack.label), **context)
            self.on_classifier[attack.label] = built
            if on_built is not None:
                on_built(attack.label, built)
            for defense in defenses:
                for threat in (t for t in defense.threats if t in ("bpda", "adaptive")):
                    pipeline = Pipeline(
                        classifier, defense.purifier, threat=threat, stochastic_classifier=bare.stochastic
                    )
                    model = prepare_model(pipeline)
                    key = (attack.label, defense.label, threat)
                    settings = {**context, "eot": defense.eot or eot}
                    self.defended[key] = (model, build_attack(attack, model, seed=derive_seed(seed, *key), **settings))
                    if on_built is not None:
                        on_built(condition_key(*key), self.defended[key][1])

    @torch.no_grad()
    def keep_examples(self, adversarial: torch.Tensor, attack: ResolvedAttack, defense: Defense, threat: str) -> None:
        """Keep the first samples' adversarial (and purified) images for the report's gallery."""
        key = condition_key(attack.label, defense.label, threat)
        head = adversarial[: self.gallery_size]
        self.gallery[f"adversarial|{key}"] = head.cpu()
        if defense.purifier is not None:
            generator = torch.Generator(device=head.device).manual_seed(derive_seed(self.seed, "gallery", key))
            self.gallery[f"purified|{key}"] = defense.purifier(head, generator=generator).cpu()

    def steps(self) -> int:
        """Progress units per batch."""
        return len(self.defenses) + sum(len(d.threats) for d in self.defenses) * len(self.attacks)

    def predict(self, defense: Defense, images: torch.Tensor, *parts: object) -> torch.Tensor:
        """One scoring draw of ``defense`` on images, its randomness seeded by ``parts``."""
        return score(defense.scoring, images, seed=derive_seed(self.seed, *parts))

    def clean_predictions(self, batch: Batch, out: _Output, advance: Callable[[str], None]) -> dict[str, list]:
        """Each defense's clean predictions, one per repeat (recorded as the clean condition)."""
        clean: dict[str, list[torch.Tensor]] = {}
        n = len(batch.labels)
        for defense in self.defenses:
            clean[defense.label] = []
            for repeat in range(defense.repeats):
                tic = time.perf_counter()
                pred = self.predict(defense, batch.images, "clean", defense.label, repeat, batch.start)
                add_timing(out.timings, condition_key(NONE, defense.label, NONE), time.perf_counter() - tic, n)
                clean[defense.label].append(pred)
                fields = condition_fields(None, defense, NONE, repeat)
                out.records += batch_records(batch, fields, pred, pred, torch.zeros(n, dtype=torch.bool))
            advance(f"batch {batch.start}-{batch.start + n} clean {defense.label}")
        return clean

    def attack_samples(
        self, built: Any, attack: ResolvedAttack, batch: Batch, want: torch.Tensor, seed: int
    ) -> torch.Tensor:
        """``batch.images`` with the samples in ``want`` replaced by ``built``'s adversarial examples."""
        index = want.nonzero().flatten()
        adversarial = batch.images.clone()
        adversarial[index] = run_attack(built, attack, batch.images[index], batch.labels[index], seed=seed)
        return adversarial

    def adversarial(
        self, attack: ResolvedAttack, defense: Defense, threat: str, batch: Batch, shared: torch.Tensor
    ) -> tuple[torch.Tensor, float | None]:
        """The adversarial images of one condition and the seconds spent making them (None: the shared ones)."""
        if threat in (NONE, "non-adaptive"):
            return shared, None
        model, built = self.defended[(attack.label, defense.label, threat)]
        model.reseed(derive_seed(self.seed, "purifier", attack.label, defense.label, threat, batch.start))
        tic = time.perf_counter()
        seed = derive_seed(self.seed, attack.label, defense.label, threat, batch.start)
        adversarial = self.attack_samples(built, attack, batch, self.targets[defense.label], seed)
        return adversarial, time.perf_counter() - tic

    def score_condition(
        self, attack: ResolvedAttack, defense: Defense, threat: str, batch: Batch, adversarial: torch.Tensor
    ) -> list[dict[str, Any]]:
        """Records of one condition: ``repeats`` scoring draws of the adversarial images."""
        want = self.targets[defense.label]
        adversarial = torch.where(want.view(-1, 1, 1, 1), adversarial, batch.images)
        if batch.start == 0 and not attack.sweep:
            self.keep_examples(adversarial, attack, defense, threat)
        records = []
        for repeat in range(defense.repeats):
            pred = self.predict(defense, adversarial, attack.label, defense.label, threat, repeat, batch.start)
            clean_pred = self.clean[defense.label][repeat]
            pred = torch.where(want, pred, clean_pred)
            fields = condition_fields(attack, defense, threat, repeat)
            records += batch_records(batch, fields, clean_pred, pred, want, adversarial)
        return records

    def __call__(
        self, dataset: ImageSet, start: int, stop: int, *, device: torch.device, advance: Callable[[str], None]
    ) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
        """Records of samples [start, stop) under every condition, and the batch's timings.

        Records hold no wall-clock values (same seed and config: same bytes); timings are
        ``{condition: {"seconds": total, "samples": count}}``: attack time over attacked samples, and clean
        prediction time over predicted samples (all repeats).
        """
        images = dataset.images[start:stop].to(device=device, dtype=torch.float32)
        batch = Batch(images, dataset.labels[start:stop].to(device), dataset.ids[start:stop], start)
        out = _Output()
        if start == 0:
            self.gallery = {"clean": images[: self.gallery_size].cpu()}
            self.gallery_ids = batch.ids[: self.gallery_size]
        self.clean = self.clean_predictions(batch, out, advance)
        self.targets = {
            label: torch.stack([p == batch.labels for p in preds]).any(0) for label, preds in self.clean.items()
        }
        shared_need = torch.zeros(len(batch.labels), dtype=torch.bool, device=device)
        for defense in self.defenses:
            if NONE in defense.threats or "non-adaptive" in defense.threats:
                shared_need |= self.targets[defense.label]
        for attack in self.attacks:
            tic = time.perf_counter()
            seed = derive_seed(self.seed, attack.label, start)
            shared = self.attack_samples(self.on_classifier[attack.label], attack, batch, shared_need, seed)
            per_sample = (time.perf_counter() - tic) / max(1, int(shared_need.sum()))
            for defense in self.defenses:
                want = int(self.targets[defense.label].sum())
                for threat in defense.threats:
                    adversarial, seconds = self.adversarial(attack, defense, threat, batch, shared)
                    seconds = per_sample * want if seconds is None else seconds
                    add_timing(out.timings, condition_key(attack.label, defense.label, threat), seconds, want)
                    out.records += self.score_condition(attack, defense, threat, batch, adversarial)
                    advance(f"batch {start}-{stop} {attack.label} {defense.label} {threat}")
        return out.records, out.timings


@dataclass
class _Output:
    """What one batch produces: records and timings."""

    records: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)


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
    draws: int,
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
    evaluator = BatchEvaluator(classifier, defenses, attacks, seed=seed, eot=eot, draws=draws, on_built=on_built)
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
