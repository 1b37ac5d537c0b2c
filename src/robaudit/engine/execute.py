"""``execute(plan, part)``: the records of one part of a run, batch by batch.

For each batch of the part: every defense's clean prediction (``repeats`` scoring draws for a randomized pipeline);
then for each attack, adversarial examples made against the classifier alone on every sample some classifier-only
condition needs (shared by the undefended and the non-adaptive conditions), and against each defended pipeline under
BPDA and the adaptive threat model, on every sample that defense classifies correctly in at least one clean draw;
then ``repeats`` scoring draws of each condition. Every random draw comes from the sample's own stream, seeded from
(run seed, condition, sample id): a sample's records do not depend on its batch, the batch size, the other
conditions or the shard layout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from robaudit.attacks import ResolvedAttack, build_attack, prepare_model, run_attack
from robaudit.attacks.precision import disagreements
from robaudit.data import ImageSet
from robaudit.engine.batching import CPU_DEFAULT, default_batch_size
from robaudit.engine.convergence import reattacked
from robaudit.engine.passes import PassCounter, purifier_network
from robaudit.engine.pipeline import Pipeline, score_draws
from robaudit.engine.plan import AuditPlan, Defense, Part
from robaudit.errors import RobauditError
from robaudit.models.compiled import compile_classifier, compile_network
from robaudit.progress import console
from robaudit.rng.sample_rng import SampleRNG
from robaudit.rng.seeding import derive_seed
from robaudit.runs.records import Condition, Record
from robaudit.runs.rundir import add_disagreements, add_passes, add_rung_samples, add_timing
from robaudit.threats import threat_model

UNDRAWN = -1  # the prediction of a scoring draw a sample's verdict did not need (``score_chosen``): it gets no record

Advance = Callable[[str], None]


@dataclass
class Batch:
    """Samples [start, start + N) on the device: images (N, C, H, W), labels (N,), ids; or, with ``positions``,
    the samples at those dataset positions (the convergence check's chosen samples)."""

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    start: int
    positions: list[int] | None = None

    def index(self, i: int) -> int:
        """The dataset position of the batch's ``i``-th sample."""
        return self.positions[i] if self.positions is not None else self.start + i


@dataclass
class Verdict:
    """A condition's outcome on a batch: the clean predictions of each draw, the samples attacked (``want``), the
    images scored and the predictions of each scoring draw (N,)."""

    clean: list[torch.Tensor]
    want: torch.Tensor
    adversarial: torch.Tensor
    preds: list[torch.Tensor]


@dataclass
class Examples:
    """What an attack made on a batch: ``adversarial`` (N, C, H, W), the samples not attacked at their clean images;
    ``incomplete`` (N,) bool, where the attack's loss trace was still progressing; ``disagreed``, the reduced-precision
    check's counts (``attacks.precision.disagreements``); and, for examples shared by several conditions, the
    ``seconds`` per attacked sample and the ``passes`` they cost (charged to each condition that scores them)."""

    adversarial: torch.Tensor
    incomplete: torch.Tensor
    disagreed: tuple[int, int]
    seconds: float = 0.0
    passes: Any = None


@dataclass
class PartOutput:
    """What a part produces: records (plan order), timings ``{condition: {seconds, samples}}``, gallery images,
    and the chunk size batches ran in after running out of memory (None: never)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    gallery: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    gallery_ids: list[str] = field(default_factory=list)
    chunk: int | None = None


def perturbation_norms(adversarial: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (Linf, L2) norms of ``adversarial - images``, both (N,)."""
    delta = (adversarial - images).flatten(1)
    return delta.abs().amax(dim=1), delta.norm(dim=1)


def condition_records(
    batch: Batch,
    condition: Condition,
    attack: ResolvedAttack | None,
    repeat: int,
    preds: tuple[torch.Tensor, torch.Tensor],
    attacked: torch.Tensor,
    adversarial: torch.Tensor | None = None,
    incomplete: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """One record per sample of ``batch`` under ``condition`` that this scoring draw was drawn for (none where the
    prediction is ``UNDRAWN``); ``preds`` = (clean predictions, predictions);
    ``incomplete`` (N,) bool: the attack's loss trace was still progressing on the sample."""
    clean_pred, pred = preds
    zeros = torch.zeros(len(batch.labels))
    linf, l2 = perturbation_norms(adversarial, batch.images) if adversarial is not None else (zeros, zeros)
    incomplete = incomplete if incomplete is not None else torch.zeros(len(batch.labels), dtype=torch.bool)
    return [
        Record(
            sample_id=batch.ids[i],
            index=batch.index(i),
            label=int(batch.labels[i]),
            condition=condition.key(),
            attack=attack.name if attack else condition.attack,
            norm=attack.norm if attack else "none",
            eps=attack.eps if attack else 0.0,
            purifier=condition.defense,
            threat=condition.threat,
            repeat=repeat,
            clean_pred=int(clean_pred[i]),
            pred=int(pred[i]),
            correct=bool(pred[i] == batch.labels[i]),
            attacked=bool(attacked[i]),
            linf=round(float(linf[i]) if attacked[i] else 0.0, 7),
            l2=round(float(l2[i]) if attacked[i] else 0.0, 7),
            incomplete=bool(incomplete[i]) and bool(attacked[i]),
        ).to_dict()
        for i in range(len(batch.labels))
        if int(pred[i]) != UNDRAWN
    ]


class BuiltAttacks:
    """Every attack built once: against the classifier alone (shared examples) and against each defended pipeline
    under each threat model that differentiates through it. ``on_built(key, attack)`` sees each one."""

    def __init__(self, plan: AuditPlan, classifier: nn.Module, *, on_built: Callable[[str, Any], None] | None) -> None:
        bare = plan.defenses[0].scoring  # the undefended pipeline: the classifier alone
        bare.scoring_draws = plan.defenses[0].repeats  # the leave rule's N (attacks.stopping)
        context = {"num_classes": classifier.card.num_classes, "draws": plan.draws}
        self.classifier = classifier
        self.shared: dict[str, Any] = {}
        self.pipelines: dict[str, tuple[Pipeline, Any]] = {}
        for attack in plan.attacks:
            seed = derive_seed(plan.seed, "build", attack.label)
            eot = plan.eot * attack.eot_scale
            self.shared[attack.label] = build_attack(attack, bare, seed=seed, eot=eot, **context)
            if on_built is not None:
                on_built(attack.label, self.shared[attack.label])
        for condition, attack, defense in plan.conditions():
            if attack is None or condition.shares_classifier_examples:
                continue
            graft = defense.graft if condition.threat == "adaptive" else 0
            pipeline = Pipeline(
                classifier,
                defense.purifier,
                threat=condition.threat,
                randomized_classifier=bare.randomized,
                row_draws=getattr(bare, "row_draws", False),
                graft_draws=graft,
                layout=plan.layout,  # None: Pipeline's default, batched
            )
            prepare_model(pipeline)
            pipeline.scoring_draws = defense.repeats
            seed = derive_seed(plan.seed, "build", condition.key())
            eot = (defense.eot or plan.eot) * attack.eot_scale
            built = build_attack(attack, pipeline, seed=seed, eot=eot, **context)
            self.pipelines[condition.key()] = (pipeline, built)
            if on_built is not None:
                on_built(condition.key(), built)


class PartExecutor:
    """Evaluates parts of a plan; attacks are built once. ``executor(dataset, part, advance)`` -> PartOutput."""

    gallery_size = 6

    def __init__(
        self,
        plan: AuditPlan,
        classifier: nn.Module,
        *,
        device: torch.device,
        batch_size: int | None = None,
        precision: str = "fp32",
        compile: bool = False,
        on_built: Callable[[str, Any], None] | None = None,
    ) -> None:
        prepare_model(classifier)
        if compile and not compile_classifier(classifier):
            console.print("--compile: the classifier is TorchScript; torch.compile cannot trace it: it runs scripted")
        self.plan, self.device, self.precision, self.compile = plan, device, precision, compile
        for defense in plan.defenses:  # the scoring pipelines run their draws as the attacked ones do
            if plan.layout is not None and isinstance(defense.scoring, Pipeline):
                defense.scoring.layout = plan.layout
        self.built = BuiltAttacks(plan, classifier, on_built=on_built)
        networks = [purifier_network(d.purifier) for d in plan.defenses if d.purifier is not None]
        self.passes = PassCounter(classifier, networks)
        if compile:
            for network in networks:
                compile_network(network)
        self.batch_size = batch_size or CPU_DEFAULT

    def fit_batch_size(self, images: torch.Tensor) -> int:
        """Set and return the default batch size for this device (``engine.batching``), measured on ``images``
        (N, C, H, W): 128 on a CPU, what free memory holds on CUDA."""
        models = [self.built.classifier] + [pipeline for pipeline, _ in self.built.pipelines.values()]
        eot = max([d.eot or self.plan.eot for d in self.plan.defenses] or [1])
        eot *= max([a.eot_scale for a in self.plan.attacks] or [1])
        images = images.to(device=self.device, dtype=torch.float32)
        self.batch_size = default_batch_size(models, images, eot=eot)
        return self.batch_size

    def steps(self, part: Part) -> int:
        """Progress units of a part: one per condition and batch (the headline check's rungs run after the parts)."""
        conditions = [a for _, a, _ in self.plan.conditions() if getattr(a, "check_scope", "attack") == "attack"]
        return len(conditions) * -(-(part.stop - part.start) // self.batch_size)

    def streams(self, batch: Batch, *parts: object) -> SampleRNG:
        """The streams of ``batch``'s samples for the purpose named by ``parts`` (their draws compiled under
        ``--compile``, where the engine has a compiled form)."""
        streams = SampleRNG.for_samples(self.plan.seed, batch.ids, *parts, device=self.device, engine=self.plan.rng)
        return streams.compiled() if self.compile else streams

    def __call__(self, dataset: ImageSet, part: Part, advance: Advance) -> PartOutput:
        """Records of ``part``, in batches of ``batch_size``; on out-of-memory a batch is run again in halves."""
        out, position, chunk = PartOutput(), part.start, self.batch_size
        while position < part.stop:
            end = min(position + chunk, part.stop)
            try:
                self.batch(dataset, position, end, out, advance)
            except torch.cuda.OutOfMemoryError:
                if end - position == 1:
                    raise RobauditError(
                        f"out of {self.device.type} memory on a single sample ({dataset.ids[position]!r}); use a "
                        "device with more memory, fewer purifier steps or EOT draws, or --device cpu"
                    ) from None
                torch.cuda.empty_cache()
                chunk = out.chunk = max(1, (end - position) // 2)
                console.print(f"[yellow]out of memory: running samples {position}-{end} in chunks of {chunk}[/]")
                continue
            position = end
        out.records.sort(key=self.plan.record_order)
        return out

    def batch(self, dataset: ImageSet, start: int, stop: int, out: PartOutput, advance: Advance) -> None:
        """Add the records, timings and gallery rows of samples [start, stop) to ``out``."""
        images = dataset.images[start:stop].to(device=self.device, dtype=torch.float32)
        batch = Batch(images, dataset.labels[start:stop].to(self.device), dataset.ids[start:stop], start)
        clean = {d.label: self.clean_predictions(d, batch, out) for d in self.plan.defenses}
        advance(f"samples {start}-{stop} clean")
        targets = {label: torch.stack([p == batch.labels for p in preds]).any(0) for label, preds in clean.items()}
        for attack in self.plan.base_attacks():
            shared = self.shared_examples(attack, batch, targets)
            for defense in self.plan.defenses:
                for threat in defense.threats:
                    condition = Condition(attack.label, defense.label, threat)
                    want = targets[defense.label]
                    made = self.examples_for(condition, attack, batch, want, shared, out)
                    adversarial = torch.where(want.view(-1, 1, 1, 1), made.adversarial, batch.images)
                    scored = (clean[defense.label], want)
                    preds = self.score_condition(
                        condition, attack, defense, batch, scored, adversarial, out, made.incomplete
                    )
                    advance(f"samples {start}-{stop} {condition.key()}")
                    verdict = Verdict(clean[defense.label], want, adversarial, preds)
                    self.climb(condition, defense, batch, verdict, out, advance)
        self.collect_gallery(batch, out)

    def examples_for(
        self,
        condition: Condition,
        attack: ResolvedAttack,
        batch: Batch,
        want: torch.Tensor,
        shared: Examples,
        out: PartOutput,
    ) -> Examples:
        """A base attack's examples for ``condition`` on the samples in ``want``: the ``shared`` ones (made against
        the classifier alone; their cost charged to this condition too) or its own (``condition_examples``)."""
        if not condition.shares_classifier_examples:
            return self.condition_examples(condition, attack, batch, want, out)
        attacked = int(want.sum())
        add_timing(out.timings, condition.key(), shared.seconds * attacked, attacked)
        add_passes(out.timings, condition.key(), shared.passes.to_dict(), 0)
        add_disagreements(out.timings, condition.key(), *shared.disagreed)
        return shared

    def clean_predictions(self, defense: Defense, batch: Batch, out: PartOutput) -> list[torch.Tensor]:
        """``defense``'s clean predictions, one per repeat (recorded as its clean condition)."""
        condition = Condition.clean(defense.label)
        not_attacked = torch.zeros(len(batch.labels), dtype=torch.bool)
        tic = time.perf_counter()
        preds = self.score_repeats(defense, batch.images, batch, condition.key())
        add_timing(out.timings, condition.key(), time.perf_counter() - tic, len(batch.labels) * defense.repeats)
        for repeat, pred in enumerate(preds):
            out.records += condition_records(batch, condition, None, repeat, (pred, pred), not_attacked)
        add_passes(out.timings, condition.key(), self.passes.take(condition.key()).to_dict(), len(batch.labels))
        return preds

    def score_repeats(
        self,
        defense: Defense,
        images: torch.Tensor,
        batch: Batch,
        key: str,
        index: torch.Tensor | None = None,
        repeats: range | None = None,
    ) -> list[torch.Tensor]:
        """Predictions (M,) of ``defense`` on ``images`` (M, C, H, W), one per scoring draw (``repeats``, default
        all), the draws in the batch dimension (``score_draws``), each from its stream of (condition ``key``,
        repeat): drawing some repeats apart changes none of them; ``index``: the positions in ``batch`` of the
        images (default: all). Charged to ``key``."""
        repeats = range(defense.repeats) if repeats is None else repeats
        streams = [self.streams(batch, "score", key, repeat) for repeat in repeats]
        if index is not None:
            streams = [rng[index] for rng in streams]
        self.passes.count_scoring(key, len(images) * len(streams))
        with self.passes.charge(key):
            return score_draws(defense.scoring, images, streams)

    def run(self, built: Any, attack: ResolvedAttack, batch: Batch, want: torch.Tensor, *purpose: object) -> Examples:
        """``built``'s adversarial examples on the samples in ``want`` (the others at their clean images), each
        sample's draws from its stream for ``purpose``."""
        index = want.nonzero().flatten()
        adversarial = batch.images.clone()
        rng = self.streams(batch, *purpose)[index]
        seed = derive_seed(self.plan.seed, "global", *purpose)  # for library code that reads the global RNG
        images, labels = batch.images[index], batch.labels[index]
        made = run_attack(built, attack, images, labels, rng=rng, seed=seed, precision=self.precision)
        adversarial[index] = made
        disagreed = disagreements(built.model, made, labels, precision=self.precision)
        incomplete = torch.zeros(len(batch.labels), dtype=torch.bool, device=self.device)
        flags = getattr(built, "incomplete", None)
        if isinstance(flags, torch.Tensor) and len(flags) == len(index):
            incomplete[index] = flags.to(self.device)
        return Examples(adversarial, incomplete, disagreed)

    def shared_examples(self, attack: ResolvedAttack, batch: Batch, targets: dict[str, torch.Tensor]) -> Examples:
        """Examples made against the classifier alone on every sample a classifier-only condition needs, with their
        seconds per sample and passes (charged to every condition that scores them)."""
        need = torch.zeros(len(batch.labels), dtype=torch.bool, device=self.device)
        for defense in self.plan.defenses:
            if any(threat_model(t).attacks_classifier_only for t in defense.threats):
                need |= targets[defense.label]
        tic = time.perf_counter()
        with self.passes.charge("shared"):
            shared = self.run(
                self.built.shared[attack.label], attack, batch, need, "attack", attack.label, "classifier"
            )
        seconds = (time.perf_counter() - tic) / max(1, int(need.sum()))
        return replace(shared, seconds=seconds, passes=self.passes.take("shared"))

    def score_condition(
        self,
        condition: Condition,
        attack: ResolvedAttack,
        defense: Defense,
        batch: Batch,
        clean: tuple[list[torch.Tensor], torch.Tensor],
        adversarial: torch.Tensor,
        out: PartOutput,
        incomplete: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Records of one condition: ``repeats`` scoring draws of its adversarial images, drawn for the attacked
        samples only (a sample not attacked keeps its clean predictions: no draw could change its verdict); gallery
        rows. Returns the predictions of each draw (N,)."""
        clean_preds, want = clean
        if not attack.sweep:
            self.keep_for_gallery(condition, defense, batch, adversarial, out)
        preds = self.score_chosen(defense, adversarial, batch, condition.key(), want, clean_preds)
        for repeat, pred in enumerate(preds):
            out.records += condition_records(
                batch, condition, attack, repeat, (clean_preds[repeat], pred), want, adversarial, incomplete
            )
        add_passes(out.timings, condition.key(), self.passes.take(condition.key()).to_dict(), len(batch.labels))
        return preds

    def score_chosen(
        self,
        defense: Defense,
        images: torch.Tensor,
        batch: Batch,
        key: str,
        chosen: torch.Tensor,
        others: list[torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """Per repeat, predictions (N,) of the ``chosen`` samples (N,) bool of ``images`` (N, C, H, W), drawn as
        their worst-of-N verdict needs them: the first scoring draw for each, the other N - 1 only for those it found
        correct (a sample wrong in one draw is broken whatever the others say; ``UNDRAWN`` where a draw was not
        needed: it gets no record). Each draw comes from its own stream, so a sample's draws are those of a full
        scoring. The rest of the samples get ``others[repeat]`` (default ``UNDRAWN``)."""
        undrawn = torch.full((len(batch.labels),), UNDRAWN, dtype=torch.long, device=self.device)
        preds = [o.clone() for o in others] if others else [undrawn.clone() for _ in range(defense.repeats)]
        index = chosen.nonzero().flatten()
        if len(index) == 0:
            return preds
        (first,) = self.score_repeats(defense, images[index], batch, key, index, range(1))
        preds[0][index] = first
        going = index[first == batch.labels[index]]
        for repeat in range(1, defense.repeats):
            preds[repeat][index] = UNDRAWN
        if len(going) and defense.repeats > 1:
            rest = self.score_repeats(defense, images[going], batch, key, going, range(1, defense.repeats))
            for repeat, pred in enumerate(rest, start=1):
                preds[repeat][going] = pred
        return preds

    def climb(
        self, base: Condition, defense: Defense, batch: Batch, verdict: Verdict, out: PartOutput, advance: Advance
    ) -> None:
        """The convergence rungs of ``base``: each attacks again, at its escalated effort, the samples still standing
        (robust in every scoring draw) below it; every other sample keeps the verdict of the rung below. Only the
        ladders of ``convergence: {scope: attack}``: the headline check runs after every part (``engine.check``)."""
        for rung in self.plan.rungs_of(base.attack):
            if rung.check_scope != "attack":
                return
            condition = Condition(rung.label, defense.label, base.threat)
            standing = verdict.want & torch.stack([p == batch.labels for p in verdict.preds]).all(0)
            chosen = standing & self.sampled(condition, batch)
            add_rung_samples(out.timings, condition.key(), int(standing.sum()), int(chosen.sum()))
            adversarial = verdict.adversarial
            if bool(chosen.any()):
                made = self.condition_examples(condition, rung, batch, chosen, out)
                adversarial = torch.where(chosen.view(-1, 1, 1, 1), made.adversarial, adversarial)
            preds = self.score_rung(
                condition, rung, defense, batch, chosen, replace(verdict, adversarial=adversarial), out
            )
            verdict = replace(verdict, adversarial=adversarial, preds=preds)
            advance(f"samples {batch.start}-{batch.start + len(batch.ids)} {condition.key()}")

    def sampled(self, condition: Condition, batch: Batch) -> torch.Tensor:
        """(N,) bool: the samples a rung attacks again when only a fraction of survivors are
        (``engine.convergence``)."""
        fraction = self.plan.convergence_fraction
        chosen = [reattacked(self.plan.seed, condition.key(), sample_id, fraction) for sample_id in batch.ids]
        return torch.tensor(chosen, dtype=torch.bool, device=self.device)

    def condition_examples(
        self, condition: Condition, attack: ResolvedAttack, batch: Batch, chosen: torch.Tensor, out: PartOutput
    ) -> Examples:
        """``attack``'s examples for ``condition`` alone on the ``chosen`` samples, timed and charged to it: a base
        attack under BPDA or the adaptive threat model, or a convergence rung under any threat model. Against the
        classifier alone for the undefended and non-adaptive conditions, against the defended pipeline otherwise.
        (A base attack's examples for the classifier-only conditions are made once, ``shared_examples``.)"""
        if condition.shares_classifier_examples:
            built = self.built.shared[attack.label]
        else:
            pipeline, built = self.built.pipelines[condition.key()]
            pipeline.reseed(derive_seed(self.plan.seed, "pipeline", condition.key()))
        tic = time.perf_counter()
        with self.passes.charge(condition.key()):
            made = self.run(built, attack, batch, chosen, "attack", condition.key())
        add_timing(out.timings, condition.key(), time.perf_counter() - tic, int(chosen.sum()))
        add_disagreements(out.timings, condition.key(), *made.disagreed)
        return made

    def score_rung(
        self,
        condition: Condition,
        rung: ResolvedAttack,
        defense: Defense,
        batch: Batch,
        chosen: torch.Tensor,
        verdict: Verdict,
        out: PartOutput,
    ) -> list[torch.Tensor]:
        """A rung's records: fresh scoring draws for the ``chosen`` samples, the rung below's predictions for the
        others. Returns the predictions of each draw."""
        preds = self.score_chosen(defense, verdict.adversarial, batch, condition.key(), chosen, verdict.preds)
        for repeat, pred in enumerate(preds):
            pair = (verdict.clean[repeat], pred)
            out.records += condition_records(batch, condition, rung, repeat, pair, verdict.want, verdict.adversarial)
        add_passes(out.timings, condition.key(), self.passes.take(condition.key()).to_dict(), len(batch.labels))
        return preds

    @torch.no_grad()
    def keep_for_gallery(
        self, condition: Condition, defense: Defense, batch: Batch, adversarial: torch.Tensor, out: PartOutput
    ) -> None:
        """Keep the dataset's first samples' adversarial (and purified) images for the report's gallery."""
        head = max(0, min(self.gallery_size - batch.start, len(batch.labels)))
        if head == 0:
            return
        out.gallery.setdefault(f"adversarial|{condition.key()}", []).append(adversarial[:head].cpu())
        if defense.purifier is not None:
            rng = self.streams(batch, "gallery", condition.key())[slice(0, head)]
            purified = defense.purifier(adversarial[:head], generator=rng)
            out.gallery.setdefault(f"purified|{condition.key()}", []).append(purified.cpu())

    def collect_gallery(self, batch: Batch, out: PartOutput) -> None:
        """Keep the first samples' clean images and ids."""
        head = max(0, min(self.gallery_size - batch.start, len(batch.labels)))
        if head:
            out.gallery.setdefault("clean", []).append(batch.images[:head].cpu())
            out.gallery_ids += batch.ids[:head]
