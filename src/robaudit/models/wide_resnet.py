"""WideResNet (Zagoruyko & Komodakis 2016) as RobustBench and TRADES define it: pre-activation basic blocks, widths
16, 16k, 32k, 64k, global average pooling. Its parameter names are theirs (``conv1``, ``block{1,2,3}.layer.{i}``
with ``bn1``/``conv1``/``bn2``/``conv2``/``convShortcut``, ``bn1``, ``fc``), so the state dict of a RobustBench
WideResNet checkpoint loads into it as a bare state dict (``--arch robaudit_wide_resnet`` with ``depth`` and
``widen_factor``). Registered with timm as ``robaudit_wide_resnet``, so robaudit checkpoints and timm's own folder
and hub layouts carry it too.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import build_model_with_cfg, register_model
from torch import nn
from torch.nn import functional as F  # noqa: N812

from robaudit.models.timm_cfgs import own_network_cfgs


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity shortcut, or a 1x1 conv on the pre-activated input when the
    width or stride changes: (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)."""

    def __init__(self, in_planes: int, out_planes: int, *, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = (  # noqa: N815 - RobustBench's parameter name
            None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        )
        self.drop_rate = float(drop_rate)  # TorchScript's dropout takes a float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(activated)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        return shortcut + out


class WideStage(nn.Module):
    """``count`` basic blocks; the first changes width and stride. Holds them as ``layer`` (RobustBench's name)."""

    def __init__(self, count: int, in_planes: int, out_planes: int, *, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                WideBasicBlock(
                    in_planes if i == 0 else out_planes, out_planes, stride=stride if i == 0 else 1, drop_rate=drop_rate
                )
                for i in range(count)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k: (N, C, H, W) normalized images -> logits (N, num_classes); depth = 6n + 4."""

    def __init__(
        self,
        *,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 (10, 16, 22, 28, 34, 70...), got {depth}")
        count = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.num_classes = num_classes
        self.num_features = widths[3]
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = WideStage(count, widths[0], widths[1], stride=1, drop_rate=drop_rate)
        self.block2 = WideStage(count, widths[1], widths[2], stride=2, drop_rate=drop_rate)
        self.block3 = WideStage(count, widths[2], widths[3], stride=2, drop_rate=drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> logits (N, num_classes); pooling over the whole last map (8x8 at 32 px)."""
        out = self.block3(self.block2(self.block1(self.conv1(images))))
        out = F.relu(self.bn1(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))

    def get_classifier(self) -> nn.Module:
        """The classification head (timm's convention, for fine-tuned heads)."""
        return self.fc


# timm reads a module's ``default_cfgs`` when ``register_model`` registers its entry points
default_cfgs = own_network_cfgs("robaudit_wide_resnet", first_conv="conv1", classifier="fc", pool_size=(8, 8))


@register_model
def robaudit_wide_resnet(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """timm entry point of WideResNet (``depth``, ``widen_factor``); with ``pretrained`` (timm's ``local-dir:`` and
    ``hf-hub:`` loaders) timm loads the weights its pretrained config names."""
    return build_model_with_cfg(WideResNet, "robaudit_wide_resnet", pretrained, **kwargs)
