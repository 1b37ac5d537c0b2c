"""Registered classifier architectures: timm models sized for the data. Any timm name works too."""

from __future__ import annotations

from typing import Any

import torch
from timm.models import build_model_with_cfg, register_model
from torch import nn

from robaudit.components.plugins import load_plugins
from robaudit.components.registry import Registry
from robaudit.models import wide_resnet  # noqa: F401 - registers robaudit_wide_resnet with timm
from robaudit.models.timm_cfgs import own_network_cfgs

ARCHITECTURES: Registry = Registry("architecture")


@ARCHITECTURES.register("vit", description="small Vision Transformer sized for the images (the default)")
def small_vit(*, channels: int, image_size: int) -> tuple[str, dict[str, Any]]:
    """timm's ViT with a 4x4 grid of patch tokens, 4 blocks, width 128, 4 heads.

    On 32x32 digits the default recipe reaches about 98% test accuracy in under a minute on two CPU cores.
    """
    patch = max(1, image_size // 4)
    while image_size % patch:
        patch -= 1
    return "vit_tiny_patch16_224", {
        "img_size": image_size,
        "patch_size": patch,
        "in_chans": channels,
        "embed_dim": 128,
        "depth": 4,
        "num_heads": 4,
        "mlp_ratio": 2.0,
    }


@ARCHITECTURES.register("resnet", description="small ResNet (timm resnet10t) for small images")
def small_resnet(*, channels: int, image_size: int) -> tuple[str, dict[str, Any]]:
    """timm's resnet10t with ``channels`` input channels."""
    return "resnet10t", {"in_chans": channels}


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages (16, 32, 64 channels) and a linear head: (N, C, H, W) -> (N, num_classes)."""

    def __init__(self, *, num_classes: int, in_chans: int = 3, width: int = 16) -> None:
        super().__init__()
        self.num_classes = num_classes
        layers, channels = [], in_chans
        for stage in range(3):
            out = width * 2**stage
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            layers.append(nn.MaxPool2d(2) if stage < 2 else nn.AdaptiveAvgPool2d(1))
            channels = out
        self.features = nn.Sequential(*layers)
        self.num_features = channels
        self.head = nn.Linear(channels, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) normalized images -> logits (N, num_classes)."""
        return self.head(self.features(images).flatten(1))

    def get_classifier(self) -> nn.Module:
        """The classification head (timm's convention, for fine-tuned heads)."""
        return self.head


# timm reads a module's ``default_cfgs`` when ``register_model`` registers its entry points
default_cfgs = own_network_cfgs("robaudit_small_cnn", first_conv="features.0", classifier="head")


@register_model
def robaudit_small_cnn(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """timm entry point of SmallCNN (no pretrained weights of its own; timm's ``local-dir:`` and ``hf-hub:`` loaders
    load the weights their config names)."""
    return build_model_with_cfg(SmallCNN, "robaudit_small_cnn", pretrained, **kwargs)


@ARCHITECTURES.register("cnn", description="small CNN (3 conv stages, ~25k parameters): a distillation student")
def small_cnn(*, channels: int, image_size: int) -> tuple[str, dict[str, Any]]:
    """robaudit's SmallCNN, registered with timm as ``robaudit_small_cnn``."""
    return "robaudit_small_cnn", {"in_chans": channels}


@ARCHITECTURES.register("wrn", description="WideResNet-28-10 as RobustBench defines it (loads its state dicts)")
def wide_resnet_28_10(*, channels: int, image_size: int) -> tuple[str, dict[str, Any]]:
    """robaudit's WideResNet (``models.wide_resnet``), registered with timm as ``robaudit_wide_resnet``."""
    return "robaudit_wide_resnet", {"in_chans": channels, "depth": 28, "widen_factor": 10}


def architecture_for(name: str, *, channels: int, image_size: int) -> tuple[str, dict[str, Any]]:
    """(timm name, kwargs) for a registered architecture, or for any timm model name."""
    if name in ARCHITECTURES:
        return ARCHITECTURES.get(name).factory(channels=channels, image_size=image_size)
    kwargs: dict[str, Any] = {"in_chans": channels}
    if "vit" in name or "deit" in name:
        kwargs["img_size"] = image_size
    return name, kwargs


load_plugins("robaudit.architectures")  # installed packages add architectures (robaudit.components.plugins)
