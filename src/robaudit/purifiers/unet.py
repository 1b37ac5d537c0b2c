"""Small diffusers U-Nets conditioned on a discrete level (diffusion timestep, noise or blur level).

For speed on CPUs the U-Net can run on a space-to-depth view of the image (``unshuffle`` = 2 turns
(C, 32, 32) into (4C, 16, 16)): four times fewer pixels per convolution, the same information.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from robaudit.purifiers.checkpointing import CheckpointedEvaluation


def small_unet(
    *, channels: int, image_size: int, widths: list[int], layers_per_block: int, unshuffle: int = 1
) -> LevelConditionedUNet:
    """A level-conditioned U-Net with ``len(widths)`` resolution levels and no attention (fast on a CPU)."""
    if image_size % unshuffle:
        unshuffle = 1
    inner = channels * unshuffle * unshuffle
    unet = UNet2DModel(
        sample_size=image_size // unshuffle,
        in_channels=inner,
        out_channels=inner,
        block_out_channels=tuple(widths),
        layers_per_block=layers_per_block,
        down_block_types=("DownBlock2D",) * len(widths),
        up_block_types=("UpBlock2D",) * len(widths),
        add_attention=False,
        norm_num_groups=min(8, widths[0]),
    )
    return LevelConditionedUNet(unet, unshuffle=unshuffle)


class LevelConditionedUNet(CheckpointedEvaluation):
    """``net(x, level)``: (N, C, H, W), (N,) int -> (N, C, H, W); checkpointed when an attack differentiates it and
    ``purifiers.checkpointing`` says the chain would not fit (``gradient_checkpointing`` True or False forces it)."""

    def __init__(self, unet: UNet2DModel, *, unshuffle: int = 1) -> None:
        super().__init__()
        self.unet = unet
        self.unshuffle = unshuffle
        self.gradient_checkpointing: bool | None = None  # None: as purifiers.checkpointing decides

    def evaluate(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """The U-Net on x (N, C, H, W) (its space-to-depth view when ``unshuffle`` > 1) at ``level`` (N,)."""
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        out = self.unet(x, level).sample
        return F.pixel_shuffle(out, self.unshuffle) if self.unshuffle > 1 else out


@dataclass
class UNetRecipe:
    """Training hyperparameters shared by the U-Net purifiers, and the size of their U-Net."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    widths: list[int] = field(default_factory=lambda: [16, 32])
    layers_per_block: int = 1
    unshuffle: int = 2  # run the U-Net on a (4C, H/2, W/2) space-to-depth view

    def build_unet(self, input_size: list[int]) -> LevelConditionedUNet:
        """The level-conditioned U-Net for images of ``input_size`` (C, H, W)."""
        channels, size, _ = input_size
        return small_unet(
            channels=channels,
            image_size=size,
            widths=self.widths,
            layers_per_block=self.layers_per_block,
            unshuffle=self.unshuffle,
        )
