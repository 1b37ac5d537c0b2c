"""FGSM and PGD (Linf, L2), implemented in robaudit: EOT gradients, each sample's best iterate, restarts as a cascade.

PGD: Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks". FGSM: Goodfellow et al.
2015. Distance: Linf (``pgd``, ``fgsm``) or L2 (``pgdl2``). Every iterate of a run is judged on the EOT draws its
gradient already took (selection draws, independent of scoring); a run offers each sample's best iterate and its
last one to the cascade, which judges both on fresh selection draws; never the clean image. Restarts form a
cascade: a restart attacks the samples not yet fooled in every selection draw.
"""

from __future__ import annotations

import torch
from torch import nn

from robaudit.attacks.base import ATTACKS, AttackFn
from robaudit.attacks.eot_growth import GrowingEOT
from robaudit.attacks.gradient import check_eot_mode, cross_entropy, eot_gradient
from robaudit.attacks.loss_trace import LossTrace
from robaudit.attacks.selection import BestSoFar, Cascade, EarlyExit, Judged, judge, project, reusable_verdicts
from robaudit.errors import ConfigError
from robaudit.rng.sample_rng import SampleRNG


def default_step_size(params: dict) -> dict:
    """Fill ``alpha`` (step size) when unset: 2.5 * eps / steps (Madry et al.), so reports state the value used; a
    ConfigError for fewer than one step."""
    if not isinstance(params.get("steps"), int) or params["steps"] < 1:
        raise ConfigError(f"steps must be a whole number of at least 1 (e.g. steps: 20), got {params.get('steps')!r}")
    if params.get("alpha") is None:
        params = {**params, "alpha": 2.5 * params["eps"] / params["steps"]}
    return params


def random_start(images: torch.Tensor, rng: SampleRNG, *, norm: str, eps: float) -> torch.Tensor:
    """A uniform point of the Linf ball, or a random direction at a uniform radius of the L2 ball, per sample."""
    if norm == "Linf":
        delta = (2 * rng.rand_like(images) - 1) * eps
    else:
        delta = rng.randn_like(images)
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta / norms * eps * rng.rand(1, 1, 1, device=images.device)
    return project(images + delta, images, norm=norm, eps=eps)


def ascent_step(x: torch.Tensor, grad: torch.Tensor, *, norm: str, alpha: float) -> torch.Tensor:
    """One steepest-ascent step: alpha * sign(grad) (Linf) or alpha * grad / ||grad|| (L2)."""
    if norm == "Linf":
        return x + alpha * grad.sign()
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return x + alpha * grad / norms


