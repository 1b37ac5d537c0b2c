"""AutoAttack (Croce & Hein 2020), composed from torchattacks' components with the class count in mind.

torchattacks 3.5.1 traps this module guards against:
- its DLR losses index the 3rd (untargeted) and 4th (targeted) largest logit, so they crash below 3 / 4 classes:
  those components are dropped and the report says so;
- its ``n_classes`` means "targets = n_classes - 1": robaudit passes ``n_target_classes + 1``;
- its default seed is the clock: robaudit always passes the run's derived seed.
"""

from __future__ import annotations

from torch import nn
from torchattacks import APGD, APGDT, FAB, Square

from robaudit.attacks.base import ATTACKS, AttackFn, KeepFirstSuccess


def plan_components(*, version: str, num_classes: int, n_target_classes: int = 9) -> tuple[list[str], list[str]]:
    """The components AutoAttack runs for ``num_classes`` classes, and the dropped ones with the reason."""
    targets = min(n_target_classes, num_classes - 1)
    if version == "standard":
        wanted = ["apgd-ce", "apgd-t", "fab-t", "square"]
    elif version == "rand":
        wanted = ["apgd-ce", "apgd-dlr"]
    else:
        raise ValueError(f"AutoAttack version must be 'standard' or 'rand', got {version!r}")
    kept, dropped = [], []
    for name in wanted:
        if name == "apgd-t" and num_classes < 4:
            dropped.append(f"apgd-t (targeted DLR loss needs >= 4 classes, model has {num_classes})")
        elif name == "apgd-dlr" and num_classes < 3:
            dropped.append(f"apgd-dlr (DLR loss needs >= 3 classes, model has {num_classes})")
        elif name in ("apgd-t", "fab-t") and targets < 1:
            dropped.append(f"{name} (no target class)")
        else:
            kept.append(name)
    return kept, dropped


class AutoAttack(KeepFirstSuccess):
    """AutoAttack's ensemble, run in order on the samples still robust; records its components."""

    def __init__(self, model: nn.Module, attacks: list[tuple[str, AttackFn]], *, dropped: list[str]) -> None:
        super().__init__(model, attacks)
        self.components = [name for name, _ in attacks]
        self.dropped = dropped


@ATTACKS.register(
    "autoattack", description="AutoAttack: APGD-CE, APGD-T, FAB-T, Square (standard) or APGD-CE/DLR+EOT (rand)"
)
def autoattack(
    model: nn.Module,
    *,
    num_classes: int,
    seed: int,
    eps: float = 8 / 255,
    norm: str = "Linf",
    version: str = "standard",
    steps: int = 100,
    n_target_classes: int = 9,
    n_queries: int = 5000,
    eot_iter: int = 20,
) -> AttackFn:
    """Class-count-aware AutoAttack. With C classes it targets min(n_target_classes, C - 1) classes."""
    kept, dropped = plan_components(version=version, num_classes=num_classes, n_target_classes=n_target_classes)
    targets = min(n_target_classes, num_classes - 1)
    common = {"norm": norm, "eps": eps, "seed": seed}
    eot = eot_iter if version == "rand" else 1
    factories = {
        "apgd-ce": lambda: APGD(model, steps=steps, loss="ce", eot_iter=eot, n_restarts=1, **common),
        "apgd-dlr": lambda: APGD(model, steps=steps, loss="dlr", eot_iter=eot, n_restarts=1, **common),
        # torchattacks reads n_classes as "n_classes - 1 targets".
        "apgd-t": lambda: APGDT(model, steps=steps, n_classes=targets + 1, n_restarts=1, **common),
        "fab-t": lambda: FAB(model, steps=steps, multi_targeted=True, n_classes=targets + 1, n_restarts=1, **common),
        "square": lambda: Square(model, n_queries=n_queries, n_restarts=1, **common),
    }
    return AutoAttack(model, [(name, factories[name]()) for name in kept], dropped=dropped)
