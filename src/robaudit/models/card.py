"""The model card: everything needed to rebuild and use a classifier, saved inside robaudit checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robaudit.errors import CheckpointError


@dataclass
class ModelCard:
    """Everything needed to rebuild and use a classifier: `--model vit.pt` must be enough."""

    arch: str
    arch_kwargs: dict[str, Any]
    num_classes: int
    class_names: list[str]
    input_size: list[int]  # [C, H, W]; empty when unknown (TorchScript without --input-size)
    mean: list[float]
    std: list[float]
    kind: str = "timm"  # "timm" (rebuilt with timm.create_model), "torchscript", "torch-export", "pickled-module",
    # "robustbench" or "transformers"
    training: dict[str, Any] = field(default_factory=dict)
    # the model's evaluation transform (timm's data config without mean/std: input_size, interpolation, crop_pct,
    # crop_mode), applied to data at another resolution before attacks; empty: images must already fit
    preprocess: dict[str, Any] = field(default_factory=dict)
    # where the model came from (source, reference, weights) and how parts of the card were found
    origin: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Build a card from its dict form; a CheckpointError names a missing field."""
        try:
            return cls(**data)
        except TypeError as exc:
            raise CheckpointError(f"checkpoint card is malformed ({exc}); re-save the checkpoint") from None
