"""Each data source on a tiny file it generates, path detection, artifacts, and refusal of unsafe pickles."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PNEUMONIA
from robaudit.data import detect_source, load_dataset, read_artifact, write_artifact
from robaudit.errors import DataError


def test_digits_splits_are_disjoint_and_in_range():
    splits = {s: load_dataset("digits", split=s) for s in ("train", "val", "test")}
    ids = [set(d.ids) for d in splits.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(len(d) for d in splits.values()) == 1797
    test = splits["test"]
    assert test.shape == (1, 32, 32) and test.images.dtype == torch.float32
    assert test.images.min() >= 0 and test.images.max() <= 1
    assert load_dataset("digits", split="test").ids == test.ids  # fixed seeded split


def test_common_options():
    data = load_dataset("digits", split="test", limit=10, image_size=16, channels=3)
    assert len(data) == 10 and data.shape == (3, 16, 16)
    a = load_dataset("digits", limit=10, subset_seed=1)
    b = load_dataset("digits", limit=10, subset_seed=1)
    c = load_dataset("digits", limit=10, subset_seed=2)
    assert a.ids == b.ids and a.ids != c.ids


@pytest.mark.parametrize("rgb", [False, True])
def test_npz(tmp_path, rgb):
    shape = (6, 12, 12, 3) if rgb else (6, 12, 12)
    images = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    labels = np.array([[0], [1], [1], [0], [1], [0]], dtype=np.uint8)
    path = tmp_path / "tiny.npz"
    np.savez(path, test_images=images, test_labels=labels, train_images=images, train_labels=labels)
    data = load_dataset(str(path), split="test")
    assert data.shape == ((3 if rgb else 1), 12, 12)
    assert torch.allclose(
        data.images[0, 0, 0, 0], torch.tensor(float(images[0, 0, 0] if not rgb else images[0, 0, 0, 0]) / 255)
    )
    assert data.labels.tolist() == [0, 1, 1, 0, 1, 0]
    with pytest.raises(DataError, match="no split 'val'"):
        load_dataset(str(path), split="val")


def test_npz_bad_files(tmp_path):
    truncated = tmp_path / "trunc.npz"
    np.savez(tmp_path / "ok.npz", test_images=np.zeros((4, 8, 8), np.uint8), test_labels=np.zeros(4, np.int64))
    truncated.write_bytes((tmp_path / "ok.npz").read_bytes()[:100])
    with pytest.raises(DataError, match="trunc.npz"):
        load_dataset(str(truncated))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, test_images=np.zeros((4, 8), np.uint8), test_labels=np.zeros(4, np.int64))
    with pytest.raises(DataError, match="shape"):
        load_dataset(str(wrong))
    nan = tmp_path / "nan.npz"
    pixels = np.zeros((4, 8, 8), np.float32)
    pixels[2, 1, 1] = np.nan
    np.savez(nan, test_images=pixels, test_labels=np.zeros(4, np.int64))
    with pytest.raises(DataError, match="nan-test-00002.*NaN"):
        load_dataset(str(nan))


def test_imagefolder(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / "test" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(
                tmp_path / "test" / name / f"{i}.png"
            )
    assert detect_source(str(tmp_path))[0] == "imagefolder"
    data = load_dataset(str(tmp_path), split="test")
    assert len(data) == 6 and data.shape == (3, 10, 10) and data.class_names == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    (tmp_path / "test" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset(str(tmp_path), split="test")


def _cifar_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


def test_cifar10_batches(tmp_path):
    _cifar_batch(tmp_path / "data_batch_1", 5, 0)
    _cifar_batch(tmp_path / "test_batch", 4, 1)
    assert detect_source(str(tmp_path))[0] == "cifar10"
    test = load_dataset(str(tmp_path), split="test")
    assert len(test) == 4 and test.shape == (3, 32, 32) and test.class_names[0] == "airplane"
    assert len(load_dataset(str(tmp_path), split="train")) == 5


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_cifar10_refuses_code_in_pickles(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "test_batch", "wb") as handle:
        pickle.dump({b"data": _Evil(str(marker)), b"labels": [0]}, handle)
    with pytest.raises(DataError, match="unsafe"):
        load_dataset(str(tmp_path), split="test")
    assert not marker.exists()


def test_artifact_roundtrip(tmp_path, digits_test):
    write_artifact(tmp_path / "adv", digits_test, provenance={"attack": {"name": "none"}})
    assert detect_source(str(tmp_path / "adv"))[0] == "artifact"
    back = read_artifact(tmp_path / "adv")
    assert back.streamed and torch.equal(back.images[3:9], digits_test.images[3:9])
    assert torch.equal(back.images[[7, 2]], digits_test.images[[7, 2]])
    back = back.in_memory()
    assert torch.equal(back.images, digits_test.images) and back.ids == digits_test.ids
    assert back.provenance["attack"]["name"] == "none"


def test_unknown_source_is_named():
    with pytest.raises(DataError, match="neither a registered dataset"):
        load_dataset("no/such/place")


@pytest.mark.skipif(not PNEUMONIA.exists(), reason="../shared/data/pneumoniamnist.npz is not beside the project")
def test_shared_pneumonia():
    data = load_dataset(str(PNEUMONIA), split="test")
    assert len(data) == 468 and data.shape == (1, 28, 28) and set(data.labels.tolist()) == {0, 1}


@pytest.mark.parametrize("compressed", [False, True])
def test_streamed_npz_reads_batches_on_demand(tmp_path, compressed):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 12, 12, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, size=30)
    (np.savez_compressed if compressed else np.savez)(tmp_path / "d.npz", test_images=images, test_labels=labels)
    streamed = load_dataset(str(tmp_path / "d.npz"), stream=True, limit=20, subset_seed=1, image_size=8)
    in_memory = load_dataset(str(tmp_path / "d.npz"), limit=20, subset_seed=1, image_size=8)
    assert streamed.streamed and not in_memory.streamed and streamed.images.shape == (20, 3, 8, 8)
    assert torch.equal(streamed.images[5:9], in_memory.images[5:9])
    assert torch.equal(streamed.in_memory().images, in_memory.images) and streamed.ids == in_memory.ids
    if not compressed:  # an uncompressed archive is memory mapped, not read
        from robaudit.data.sources.npz import _npz_memmap

        assert isinstance(_npz_memmap(str(tmp_path / "d.npz"), "test_images"), np.memmap)


def test_streamed_image_folder_matches_in_memory(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    for i in range(9):
        folder = tmp_path / ("cat" if i % 2 else "dog")
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(10, 10, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    streamed = load_dataset(str(tmp_path), stream=True, channels=1)
    assert streamed.streamed and streamed.images.shape == (9, 1, 10, 10)
    assert torch.equal(streamed.images[[8, 0, 3]], load_dataset(str(tmp_path), channels=1).images[[8, 0, 3]])


def test_duplicate_sample_ids_are_refused():
    from robaudit.data import ImageSet
    from robaudit.errors import DataError

    with pytest.raises(DataError, match="'x' occurs more than once"):
        ImageSet(torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.long), ["x", "y", "x"], ["0"], "toy")
