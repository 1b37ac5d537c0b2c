"""timm's pretrained configs for robaudit's own networks (SmallCNN, WideResNet), which have no pretrained weights of
their own: registering them lets timm save (``save_for_hf``) and load (``local-dir:``, ``hf-hub:``) their weights."""

from __future__ import annotations

from typing import Any

from timm.models import generate_default_cfgs


def own_network_cfgs(name: str, *, first_conv: str, classifier: str, **extra: Any) -> Any:
    """timm default configs for ``name``: 3x32x32 inputs, 10 classes, identity normalization, plus ``extra``. Assign
    the result to the module's ``default_cfgs`` before ``register_model`` runs (timm reads it from there)."""
    cfg = {
        "input_size": (3, 32, 32),
        "num_classes": 10,
        "first_conv": first_conv,
        "classifier": classifier,
        "mean": (0.0, 0.0, 0.0),
        "std": (1.0, 1.0, 1.0),
        **extra,
    }
    return generate_default_cfgs({name: cfg})