class PGDRun:
    """One PGD run from a random start: ``run(images, labels)`` -> [each sample's best iterate] (a cascade stage).

    With ``early_exit`` a sample stops once its verdict is settled (``EarlyExit``: on a deterministic model, the
    first iterate that fools it, which is kept); ``draws`` selection draws confirm it on a randomized model.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str,
        eps: float,
        alpha: float,
        steps: int,
        eot: int,
        draws: int = 1,
        early_exit: bool = True,
        random_start: bool = True,
        eot_mode: str = "mean",
        eot_growth: int = 1,
    ) -> None:
        self.model, self.norm, self.eps, self.alpha, self.steps, self.eot = model, norm, eps, alpha, steps, eot
        self.draws, self.early_exit, self.random_start = draws, early_exit, random_start
        self.eot_mode, self.eot_growth = check_eot_mode(eot_mode), eot_growth

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, rng: SampleRNG) -> list[torch.Tensor | Judged]:
        """images (M, C, H, W), labels (M,), streams -> candidates (M, C, H, W): see ``candidates``.

        The best iterate is judged on the few EOT draws of its own step, which can favour a lucky iterate on a
        randomized pipeline; offering the last iterate too lets the cascade's fresh selection draws decide.
        """
        x = random_start(images, rng, norm=self.norm, eps=self.eps) if self.random_start else images.clone()
        best = BestSoFar(images)
        done = EarlyExit(self.model, labels, rng, draws=self.draws, enabled=self.early_exit, step_draws=self.eot)
        active = torch.arange(images.shape[0], device=images.device)
        trace = LossTrace(images.shape[0], images.device, noisy=self.eot > 1)
        self.incomplete = lambda: trace.incomplete() & ~done.settled  # the samples still progressing at the end
        eot = GrowingEOT(
            self.model, len(labels), eot=self.eot, growth=self.eot_growth, mode=self.eot_mode, device=x.device
        )
        for _ in range(self.steps):
            xs, ys, streams = x[active], labels[active], rng[active]
            grad, verdict, _ = eot(xs, ys, active, streams, lambda index: cross_entropy)
            trace.record(active, verdict.loss)
            kept = best.update(active, xs, verdict)
            x[active] = project(ascent_step(xs, grad, norm=self.norm, alpha=self.alpha), images[active], **self.ball)
            active = done.active(best, active, kept)
            if active.numel() == 0:
                return self.candidates(best, x)
        best.update(active, x[active], judge(self.model, x[active], labels[active], draws=self.eot, rng=rng[active]))
        return self.candidates(best, x)

    def candidates(self, best: BestSoFar, last: torch.Tensor) -> list[torch.Tensor | Judged]:
        """What the run offers the cascade: on a deterministic model in float32 the best iterate with the verdicts
        its passes already gave (the last iterate is among those judged), else the best and the last iterate."""
        if reusable_verdicts(self.model, last.device):
            return [Judged(best.best, best.verdict)]
        return [best.best, last]

    @property
    def ball(self) -> dict:
        """The threat model's ball, as ``project`` takes it."""
        return {"norm": self.norm, "eps": self.eps}


def fgsm_step(model: nn.Module, *, eps: float, eot: int):
    """The FGSM stage: x + eps * sign(EOT gradient of the cross-entropy at x)."""

    def stage(images: torch.Tensor, labels: torch.Tensor, rng: SampleRNG) -> list[torch.Tensor]:
        grad, _, _ = eot_gradient(model, images, labels, loss=cross_entropy, draws=eot, rng=rng)
        return [ascent_step(images, grad, norm="Linf", alpha=eps)]

    return stage


@ATTACKS.register("fgsm", description="FGSM, one signed-gradient step (Goodfellow et al. 2015)", norm="Linf", tier=1)
def fgsm(model: nn.Module, *, eot: int = 1, draws: int = 1, eps: float = 8 / 255) -> AttackFn:
    """Fast gradient sign method, Linf, with an EOT gradient on a randomized pipeline."""
    return Cascade(model, [("fgsm", fgsm_step(model, eps=eps, eot=eot))], norm="Linf", eps=eps, draws=draws)


def pgd_cascade(
    model: nn.Module,
    *,
    norm: str,
    eps: float,
    steps: int,
    alpha: float | None,
    restarts: int,
    eot: int,
    draws: int,
    early_exit: bool = True,
    random_start: bool = True,
    eot_mode: str = "mean",
    eot_growth: int = 1,
) -> Cascade:
    """``restarts`` PGD runs as a cascade (each on the samples not yet fooled in every selection draw)."""
    if restarts > 1 and not random_start:
        raise ConfigError("pgd: restarts > 1 need random_start (without it every restart repeats the first)")
    step = default_step_size({"alpha": alpha, "eps": eps, "steps": steps})["alpha"]
    run = PGDRun(
        model,
        norm=norm,
        eps=eps,
        alpha=step,
        steps=steps,
        eot=eot,
        draws=draws,
        early_exit=early_exit,
        random_start=random_start,
        eot_mode=eot_mode,
        eot_growth=eot_growth,
    )
    return Cascade(model, [(f"restart-{i}", run) for i in range(max(1, restarts))], norm=norm, eps=eps, draws=draws)


