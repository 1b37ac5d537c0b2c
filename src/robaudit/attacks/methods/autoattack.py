"""AutoAttack (Croce & Hein 2020), run through robaudit's cascade (its Square stage: ``attacks.methods.square``).

APGD (CE, DLR, targeted DLR) and Linf Square are robaudit's own (``attacks.methods.apgd``, ``attacks.methods.square``:
per-sample random starts, step sizes and proposals); FAB-T and L2 Square are torchattacks' *single runs* (FAB's
``attack_single_run_targeted``, Square's ``attack_single_run``), and robaudit does the rest itself, because
torchattacks' ``perturb`` loops return the clean image for every sample one forward pass did not fool and skip
samples one forward pass got wrong. Here:

- every component's candidates go to the cascade, which judges them on selection draws and keeps each sample's best
  -- never the clean image;
- a sample leaves the cascade only when fooled in every selection draw;
- ``version: auto`` (the default) runs ``standard`` (APGD-CE, APGD-T, FAB-T, Square) on a deterministic pipeline and
  ``rand`` (APGD-CE and APGD-DLR with ``eot_iter`` EOT draws, 20 by default) on a randomized one.

torchattacks 3.5.1 traps this module guards against: DLR losses index the 3rd (untargeted) and 4th (targeted)
largest logit, so they are undefined below 3 / 4 classes -- those components are dropped and the report says so;
torchattacks' ``n_classes`` means "targets = n_classes - 1" -- robaudit passes ``targets + 1`` to FAB; its default
seed is the clock -- robaudit always passes one; its own AutoAttack wrapper builds APGD/FAB with 10 steps --
robaudit builds the components itself with ``steps`` (100); its Square draws one proposal window per query for the
whole batch -- robaudit's Linf Square draws per-sample windows, and L2 Square runs one sample at a time from the
sample's own stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchattacks import FAB

from robaudit.attacks.base import ATTACKS, AttackFn
from robaudit.attacks.methods.apgd import APGDRun
from robaudit.attacks.methods.square import square_stage
from robaudit.attacks.selection import Cascade, Stage, run_stage
from robaudit.rng.sample_rng import SampleRNG

VERSIONS = ("auto", "standard", "rand", "fast", "restarts", "square")
WANTED = {
    "standard": ["apgd-ce", "apgd-t", "fab-t", "square"],
    "rand": ["apgd-ce", "apgd-dlr"],
    "fast": ["apgd-ce", "apgd-t", "square"],
    "restarts": ["apgd-ce", "apgd-dlr"],  # the convergence check's rung: the APGD restarts ``plus`` adds
    "square": ["square"],  # the headline check's rung of ``fast``: the Square it deferred to the check
}
EFFORTS = {"fast": {"n_target_classes": 3, "n_queries": 1000, "steps": 50}}
STANDARD_EFFORT = {"n_target_classes": 9, "n_queries": 5000, "steps": 100}  # AutoAttack's


def plan_components(*, version: str, num_classes: int, n_target_classes: int = 9) -> tuple[list[str], list[str]]:
    """The components AutoAttack runs for ``num_classes`` classes, and the dropped ones with the reason."""
    targets = min(n_target_classes, num_classes - 1)
    if version not in WANTED:
        raise ValueError(f"AutoAttack version must be one of {', '.join(WANTED)}, got {version!r}")
    kept, dropped = [], []
    for name in WANTED[version]:
        if name == "apgd-t" and num_classes < 4:
            dropped.append(f"apgd-t (targeted DLR loss needs >= 4 classes, model has {num_classes})")
        elif name == "apgd-dlr" and num_classes < 3:
            dropped.append(f"apgd-dlr (DLR loss needs >= 3 classes, model has {num_classes})")
        elif name in ("apgd-t", "fab-t") and targets < 1:
            dropped.append(f"{name} (no target class)")
        else:
            kept.append(name)
    return kept, dropped


def fab_stage(attack: FAB, target: int) -> Stage:
    """One targeted FAB run toward the ``target``-th most likely class (its minimal adversarial, where found).

    torchattacks' single targeted run without a random start draws nothing at random.
    """

    def stage(images: torch.Tensor, labels: torch.Tensor, rng: SampleRNG) -> list[torch.Tensor]:
        attack.target_class = target
        return [attack.attack_single_run_targeted(images, labels, use_rand_start=False)]

    stage.attack = attack
    return stage


@dataclass
class Settings:
    """What every component of one AutoAttack shares."""

    model: nn.Module
    targets: int
    steps: int
    eot: int
    n_queries: int
    common: dict  # norm, eps, seed (torchattacks' FAB and Square take them as keywords)
    draws: int = 1
    early_exit: bool = True
    targeting: str = "logits"  # how APGD-T ranks its target classes (``attacks.methods.apgd.TARGETING``)
    eot_mode: str = "mean"  # how APGD averages its EOT draws (``attacks.gradient``)
    restarts: int = 1  # runs of each untargeted APGD, each from its own random start (``plus``: 5)

    @property
    def norm(self) -> str:
        return self.common["norm"]

    @property
    def eps(self) -> float:
        return self.common["eps"]

    def apgd(self, **loss: object) -> APGDRun:
        """An APGD run with these settings and ``loss`` ("ce", "dlr") or ``target_rank``."""
        shared = {"steps": self.steps, "eot": self.eot, "draws": self.draws, "early_exit": self.early_exit}
        choices = {"targeting": self.targeting, "eot_mode": self.eot_mode}
        return APGDRun(self.model, norm=self.norm, eps=self.eps, **choices, **shared, **loss)


def apgd_untargeted(loss: str):
    """The stages of APGD on ``loss`` ("ce" or "dlr"): one per restart, each from its own random start (a restart
    draws the next values of the samples' streams)."""

    def stages(s: Settings) -> list[tuple[str, Stage]]:
        run = run_stage(s.apgd(loss=loss))
        return [(f"apgd-{loss}" + (f"/{r}" if r else ""), run) for r in range(max(1, s.restarts))]

    return stages


def apgd_targeted(s: Settings) -> list[tuple[str, Stage]]:
    """APGD-T: one stage per target, the classes ranked 2nd, 3rd, ... at the clean image (by ``s.targeting``)."""
    return [(f"apgd-t/{rank - 1}", run_stage(s.apgd(target_rank=rank))) for rank in range(2, s.targets + 2)]


def fab_targeted(s: Settings) -> list[tuple[str, Stage]]:
    """FAB-T: one stage per target class (torchattacks reads n_classes as "targets = n_classes - 1")."""
    attack = FAB(s.model, steps=s.steps, multi_targeted=True, n_classes=s.targets + 1, n_restarts=1, **s.common)
    return [(f"fab-t/{t - 1}", fab_stage(attack, t)) for t in range(2, s.targets + 2)]


def square_single(s: Settings) -> list[tuple[str, Stage]]:
    """Square: one stage of ``n_queries`` queries."""
    square = square_stage(s.model, n_queries=s.n_queries, p_init=0.8, rescale=False, **s.common)  # as the reference
    return [("square", square)]


COMPONENTS = {
    "apgd-ce": apgd_untargeted("ce"),
    "apgd-dlr": apgd_untargeted("dlr"),
    "apgd-t": apgd_targeted,
    "fab-t": fab_targeted,
    "square": square_single,
}


def version_effort(version: str | None, given: dict) -> dict:
    """``n_target_classes``, ``n_queries`` and ``steps`` of ``given`` (a mapping of params), the unset ones (None or
    absent) from ``version``'s effort (fast: 3, 1000 and 50; else AutoAttack's 9, 5000 and 100)."""
    effort = EFFORTS.get(version, STANDARD_EFFORT)
    return {key: effort[key] if given.get(key) is None else given[key] for key in effort}


def fill_effort(params: dict) -> dict:
    """Fill ``n_target_classes``, ``n_queries`` and ``steps`` from the version when unset, so reports state the
    values used (``version_effort``)."""
    return {**params, **version_effort(params.get("version"), params)}


PLUS_RESTARTS = 5  # AutoAttack's ``plus``: 5 restarts of APGD-CE (and APGD-DLR), iterations and queries unchanged


def defer_to_check(params: dict) -> dict:
    """The params of ``params``'s AutoAttack when the headline check follows it. ``fast`` defers its Square (the
    black-box component, whose role is the sanity check against gradient masking) to the check, which runs it on
    the flagged and a sized seeded draw of the standing samples, and on all of them if any falls. ``rand`` (and
    ``auto``, which runs it on a randomized pipeline) runs at half its EOT iterations (``eot_iter``; 10 of 20): the
    check's rung doubles them, so the samples the audit leans on -- those left standing -- meet AutoAttack-rand's own
    20 EOT iterations from a new random start, and the others left at half the cost (docs/numbers.md). On a
    deterministic pipeline ``auto`` draws no EOT, and nothing changes."""
    if params.get("version") == "fast":
        return {**params, "square_in_check": True}
    if params.get("version") in ("auto", "rand") and params.get("eot_iter"):
        return {**params, "eot_iter": max(1, int(params["eot_iter"]) // 2)}
    return params


def describe_rung(params: dict) -> str | None:
    """How a report names a rung of these params: the Square that ``fast`` deferred; None: an escalated rung."""
    if params.get("version") != "square":
        return None
    return f"autoattack's Square ({params.get('n_queries')} queries; fast defers it to this check)"


def escalate_autoattack(params: dict, factor: int) -> dict:
    """The escalation AutoAttack's authors use, ``plus``: its extra restarts at the same iterations -- 5 runs each of
    APGD-CE and APGD-DLR from new random starts (``factor`` / 2 times that beyond a 2x rung). The rung runs those
    restarts alone (version ``restarts``): the components ``plus`` runs once, as ``standard`` does (APGD-T, FAB-T,
    Square at the same queries, whose patch schedule is keyed to them), already ran below it, so the per-sample worst
    case over both is ``plus``'s. FAB's 5 untargeted restarts are left out: torchattacks' FAB draws its random start
    for a whole batch from the global RNG, which would tie a sample's verdict to its batch. A ``fast`` whose Square
    was deferred to the headline check (``defer_to_check``) escalates first to that Square (version ``square``, below
    a 4x rung), then as above.

    On a randomized pipeline the rung is one new run of each (``randomized_restarts``: 1) at ``factor`` times the
    EOT iterations: ``factor`` times the base attack's cost per re-attacked sample, not 5 x ``factor``. There the
    failure the rung looks for is a noisy gradient (Athalye et al. 2018), which more EOT draws answer, and the
    new random start makes the worst case over the two a second restart (docs/numbers.md)."""
    if params.get("square_in_check"):
        if factor < 4:
            return {**params, "version": "square", "square_in_check": False}
        return escalate_autoattack({**params, "square_in_check": False}, factor // 2)
    restarts = max(int(params.get("restarts") or 1), PLUS_RESTARTS * max(1, factor // 2))
    escalated = {**params, "version": "restarts", "restarts": restarts, "randomized_restarts": 1}
    if params.get("eot_iter") is not None:
        escalated["eot_iter"] = params["eot_iter"] * factor
    return escalated


@ATTACKS.register(
    "autoattack",
    description="AutoAttack: standard (APGD-CE, APGD-T, FAB-T, Square), rand (APGD+EOT), fast, restarts; auto picks",
    tier=3,
    derive=fill_effort,
    escalate=escalate_autoattack,
    checked=defer_to_check,
    describe_rung=describe_rung,
    smoke={"steps": 5, "n_queries": 30, "eot_iter": 2},
)
def autoattack(
    model: nn.Module,
    *,
    num_classes: int,
    seed: int,
    draws: int = 1,
    randomized: bool = False,
    eps: float = 8 / 255,
    norm: str = "Linf",
    version: str = "auto",
    steps: int | None = None,
    n_target_classes: int | None = None,
    n_queries: int | None = None,
    eot_iter: int = 20,
    early_exit: bool = True,
    eot_mode: str = "mean",
    restarts: int = 1,
    randomized_restarts: int | None = None,
    square_in_check: bool = False,
) -> AttackFn:
    """Class-count-aware AutoAttack. With C classes it targets min(n_target_classes, C - 1) classes.

    ``version: fast`` keeps the guarantee of ``standard`` -- the worst case over white-box (APGD-CE, APGD-T) and
    black-box (Square) components -- for far fewer passes: APGD-CE and APGD-T at ``steps`` (50), APGD-T toward the
    ``n_target_classes`` (3) classes a linear estimate puts nearest (MALT's targeting), no FAB-T, and Square with
    ``n_queries`` (1000) on the samples still standing -- or, with ``square_in_check`` (set when the headline check
    follows, ``defer_to_check``), on the check's sized draw of them. ``version: square``: that Square alone.
    ``early_exit`` stops APGD on a sample once its verdict is settled. ``eot_mode``: how APGD averages its EOT draws
    on a randomized pipeline, mean or selective (``attacks.gradient``). ``restarts``: runs of the untargeted APGD,
    each from a new random start (``plus`` uses 5; the check's rung does); ``randomized_restarts``: those runs on a
    randomized pipeline (None: ``restarts``; the rung's: 1, at more EOT)."""
    if version not in VERSIONS:
        raise ValueError(f"AutoAttack version must be one of {', '.join(VERSIONS)}, got {version!r}")
    run = ("rand" if randomized else "standard") if version == "auto" else version
    effort = version_effort(run, {"n_target_classes": n_target_classes, "n_queries": n_queries, "steps": steps})
    kept, dropped = plan_components(version=run, num_classes=num_classes, n_target_classes=effort["n_target_classes"])
    deferred = ["square"] if square_in_check and run == "fast" else []
    kept = [name for name in kept if name not in deferred]
    settings = Settings(
        model,
        targets=min(effort["n_target_classes"], num_classes - 1),
        steps=effort["steps"],
        eot=eot_iter if run == "rand" or (run in ("fast", "restarts") and randomized) else 1,
        n_queries=effort["n_queries"],
        common={"norm": norm, "eps": eps, "seed": seed},
        draws=draws,
        early_exit=early_exit,
        targeting="linear" if run == "fast" else "logits",
        eot_mode=eot_mode,
        restarts=randomized_restarts if randomized and randomized_restarts else restarts,
    )
    stages = [stage for name in kept for stage in COMPONENTS[name](settings)]
    cascade = Cascade(model, stages, norm=norm, eps=eps, draws=draws)
    cascade.details = details(run, kept, dropped, deferred, forced=randomized and version == "standard")
    return cascade


def details(run: str, kept: list[str], dropped: list[str], deferred: list[str], *, forced: bool) -> dict:
    """What a built AutoAttack reports about itself (the run's manifest and report read it)."""
    return {
        "version": run,
        "components": kept,
        "dropped": dropped,
        "deferred_to_check": deferred,
        "forced_standard_on_randomized": forced,
    }
