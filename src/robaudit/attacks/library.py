"""Registered attacks backed by torchattacks. Each factory takes the model and keyword-only hyperparameters.

Norms: Linf attacks take the run's ``eps`` (e.g. 8/255); L2 attacks take ``eps_l2`` unless ``eps`` is set.
"""

from __future__ import annotations

import torchattacks
from torch import nn

from robaudit.attacks.base import ATTACKS, AttackFn, KeepFirstSuccess


def default_step_size(params: dict) -> dict:
    """Fill ``alpha`` (step size) when unset: 2.5 * eps / steps (Madry et al.), so reports state the value used."""
    if params.get("alpha") is None:
        params = {**params, "alpha": 2.5 * params["eps"] / params["steps"]}
    return params


@ATTACKS.register("fgsm", description="FGSM, one signed-gradient step (Goodfellow et al. 2015)", norm="Linf")
def fgsm(model: nn.Module, *, eps: float = 8 / 255) -> AttackFn:
    """Fast gradient sign method, Linf."""
    return torchattacks.FGSM(model, eps=eps)


def _with_restarts(
    attack_cls, model: nn.Module, *, eps: float, steps: int, alpha: float | None, restarts: int
) -> AttackFn:
    """A torchattacks PGD-style attack with random start; ``restarts`` runs keep each sample's first success."""
    step = default_step_size({"alpha": alpha, "eps": eps, "steps": steps})["alpha"]
    attack = attack_cls(model, eps=eps, alpha=step, steps=steps, random_start=True)
    if restarts <= 1:
        return attack
    return KeepFirstSuccess(model, [(f"restart-{i}", attack) for i in range(restarts)])


@ATTACKS.register(
    "pgd", description="PGD, Linf, random start, restarts (Madry et al. 2018)", norm="Linf", derive=default_step_size
)
def pgd(
    model: nn.Module, *, eps: float = 8 / 255, steps: int = 20, alpha: float | None = None, restarts: int = 1
) -> AttackFn:
    """Projected gradient descent on the cross-entropy, Linf; ``restarts`` random starts, first success kept."""
    return _with_restarts(torchattacks.PGD, model, eps=eps, steps=steps, alpha=alpha, restarts=restarts)


@ATTACKS.register(
    "pgdl2", description="PGD, L2, random start, restarts (Madry et al. 2018)", norm="L2", derive=default_step_size
)
def pgdl2(
    model: nn.Module, *, eps: float = 0.5, steps: int = 20, alpha: float | None = None, restarts: int = 1
) -> AttackFn:
    """Projected gradient descent on the cross-entropy, L2."""
    return _with_restarts(torchattacks.PGDL2, model, eps=eps, steps=steps, alpha=alpha, restarts=restarts)


@ATTACKS.register("cw", description="Carlini-Wagner L2, minimal-norm; results cut back to the L2 budget eps", norm="L2")
def cw(
    model: nn.Module, *, eps: float = 0.5, c: float = 1.0, kappa: float = 0.0, steps: int = 100, lr: float = 0.01
) -> AttackFn:
    """C&W L2 (Carlini & Wagner 2017). It minimises the perturbation; robaudit projects it onto the eps-ball."""
    return torchattacks.CW(model, c=c, kappa=kappa, steps=steps, lr=lr)


@ATTACKS.register(
    "square", description="Square Attack, black-box score-based (Andriushchenko et al. 2020)", access="black-box"
)
def square(
    model: nn.Module,
    *,
    eps: float = 8 / 255,
    norm: str = "Linf",
    n_queries: int = 5000,
    p_init: float = 0.8,
    seed: int = 0,
) -> AttackFn:
    """Square Attack: random square-shaped updates, queries only the model's outputs."""
    return torchattacks.Square(model, norm=norm, eps=eps, n_queries=n_queries, p_init=p_init, seed=seed)