PGD_DOC = (
    "Projected gradient descent on the cross-entropy, {norm}; ``restarts`` random starts; ``early_exit``: stop working "
    "on a sample once its verdict is settled (never raises robust accuracy); ``random_start`` false: start at the "
    "clean image (BIM), one run; ``eot_mode``: how EOT averages the draws' gradients on a randomized pipeline, mean "
    "or selective (attacks.gradient); ``eot_growth``: on a randomized pipeline, a sample's EOT draws double where "
    "its step's signs are unresolved, up to this multiple (attacks.eot_growth; 1: fixed); ``randomized_steps``: the "
    "steps on a randomized pipeline (None: ``steps``; a convergence rung's: the steps below it, its effort in EOT "
    "draws)."
)


def escalate_pgd(params: dict, factor: int) -> dict:
    """``factor`` times the steps (the step size kept), from new random starts: the rung's restarts are as many as the
    attack's, each drawn afresh (its own seed), so the per-sample worst case over the ladder has twice the restarts
    of the attack below -- one more at least, as the convergence check asks -- at half the cost of adding a restart
    to the rung itself. On a randomized pipeline the rung keeps the steps (``randomized_steps``) and grows each
    sample's EOT draws up to ``factor`` times where its gradient's signs are unresolved (``eot_growth``), so it costs
    between 1 and ``factor`` times the attack below, not its square."""
    return {
        **params,
        "steps": params["steps"] * factor,
        "random_start": True,
        "randomized_steps": params.get("randomized_steps") or params["steps"],
        "eot_growth": max(int(params.get("eot_growth") or 1), factor),
    }


@ATTACKS.register(
    "pgd",
    description="PGD, Linf, random start, restarts (Madry et al. 2018)",
    norm="Linf",
    tier=2,
    smoke={"steps": 5},
    derive=default_step_size,
    escalate=escalate_pgd,
)
def pgd(
    model: nn.Module,
    *,
    eps: float = 8 / 255,
    steps: int = 20,
    alpha: float | None = None,
    restarts: int = 1,
    eot: int = 1,
    draws: int = 1,
    early_exit: bool = True,
    random_start: bool = True,
    eot_mode: str = "mean",
    eot_growth: int = 1,
    randomized: bool = False,
    randomized_steps: int | None = None,
) -> AttackFn:
    steps = randomized_steps if randomized and randomized_steps else steps
    settings = {"steps": steps, "alpha": alpha, "restarts": restarts, "eot": eot, "draws": draws}
    settings["eot_growth"] = eot_growth
    return pgd_cascade(
        model, norm="Linf", eps=eps, early_exit=early_exit, random_start=random_start, eot_mode=eot_mode, **settings
    )


@ATTACKS.register(
    "pgdl2",
    description="PGD, L2, random start, restarts (Madry et al. 2018)",
    norm="L2",
    tier=2,
    smoke={"steps": 5},
    derive=default_step_size,
    escalate=escalate_pgd,
)
def pgdl2(
    model: nn.Module,
    *,
    eps: float = 0.5,
    steps: int = 20,
    alpha: float | None = None,
    restarts: int = 1,
    eot: int = 1,
    draws: int = 1,
    early_exit: bool = True,
    random_start: bool = True,
    eot_mode: str = "mean",
    eot_growth: int = 1,
    randomized: bool = False,
    randomized_steps: int | None = None,
) -> AttackFn:
    steps = randomized_steps if randomized and randomized_steps else steps
    settings = {"steps": steps, "alpha": alpha, "restarts": restarts, "eot": eot, "draws": draws}
    settings["eot_growth"] = eot_growth
    return pgd_cascade(
        model, norm="L2", eps=eps, early_exit=early_exit, random_start=random_start, eot_mode=eot_mode, **settings
    )


pgd.__doc__, pgdl2.__doc__ = PGD_DOC.format(norm="Linf"), PGD_DOC.format(norm="L2")
