"""Toy models for the randomized-defense tests: a nearest-mean linear classifier on synthetic 3x4x4 images, noise
injected inside a classifier (scriptable to TorchScript), and small purifiers (Gaussian noise, an inversion,
a quantizer that masks gradients)."""

from __future__ import annotations

import torch
from torch import nn

from robaudit.data import ImageSet
from robaudit.purifiers.base import Purifier, randn_like
from robaudit.rng.sample_rng import SampleRNG

SHAPE = (3, 4, 4)
CLASSES = 10


class Card:
    """The part of a model card the attack path reads."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes


def toy_data(n: int = 400, *, seed: int = 0, spread: float = 0.08) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (n, 3, 4, 4) in [0, 1], labels (n,), class means (10, 48))."""
    g = torch.Generator().manual_seed(seed)
    means = 0.2 + 0.6 * torch.rand(CLASSES, 48, generator=g)
    labels = torch.arange(n) % CLASSES
    images = (means[labels] + spread * torch.randn(n, 48, generator=g)).clamp(0, 1).view(n, *SHAPE)
    return images, labels, means


def toy_imageset(images: torch.Tensor, labels: torch.Tensor) -> ImageSet:
    """An in-memory ImageSet of toy images."""
    ids = [f"s{i:04d}" for i in range(len(labels))]
    return ImageSet(images, labels, ids, [str(k) for k in range(CLASSES)], "toy")


