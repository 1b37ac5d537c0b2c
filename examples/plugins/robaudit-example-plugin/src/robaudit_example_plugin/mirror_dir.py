"""``mirror-dir:``: a purifier source, a diffusers folder found under ``$MIRROR_ROOT`` (an organisation's model
mirror) by its name: ``--purifier ddpm --purifier-checkpoint mirror-dir:ddpm-cifar10-32``."""

from __future__ import annotations

import os
from pathlib import Path

from robaudit.errors import CheckpointError
from robaudit.purifiers.diffusion import DDPMNetwork
from robaudit.purifiers.sources import PURIFIER_SOURCES


@PURIFIER_SOURCES.register(
    "mirror-dir",
    description="a diffusers folder under $MIRROR_ROOT, by name (an example plugin's)",
    example="--purifier ddpm --purifier-checkpoint mirror-dir:ddpm-cifar10-32",
)
def mirror_dir(ref: str, *, trust: bool) -> DDPMNetwork:
    """``DDPMNetwork.from_pretrained`` on ``$MIRROR_ROOT/ref``."""
    folder = Path(os.environ.get("MIRROR_ROOT", ".")) / ref
    if not folder.is_dir():
        raise CheckpointError(f"no folder {ref!r} under MIRROR_ROOT; set MIRROR_ROOT to the mirror's folder")
    return DDPMNetwork.from_pretrained(folder, trust=trust)
