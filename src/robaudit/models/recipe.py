"""A classifier's training recipe: the hyperparameters ``model: train: recipe:`` may set. Torch-free, so a config's
recipe is checked where the config is parsed; ``models.training`` trains with it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ClassifierRecipe:
    """Hyperparameters of classifier training. The defaults reach about 98% on digits in under a minute."""

    arch: str = "vit"  # a registered architecture (robaudit ls models) or any timm model name
    arch_kwargs: dict[str, Any] = field(default_factory=dict)  # merged over the sizing for the data
    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    max_shift: int = 2  # random translation augmentation, in pixels (0 disables)
    normalize: bool = True  # normalization mean/std measured on the training split

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (stored in the checkpoint card and caches keys)."""
        return asdict(self)
