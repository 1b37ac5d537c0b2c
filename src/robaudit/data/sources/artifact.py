"""Dataset folders written by robaudit (``attack`` and ``purify`` outputs)."""

from __future__ import annotations

from pathlib import Path

import torch

from robaudit.data.artifact import is_artifact, read_artifact, write_artifact
from robaudit.data.imageset import ImageSet
from robaudit.data.sources import DATASETS


def example(root: Path) -> str:
    """A tiny robaudit dataset under ``root`` (the contract tests' fixture); its ``--data`` text."""
    images = torch.rand(4, 1, 8, 8)
    data = ImageSet(images, torch.tensor([0, 1, 1, 0]), ["w", "x", "y", "z"], ["no", "yes"], "tiny")
    write_artifact(root / "set", data, provenance={"made_by": "test"})
    return str(root / "set")


@DATASETS.register(
    "artifact",
    description="a dataset folder written by robaudit (attack or purify output)",
    detect=is_artifact,
    priority=30,
    example=example,
)
def artifact(*, path: str, split: str = "test") -> ImageSet:
    """Read a robaudit dataset artifact (float32 safetensors shards + manifest)."""
    return read_artifact(path, split=split)
