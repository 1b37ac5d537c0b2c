"""Shared fixtures: tiny classifiers trained on the fly (seconds), temporary caches, the shared data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robaudit.data import ImageSet, load_dataset
from robaudit.models.classifiers import save_classifier
from robaudit.models.training import ClassifierRecipe, train_classifier

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PNEUMONIA = SHARED_DATA / "pneumoniamnist.npz"

TINY_RECIPE = ClassifierRecipe(
    arch="vit", arch_kwargs={"embed_dim": 32, "depth": 1, "num_heads": 2}, epochs=4, warmup_epochs=0, max_shift=0
)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep every test's cache out of the user's home, and every test off the network: the Hugging Face hub is
    offline with an empty cache of its own, torch.hub downloads into a temporary folder."""
    from huggingface_hub import constants as hub

    mp = pytest.MonkeyPatch()
    mp.setenv("ROBAUDIT_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setattr(hub, "HF_HUB_OFFLINE", True)  # read once at import: the module's value is what the hub checks
    mp.setattr(hub, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-hub")))
    torch.hub.set_dir(str(tmp_path_factory.mktemp("torch-hub")))
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield
    mp.undo()


def classes_subset(dataset: ImageSet, num_classes: int) -> ImageSet:
    """The samples of the first ``num_classes`` classes."""
    keep = (dataset.labels < num_classes).nonzero().flatten()
    subset = dataset.select(keep)
    subset.class_names = dataset.class_names[:num_classes]
    return subset


def train_tiny(num_classes: int, path: Path) -> Path:
    """Train a tiny ViT on the digits of classes 0..num_classes-1 (32x32) and save it."""
    train = classes_subset(load_dataset("digits", split="train"), num_classes)
    model, _ = train_classifier(train, None, recipe=TINY_RECIPE, seed=0)
    save_classifier(model, path)
    return path


@pytest.fixture(scope="session")
def digits_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 10-class digits classifier checkpoint."""
    return train_tiny(10, tmp_path_factory.mktemp("models") / "tiny10.pt")


@pytest.fixture(scope="session")
def binary_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 2-class (digits 0 and 1) classifier checkpoint."""
    return train_tiny(2, tmp_path_factory.mktemp("models") / "tiny2.pt")


@pytest.fixture(scope="session")
def ternary_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 3-class (digits 0, 1, 2) classifier checkpoint."""
    return train_tiny(3, tmp_path_factory.mktemp("models") / "tiny3.pt")


@pytest.fixture(scope="session")
def digits_test() -> ImageSet:
    """The first 48 digits test images."""
    return load_dataset("digits", split="test", limit=48)


def audit_workdir(tmp_path: Path, model_path: Path, config: dict, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding the model as ``m.pt`` and ``config`` as ``audit.yaml``; the test runs inside it."""
    import shutil

    import yaml

    shutil.copy(model_path, tmp_path / "m.pt")
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def checkpoint_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding an (empty) ``m.pt``: a config naming it parses (``EvaluateConfig.parse`` checks that
    the model file exists), for tests that parse and resolve configs without loading the model."""
    (tmp_path / "m.pt").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "m.pt"