class NearestMean(nn.Module):
    """Linear classifier: logits_k = scale * (x . mu_k - |mu_k|^2 / 2); ``sigma`` > 0 injects input noise."""

    def __init__(self, means: torch.Tensor, *, scale: float = 10.0, sigma: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(means.shape[1], means.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(scale * means)
            self.fc.bias.copy_(-scale * (means * means).sum(1) / 2)
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sigma > 0:
            x = x + self.sigma * torch.randn_like(x)
        return self.fc(x.flatten(1))


class WithCard(nn.Module):
    """Gives any module (a TorchScript one too) the card robaudit's attack path reads."""

    def __init__(self, inner: nn.Module, num_classes: int = CLASSES) -> None:
        super().__init__()
        self.inner = inner
        self.card = Card(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class GaussianNoise(Purifier):
    """x + sigma * z, clipped to [0, 1]: a randomized 'purifier'."""

    randomized = True

    def __init__(self, sigma: float = 0.25, ensemble: int = 1) -> None:
        super().__init__()
        self.sigma = sigma
        self.ensemble = ensemble

    def forward(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        generator = self.generator_for(images, generator)
        return (images + self.sigma * randn_like(images, generator)).clamp(0, 1)


class Invert(Purifier):
    """1 - x: a deterministic 'purifier' that fixes a classifier trained on inverted images."""

    randomized = False

    def forward(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return 1 - images


class Quantize(Purifier):
    """Rounds to 5 grey levels: piecewise constant, zero gradient almost everywhere (gradient masking)."""

    randomized = False

    def forward(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.round(images * 4) / 4


def streams(n: int, seed: int = 0, engine: str = "generator") -> SampleRNG:
    """Per-sample random streams for ``n`` samples (sample i seeded from (seed, i)), made by ``engine``."""
    return SampleRNG.for_samples(seed, [str(i) for i in range(n)], engine=engine)


def toy_part_output(attacks: list, batch_size: int, *, n: int, extra_purifier: bool = False, rng: str = "generator"):
    """Evaluate ``attacks`` (resolved, labelled) on ``n`` toy samples as one part: the undefended nearest-mean
    classifier, a Gaussian-noise purifier (3 repeats; non-adaptive and adaptive) and, with ``extra_purifier``, an
    inverting one under BPDA; streams from engine ``rng``. Returns the part's output (records, timings)."""
    import torch

    from robaudit.engine.execute import PartExecutor
    from robaudit.engine.pipeline import Pipeline
    from robaudit.engine.plan import AuditPlan, Defense, Part

    images, labels, means = toy_data(n, seed=4)
    classifier = WithCard(NearestMean(means)).eval()
    noise = GaussianNoise(0.2)
    defenses = [
        Defense("none", None, 1, ["none"], Pipeline(classifier)),
        Defense("noise", noise, 3, ["non-adaptive", "adaptive"], Pipeline(classifier, noise)),
    ]
    if extra_purifier:
        defenses.append(Defense("invert", Invert(), 1, ["bpda"], Pipeline(classifier, Invert())))
    plan = AuditPlan(attacks, defenses, seed=11, eot=2, draws=2, num_samples=n, part_size=n, rng=rng)
    executor = PartExecutor(plan, classifier, device=torch.device("cpu"), batch_size=batch_size)
    return executor(toy_imageset(images, labels), Part(0, 0, n), lambda status: None)


def tiny_ddpm() -> torch.nn.Module:
    """The registered tiny DDPM (DDIM, 2 steps), untrained, on 1x32x32 images."""
    from robaudit.purifiers import PURIFIERS, recipe_for
    from tiny import TINY_RECIPES

    recipe = recipe_for("ddpm", TINY_RECIPES["ddpm"])
    torch.manual_seed(0)
    network = PURIFIERS.get("ddpm").meta["build"](recipe, [1, 32, 32]).eval()
    return PURIFIERS.build("ddpm", {"t_star": 0.05, "steps": 2}, network).eval()


class DdpmOnToys(GaussianNoise):
    """The registered tiny DDPM as a purifier of the toy 3x4x4 images: grey, upsampled to 1x32x32, purified,
    pooled back (randomized)."""

    def __init__(self) -> None:
        super().__init__()
        self.ddpm = tiny_ddpm()

    def forward(self, images: torch.Tensor, *, generator=None) -> torch.Tensor:
        up = torch.nn.functional.interpolate(images.mean(1, keepdim=True), size=32, mode="nearest")
        purified = self.ddpm(up, generator=generator)
        return torch.nn.functional.avg_pool2d(purified, 8).expand(-1, 3, -1, -1).contiguous()


def randomized_part(
    layout, *, batch_size: int = 16, n: int = 10, device: str = "cpu", rng: str = "generator", row_draws: bool = False
):
    """PGD-2 with EOT 4, 3 selection draws and 2 scoring repeats on ``n`` toy samples through a noisy classifier
    (noise inside it; batched with its draws given to rows with ``row_draws``, else one row per call), a
    Gaussian-noise purifier with an ensemble of 2, and the tiny DDPM; ``layout`` for every pipeline, on ``device``,
    the streams from engine ``rng``. Returns (records, passes per condition)."""
    from robaudit.attacks import resolve_attack
    from robaudit.engine.execute import PartExecutor
    from robaudit.engine.pipeline import Pipeline
    from robaudit.engine.plan import AuditPlan, Defense, Part

    images, labels, means = toy_data(n, seed=5)
    classifier = WithCard(NearestMean(means, sigma=0.05)).eval()
    purifiers = {"noise": GaussianNoise(0.2, ensemble=2), "ddpm": DdpmOnToys()}
    randomness = {"randomized_classifier": True, "row_draws": row_draws}
    defenses = [Defense("none", None, 2, ["none"], Pipeline(classifier, **randomness))]
    for label, purifier in purifiers.items():
        scoring = Pipeline(classifier, purifier, **randomness)
        defenses.append(Defense(label, purifier, 2, ["adaptive"], scoring))
    pgd = resolve_attack("pgd", {"steps": 2}, eps=0.1, eps_l2=0.5)
    plan = AuditPlan([pgd], defenses, seed=3, eot=4, draws=3, num_samples=n, part_size=n, layout=layout, rng=rng)
    for defense in defenses:
        defense.scoring.to(device)
    executor = PartExecutor(plan, classifier.to(device), device=torch.device(device), batch_size=batch_size)
    out = executor(toy_imageset(images, labels), Part(0, 0, n), lambda status: None)
    kinds = ("forward", "backward", "purifier")
    passes = {key: {k: v for k, v in t.items() if k in kinds} for key, t in out.timings.items()}
    return out.records, passes


def randomized_toy_audit(seed: int, attacks: list, *, n: int = 24, sigma: float = 0.25, row_draws: bool = True):
    """``attacks`` (resolved) against a nearest-mean classifier with noise inside (``sigma``), audited as the engine
    audits a user's randomized model: EOT 4, 10 selection draws, 10 scoring repeats, its draws given to rows
    (``row_draws``). Toy data and streams seeded from ``seed``. Returns (records, the classifier passes spent)."""
    from robaudit.engine.execute import PartExecutor
    from robaudit.engine.pipeline import Pipeline
    from robaudit.engine.plan import AuditPlan, Defense, Part

    images, labels, means = toy_data(n, seed=seed, spread=0.12)
    classifier = WithCard(NearestMean(means, sigma=sigma)).eval()
    bare = Pipeline(classifier, randomized_classifier=True, row_draws=row_draws)
    plan = AuditPlan(
        attacks, [Defense("none", None, 10, ["none"], bare)], seed=seed, eot=4, draws=10, num_samples=n, part_size=n
    )
    executor = PartExecutor(plan, classifier, device=torch.device("cpu"), batch_size=n)
    out = executor(toy_imageset(images, labels), Part(0, 0, n), lambda status: None)
    return out.records, sum(t.get("forward", 0) + t.get("backward", 0) for t in out.timings.values())


def worst_of_n_standing(records: list) -> int:
    """Samples robust in every scoring draw of every attack condition (the headline's worst of N)."""
    robust: dict[str, bool] = {}
    for record in records:
        if not record["condition"].startswith("none|"):
            robust[record["sample_id"]] = robust.get(record["sample_id"], True) and record["correct"]
    return sum(robust.values())
