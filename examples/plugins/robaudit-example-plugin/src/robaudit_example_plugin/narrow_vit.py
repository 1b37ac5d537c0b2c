"""``narrow-vit``: a classifier architecture, the small ViT at half its width (``robaudit train --arch narrow-vit``)."""

from __future__ import annotations

from typing import Any

from robaudit.models.architectures import ARCHITECTURES, small_vit


@ARCHITECTURES.register("narrow-vit", description="the small ViT at half its width (an example plugin's)")
def narrow_vit(*, channels: int, image_size: int) -> tuple[str, dict[str, Any]]:
    """robaudit's small ViT with width 64 and 2 heads."""
    name, kwargs = small_vit(channels=channels, image_size=image_size)
    return name, {**kwargs, "embed_dim": 64, "num_heads": 2}
