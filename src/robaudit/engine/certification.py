"""The certification phase of a run (``certify:``, Cohen et al. 2019; Carlini et al. 2023): after the attacks,
every sample is certified by randomized smoothing at each sigma, for the undefended classifier (noise alone) and for
each diffusion purifier (one-shot denoising at the matched step). One record per (sample, defense, sigma) goes to
``certified/part-*.jsonl``, the part being the run's unit of resuming and sharding; the draws are seeded per sample,
so neither the batch size nor the shard changes a record."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from robaudit.certify.attack import smooth_adv
from robaudit.certify.bounds import Certificate
from robaudit.certify.sequential import Looks
from robaudit.certify.smoothing import OneShotDenoiser, SmoothedClassifier
from robaudit.certify.spec import CertifySpec
from robaudit.data import ImageSet
from robaudit.engine.passes import PassCounter, purifier_network
from robaudit.engine.plan import Defense, Part, Shard
from robaudit.errors import ConfigError
from robaudit.progress import console, progress_bar
from robaudit.rng.seeding import derive_seed
from robaudit.runs.rundir import RunDir


def denoiser_network(defense: Defense, input_shape: tuple[int, ...]) -> nn.Module | None:
    """The diffusion network a defense certifies through (None: the undefended classifier, noise alone); a
    ConfigError for a purifier that cannot certify."""
    if defense.purifier is None:
        return None
    network = getattr(defense.purifier, "network", None)
    if network is None or not hasattr(network, "alphas_cumprod") or not hasattr(network, "noise_predictor"):
        raise ConfigError(
            f"certify: purifier {defense.label!r} cannot certify; certification needs a diffusion model's one-shot "
            "denoiser (ddpm, also from the hub or a folder) or no purifier"
        )
    if list(getattr(network, "input_size", input_shape)) != list(input_shape):
        raise ConfigError(
            f"certify: purifier {defense.label!r} runs at {network.input_size}, the classifier at {list(input_shape)}; "
            "certification needs the diffusion model at the classifier's resolution"
        )
    return network


def smoothed_classifiers(
    model: nn.Module, defenses: list[Defense], spec: CertifySpec, *, input_shape: tuple[int, ...]
) -> dict[str, SmoothedClassifier]:
    """``{defense@sigma: smoothed classifier}`` at every sigma: through each purifier when the run has purifiers,
    else the undefended classifier on noise alone."""
    smoothed = {}
    purified = [defense for defense in defenses if defense.purifier is not None]
    for defense in purified or defenses:
        network = denoiser_network(defense, input_shape)
        for sigma in spec.sigma:
            denoiser = OneShotDenoiser.matched(network, sigma=sigma) if network is not None else None
            smoothed[f"{defense.label}@{sigma:g}"] = SmoothedClassifier(
                model, sigma=sigma, num_classes=model.card.num_classes, denoiser=denoiser, batch_size=spec.batch
            )
    return smoothed


def certify_part(
    smoothed: dict[str, SmoothedClassifier],
    dataset: ImageSet,
    part: Part,
    *,
    spec: CertifySpec,
    seed: int,
    eps: float,
    device: torch.device,
    on_done: Callable[[str], None] = lambda key: None,
    counter: PassCounter | None = None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """The certification records of one part's samples, and the seconds each smoothed classifier took (kept out of
    the records: ``{key: {seconds, samples}}``). ``eps``: the L2 budget SmoothAdv attacks within, and the radius
    sequential CERTIFY decides; ``on_done`` is called with each smoothed classifier's key once its samples
    are certified and attacked; ``counter`` counts their model passes (``engine.passes``), kept beside the seconds."""
    images = dataset.images[part.start : part.stop].float().to(device)
    labels = dataset.labels[part.start : part.stop].tolist()
    ids = dataset.ids[part.start : part.stop]
    records, seconds = [], {}
    for key, classifier in smoothed.items():
        seeds = [derive_seed(seed, "certify", key, sample) for sample in ids]
        started = time.perf_counter()
        with counter.charge(key) if counter is not None else contextlib.nullcontext():
            certificates = certificates_of(classifier, images, labels, seeds, spec=spec, eps=eps)
            attacked = attacked_predictions(classifier, images, labels, seeds, spec=spec, eps=eps)
        seconds[key] = {"seconds": time.perf_counter() - started, "samples": len(ids)}
        if counter is not None:
            seconds[key]["passes"] = counter.take(key).to_dict()
        on_done(key)
        for sample, label, certificate, broken in zip(ids, labels, certificates, attacked, strict=True):
            records.append(certified_record(sample, label, key, classifier.sigma, certificate, broken, n0=spec.n0))
    return records, seconds


def certified_record(
    sample: str,
    label: int,
    key: str,
    sigma: float,
    certificate: Certificate,
    attacked: tuple[int, int] | None,
    *,
    n0: int,
) -> dict[str, Any]:
    """One (sample, smoothed classifier) record: the certificate, the draws it took (``draws``: selection and
    estimation; ``estimation_draws``) and why they stopped; with an attack, PREDICT's answer on the SmoothAdv image
    and its draws."""
    record = {
        "sample_id": sample,
        "label": label,
        "smoothed": key,
        "sigma": sigma,
        "prediction": certificate.prediction,
        "radius": certificate.radius,
        "p_lower": certificate.p_lower,
        "votes": certificate.votes,
        "draws": n0 + certificate.n,
        "estimation_draws": certificate.n,
        "stopped": certificate.stopped,
    }
    if attacked is not None:
        record["attacked_prediction"], record["attacked_draws"] = attacked
    return record


def certificates_of(
    classifier: SmoothedClassifier,
    images: torch.Tensor,
    labels: list[int],
    seeds: list[int],
    *,
    spec: CertifySpec,
    eps: float,
) -> list[Certificate]:
    """CERTIFY per sample as ``spec.mode`` says: Cohen et al.'s ``spec.n`` draws for every sample (fixed), or draws
    that stop once the sample is decided at the run's L2 budget ``eps``, what a gate reads (or once its radius is
    known, ``stop: radius``; sequential)."""
    if spec.mode == "fixed":
        return classifier.certify(images, seeds, n0=spec.n0, n=spec.n, alpha=spec.alpha)
    rule = spec.rule(radii=(eps,))
    return classifier.certify_sequential(images, seeds, n0=spec.n0, rule=rule, labels=labels)


def attacked_predictions(
    smoothed: SmoothedClassifier,
    images: torch.Tensor,
    labels: list[int],
    seeds: list[int],
    *,
    spec: CertifySpec,
    eps: float,
) -> list[tuple[int, int] | None]:
    """PREDICT's answer (a class or ``bounds.ABSTAIN``) on each sample's SmoothAdv image at L2 ``eps`` and the draws
    it took (``spec.mode``: sequential stops each as soon as its top class separates); None for every sample when the
    spec runs no attack."""
    if spec.steps == 0:
        return [None] * len(images)
    target = torch.tensor(labels, device=images.device)
    attack_seeds = [derive_seed(s, "attack") for s in seeds]
    with torch.enable_grad():
        adversarial = smooth_adv(smoothed, images, target, attack_seeds, eps=eps, steps=spec.steps, eot=spec.eot)
    judge_seeds = [derive_seed(s, "judge") for s in seeds]
    if spec.mode == "fixed":
        return [(answer, spec.n) for answer in smoothed.predict(adversarial, judge_seeds, n=spec.n, alpha=spec.alpha)]
    trackers = smoothed.predict_sequential(adversarial, judge_seeds, looks=Looks(spec.n, spec.alpha))
    return [(int(answer), int(draws)) for answer, draws in zip(trackers.answers, trackers.draws, strict=True)]


def run_certification(
    model: nn.Module,
    defenses: list[Defense],
    dataset: ImageSet,
    parts: list[Part],
    *,
    spec: CertifySpec,
    seed: int,
    eps: float,
    run_dir: RunDir,
    shard: Shard,
    device: torch.device,
) -> None:
    """Certify (and attack, at the L2 budget ``eps``) this shard's parts that have no certification records yet, on
    ``device`` (where the model and the purifiers are)."""
    smoothed = smoothed_classifiers(model, defenses, spec, input_shape=tuple(dataset.shape))
    networks = [purifier_network(d.purifier) for d in defenses if d.purifier is not None]
    counter = PassCounter(model, networks)  # after the attacks: the hooks now count for certification
    todo = [part for part in parts if shard.owns(part) and not run_dir.has_certified(part.name)]
    if not todo:
        return
    console.print(f"certifying {len(smoothed)} smoothed classifier(s): {', '.join(smoothed)}")
    with progress_bar() as bar, torch.no_grad():
        task = bar.add_task(f"certify {shard}", total=len(todo) * len(smoothed), status="")

        def done(key: str) -> None:
            bar.update(task, advance=1, status=key)

        for part in todo:
            records, seconds = certify_part(
                smoothed, dataset, part, spec=spec, seed=seed, eps=eps, device=device, on_done=done, counter=counter
            )
            run_dir.write_certified(part.name, records, seconds)
