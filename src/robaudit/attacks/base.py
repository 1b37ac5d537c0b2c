"""The attack contract: seeded, float32, eval mode, inputs in [0, 1], perturbations projected onto the eps-ball."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from robaudit.attacks.precision import attack_precision
from robaudit.attacks.selection import project
from robaudit.components.hyperparameters import SUPPLIED
from robaudit.components.registry import Registry
from robaudit.config import parse_eps
from robaudit.errors import ConfigError
from robaudit.frozen import frozen, thawed
from robaudit.rng.sample_rng import SampleRNG, is_randomized
from robaudit.rng.seeding import isolated_global_rng


@dataclass(frozen=True)
class AttackEntry:
    """What an attack registers besides its factory, read by robaudit (never its name): its default ``norm``, ``access``
    ("white-box": gradients; "black-box": queries only), ``tier`` (strength order of white-box attacks at one
    budget: 1 single-step, 2 iterative, 3 an ensemble of iterative attacks; None: not ordered, e.g. a minimal-norm
    attack), ``derive`` (fills parameters that follow from others, e.g. PGD's step size), ``escalate`` ((params,
    factor) -> the params of ``factor`` times the effort (steps, restarts, queries), for the convergence check;
    None: nothing to escalate, e.g. one FGSM step), ``checked`` ((params) -> its params when the headline check
    follows it, e.g. fast AutoAttack defers its Square to the check; None: unchanged), ``describe_rung`` ((params)
    -> how reports name a rung of these params, or None for "a 2x rung of ...") and ``smoke`` (small parameters
    under which the contract tests run it in seconds: a new attack brings its own, so the tests cover it with no
    other edit)."""

    norm: str | None = None
    access: str = "white-box"
    tier: int | None = None
    derive: Any = None
    escalate: Any = None
    checked: Any = None
    describe_rung: Any = None
    smoke: Mapping[str, Any] = field(default_factory=dict)


ATTACKS: Registry = Registry("attack", metadata=AttackEntry)

NORMS = ("Linf", "L2")
CONTEXT_ARGS = SUPPLIED["attack"]  # supplied by robaudit, never by the user


class AttackFn(Protocol):
    """Anything mapping (images (N, C, H, W) in [0, 1], labels (N,), the samples' streams) to adversarial images of
    the same shape, drawing every random choice of sample i from stream i."""

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, rng: SampleRNG) -> torch.Tensor: ...


@dataclass(frozen=True)
class ResolvedAttack:
    """An attack with every parameter fixed: the threat model (norm, eps) and the factory's arguments."""

    name: str
    norm: str
    eps: float
    params: Mapping[str, Any] = field(default_factory=dict)  # read-only
    label: str = ""  # unique display name within a run (e.g. "pgd", "pgd#2", or "pgd@0.01569" in an eps sweep)
    sweep: bool = False  # an extra budget of an eps sweep: reported, but not part of the headline worst case
    access: str = "white-box"  # from the registry (``AttackEntry``), saved with the run so reports need no registry
    tier: int | None = None
    convergence_of: str | None = None  # a convergence rung: the label of the attack it escalates
    rung: int = 0  # 1, 2, ...: the rung's place on the effort ladder
    eot_scale: int = 1  # EOT draws of a rung, as a multiple of the run's (randomized pipelines only)
    check_scope: str = "attack"  # a rung's check: "headline" (a phase after every attack) or "attack" (a ladder)
    rung_text: str = ""  # how reports name the rung when its registry says (``AttackEntry.describe_rung``)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", frozen(self.params))

    def budget(self) -> str:
        """E.g. ``"Linf, eps=8/255 (0.0314)"``."""
        return f"{self.norm}, eps={format_eps(self.eps)}"

    def to_dict(self) -> dict[str, Any]:
        """Plain form for records, summaries and manifests."""
        out = {"name": self.name, "label": self.label, "norm": self.norm, "eps": self.eps}
        out["params"] = thawed(self.params)
        out.update(access=self.access, tier=self.tier)
        if self.sweep:
            out["sweep"] = True
        if self.convergence_of is not None:
            out.update(convergence_of=self.convergence_of, rung=self.rung, eot_scale=self.eot_scale)
            out.update(check_scope=self.check_scope)
            if self.rung_text:
                out["rung_text"] = self.rung_text
        return out


def format_eps(eps: float) -> str:
    """``0.031372...`` -> ``"8/255 (0.0314)"``; other values as plain numbers."""
    k = eps * 255
    if abs(k - round(k)) < 1e-6 and round(k) > 0:
        return f"{round(k)}/255 ({eps:.4g})"
    return f"{eps:.4g}"


def resolve_attack(name: str, params: dict[str, Any], *, eps: float, eps_l2: float) -> ResolvedAttack:
    """Fill in an attack's defaults: its norm, and its eps from the run's budget for that norm unless given. Its keys
    and their types are checked where a config is parsed (``components.hyperparameters``), not again here."""
    entry = ATTACKS.get(name)
    hyper = entry.hyperparameters()
    params = thawed(params)
    default_norm = hyper["norm"].default if "norm" in hyper else entry.meta.get("norm")
    norm = params.get("norm", default_norm)
    if norm not in NORMS:
        raise ConfigError(f"attack {name!r}: norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if "eps" in params:
        params["eps"] = parse_eps(params["eps"], name=f"{name}.eps")
    else:
        params["eps"] = eps if norm == "Linf" else eps_l2
    full = {
        key: param.default
        for key, param in hyper.items()
        if param.default is not inspect.Parameter.empty and key not in CONTEXT_ARGS
    }
    full.update(params)
    if "norm" in hyper:
        full["norm"] = norm
    if entry.meta["derive"] is not None:  # values that follow from others (e.g. PGD's step size), stated in reports
        full = entry.meta["derive"](full)
    meta = entry.meta
    return ResolvedAttack(
        name=name, norm=norm, eps=full["eps"], params=full, label=name, access=meta["access"], tier=meta["tier"]
    )


def prepare_model(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode (every submodule) and float32, as every attack requires, with its parameters frozen:
    attacks differentiate with respect to the input only (and torch.compile needs no weight gradients)."""
    model.eval()
    model.float()
    model.requires_grad_(False)
    for module in model.modules():
        if module.training:
            raise RuntimeError(f"module {type(module).__name__} refused eval mode")
    return model


def run_attack(
    attack: AttackFn,
    resolved: ResolvedAttack,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    rng: SampleRNG,
    seed: int,
    precision: str = "fp32",
) -> torch.Tensor:
    """Run ``attack`` on (N, C, H, W) float32 images in [0, 1] with the samples' own streams ``rng``, its
    iterations in ``precision`` (``attacks.precision``; the images and every verdict stay float32).

    Library code inside that reads the global RNG sees one seeded with ``seed`` and isolated from the caller's.

    The result is projected onto the threat model's eps-ball and [0, 1], so a perturbation never exceeds eps
    (minimal-norm attacks such as C&W are cut back to the budget, which may undo their success).
    """
    if images.dtype != torch.float32:
        raise TypeError(f"attacks run in float32, got {images.dtype}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError("attack inputs must lie in [0, 1]")
    if images.shape[0] == 0:
        return images.clone()
    with isolated_global_rng(seed, images.device), attack_precision(precision, images.device):
        adversarial = attack(images, labels, rng)
    return project(adversarial.detach().to(images.dtype), images, norm=resolved.norm, eps=resolved.eps)


def build_attack(
    resolved: ResolvedAttack, model: nn.Module, *, num_classes: int, seed: int, eot: int = 1, draws: int = 1
) -> AttackFn:
    """Instantiate the attack ``resolved`` describes against ``model`` (put in eval mode, float32).

    On a randomized ``model`` (``sample_rng.is_randomized``), gradients average ``eot`` draws and candidates are judged
    on ``draws`` selection draws; on a deterministic one both are 1.
    """
    prepare_model(model)
    randomized = is_randomized(model)
    return ATTACKS.build(
        resolved.name,
        resolved.params,
        model,
        num_classes=num_classes,
        seed=seed,
        eot=eot if randomized else 1,
        draws=draws if randomized else 1,
        randomized=randomized,
    )


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Predicted labels (N,) of ``model`` on (N, C, H, W) images."""
    return model(images).argmax(dim=1)
