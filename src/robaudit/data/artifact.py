"""Dataset artifacts: what `attack` and `purify` write. Float32 safetensors shards and a JSON manifest.

Layout of a dataset folder::

    manifest.json            kind "robaudit.dataset", schema version, classes, shapes, shards, provenance
    shard-00000.safetensors  images (n, C, H, W) float32, labels (n,) int64; sample ids in the metadata
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from robaudit.data.imageset import ImageSet, validate_pixels
from robaudit.data.lazy import LazyImages
from robaudit.errors import DataError
from robaudit.fileio import atomic_write, atomic_write_json

KIND = "robaudit.dataset"
SCHEMA_VERSION = 1
SHARD_SIZE = 1024


def is_artifact(path: Path) -> bool:
    """True when ``path`` is a folder holding a robaudit dataset manifest."""
    manifest = path / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def write_artifact(path: str | Path, dataset: ImageSet, *, provenance: dict[str, Any], replace: bool = False) -> Path:
    """Write ``dataset`` as float32 shards plus a manifest (written last, so a partial folder is not an artifact).

    ``replace``: remove an existing robaudit dataset at ``path`` first (checked by ``prepare_output``).
    """
    path = Path(path)
    if replace and is_artifact(path):
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    shards = []
    for index, start in enumerate(range(0, len(dataset), SHARD_SIZE)):
        stop = min(start + SHARD_SIZE, len(dataset))
        name = f"shard-{index:05d}.safetensors"
        tensors = {
            "images": dataset.images[start:stop].to(torch.float32).contiguous(),
            "labels": dataset.labels[start:stop].to(torch.int64).contiguous(),
        }
        metadata = {"ids": json.dumps(dataset.ids[start:stop])}
        atomic_write(path / name, lambda tmp, t=tensors, m=metadata: save_file(t, str(tmp), metadata=m))
        shards.append({"file": name, "start": start, "stop": stop})
    manifest = {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "num_samples": len(dataset),
        "image_shape": list(dataset.shape),
        "class_names": dataset.class_names,
        "description": dataset.description,
        "shards": shards,
        "provenance": provenance,
    }
    atomic_write_json(path / "manifest.json", manifest)
    return path


def prepare_output(path: str | Path, *, overwrite: bool) -> Path:
    """Check that ``path`` may receive a new dataset: absent, empty, or (with ``overwrite``) a robaudit dataset.

    Nothing is deleted here; ``write_artifact(..., replace=True)`` swaps the old dataset out only once the new one
    is ready to be written.
    """
    from robaudit.errors import RobauditError

    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        if not overwrite:
            raise RobauditError(f"output {str(path)!r} already exists; pass --overwrite or another --out")
        if not is_artifact(path):
            raise RobauditError(f"--overwrite refused: {str(path)!r} is not a robaudit dataset; pass another --out")
    return path


def index_shards(path: Path, shards: list[dict]) -> tuple[list[torch.Tensor], list[str], list[tuple], tuple]:
    """Check every shard's header; (labels per shard, ids, (first, stop, file) spans, image shape (C, H, W))."""
    from safetensors import safe_open

    labels, ids, spans, sample_shape = [], [], [], None
    for shard in shards:
        file = path / shard["file"]
        try:
            with safe_open(str(file), framework="pt") as handle:
                shard_ids = json.loads((handle.metadata() or {}).get("ids", "[]"))
                images = handle.get_slice("images")
                shape, dtype = images.get_shape(), images.get_dtype()
                shard_labels = handle.get_tensor("labels")
        except (OSError, ValueError, SafetensorError) as exc:
            raise DataError(f"dataset shard {str(file)!r} is unreadable ({exc}); re-create the dataset") from None
        if dtype != "F32" or len(shape) != 4 or len(shard_ids) != shape[0] or shard_labels.shape != (shape[0],):
            raise DataError(f"dataset shard {str(file)!r} is malformed; re-create the dataset")
        if sample_shape is not None and tuple(shape[1:]) != sample_shape:
            raise DataError(f"dataset shard {str(file)!r} has images of another size; re-create the dataset")
        sample_shape = tuple(shape[1:])
        spans.append((len(ids), len(ids) + shape[0], file))
        labels.append(shard_labels)
        ids.extend(shard_ids)
    if not ids:
        raise DataError(f"dataset folder {str(path)!r} holds no samples; re-create it")
    return labels, ids, spans, sample_shape


def read_artifact(path: str | Path, *, split: str | None = None) -> ImageSet:
    """Open a dataset artifact folder; images are read shard slice by shard slice when indexed (streamed).

    ``split`` is accepted for uniformity; an artifact has one split. Labels, ids and every shard's header are
    checked now; pixels are checked (NaN, range) as they are read.
    """
    from safetensors import safe_open

    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"dataset folder {str(path)!r}: manifest.json unreadable ({exc}); re-create it") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise DataError(
            f"dataset folder {str(path)!r} has schema version {manifest.get('schema_version')!r}; "
            f"this robaudit reads version {SCHEMA_VERSION}"
        )
    description = f"{path} ({manifest.get('description', 'robaudit dataset')})"
    labels, ids, spans, sample_shape = index_shards(path, manifest["shards"])

    def read(indices: list[int]) -> torch.Tensor:
        out = torch.empty((len(indices), *sample_shape))
        wanted = torch.tensor(indices)
        for first, stop, file in spans:
            rows = ((wanted >= first) & (wanted < stop)).nonzero().flatten()
            if len(rows) == 0:
                continue
            local = wanted[rows] - first
            low, high = int(local.min()), int(local.max()) + 1
            try:
                with safe_open(str(file), framework="pt") as handle:
                    block = handle.get_slice("images")[low:high]
            except (OSError, ValueError, SafetensorError) as exc:
                raise DataError(f"dataset shard {str(file)!r} is unreadable ({exc}); re-create the dataset") from None
            out[rows] = block[local - low]
        validate_pixels(out, description=description, ids=[ids[i] for i in indices])
        return out

    return ImageSet(
        images=LazyImages(read, sample_shape=sample_shape, index=range(len(ids))),
        labels=torch.cat(labels).long(),
        ids=ids,
        class_names=list(manifest["class_names"]),
        description=description,
        provenance=manifest.get("provenance", {}),
    )
