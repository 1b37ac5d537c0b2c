"""Contract tests over the registries not covered elsewhere: every data source yields an ImageSet that keeps the
conventions (NCHW float32 in [0, 1], integer labels in range, unique string ids), and every architecture builds a
classifier that maps (N, C, H, W) to (N, K) with input gradients. A newly registered source without a builder here
fails, so it cannot go untested."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from robaudit.data import ImageSet, detect_source, load_dataset
from robaudit.data.artifact import write_artifact
from robaudit.data.sources import DATASETS
from robaudit.models.architectures import ARCHITECTURES, architecture_for
from robaudit.models.classifiers import ModelCard, create_classifier


def _npz(root):
    images = np.random.default_rng(0).integers(0, 256, size=(6, 12, 12), dtype=np.uint8)
    np.savez(root / "tiny.npz", test_images=images, test_labels=np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8))
    return str(root / "tiny.npz")


def _imagefolder(root):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / "test" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "test" / name / f"{i}.png")
    return str(root)


def _cifar10(root):
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", 4), ("test_batch", 5)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    return str(root)


def _artifact(root):
    images = torch.rand(4, 1, 8, 8)
    data = ImageSet(images, torch.tensor([0, 1, 1, 0]), ["w", "x", "y", "z"], ["no", "yes"], "tiny")
    write_artifact(root / "set", data, provenance={"made_by": "test"})
    return str(root / "set")


BUILDERS = {
    "digits": lambda root: "digits",
    "npz": _npz,
    "imagefolder": _imagefolder,
    "cifar10": _cifar10,
    "artifact": _artifact,
}


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_data_source_keeps_the_image_conventions(name, tmp_path):
    assert name in BUILDERS, f"data source {name!r} has no tiny builder in tests/test_contracts.py"
    source = BUILDERS[name](tmp_path)
    assert detect_source(source)[0] == name
    data = load_dataset(source, split="test")
    images = data.images[: len(data)]
    assert images.dtype == torch.float32 and images.dim() == 4 and len(images) == len(data) > 0
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    assert data.labels.dtype == torch.long and int(data.labels.min()) >= 0
    assert int(data.labels.max()) < max(len(data.class_names), int(data.labels.max()) + 1)
    assert len(set(data.ids)) == len(data.ids) and all(isinstance(i, str) for i in data.ids)


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_every_architecture_classifies_with_input_gradients(name):
    arch, kwargs = architecture_for(name, channels=1, image_size=16)
    card = ModelCard(arch, kwargs, 3, ["a", "b", "c"], [1, 16, 16], [0.5], [0.25])
    model = create_classifier(card).eval()
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 3)
    (grad,) = torch.autograd.grad(logits.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
