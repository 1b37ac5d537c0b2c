"""A dataset job: read a data source, check every image, transform it, write the result as an artifact with provenance
(``robaudit attack`` and ``robaudit purify``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from robaudit.data.artifact import prepare_output, write_artifact
from robaudit.data.imageset import ImageSet
from robaudit.runs.manifest import now, resolve_device, versions

if TYPE_CHECKING:
    from robaudit.data.spec import DataSpec
    from robaudit.data.transforms import EvalTransform


def data_fingerprint(dataset: ImageSet, *, batch_size: int = 256) -> str:
    """sha256 over a dataset's images, labels and ids (what a run or job actually read).

    Reads every image once, batch by batch: on a streamed dataset this also checks every file before any work.
    """
    from robaudit.progress import progress_bar

    digest = hashlib.sha256()
    batches = list(dataset.batches(batch_size))
    with progress_bar(transient=True) as bar:
        task = bar.add_task("check data", total=len(batches), status="")
        for start, stop in batches:
            digest.update(dataset.images[start:stop].contiguous().numpy().tobytes())
            bar.advance(task)
    digest.update(dataset.labels.numpy().tobytes())
    digest.update(json.dumps(dataset.ids).encode())
    return digest.hexdigest()


@dataclass
class DatasetJob:
    """One dataset job: its input ``dataset`` (checked), output folder, device and seed."""

    created_by: str
    spec: DataSpec
    dataset: ImageSet
    source_sha: str
    out: Path
    overwrite: bool
    device: torch.device
    seed: int

    @classmethod
    def start(
        cls,
        created_by: str,
        spec: DataSpec,
        *,
        out: Path,
        overwrite: bool,
        device: str,
        seed: int,
        transform: EvalTransform | None = None,
    ) -> DatasetJob:
        """Check that ``out`` may be written, load the data (through a model's evaluation ``transform`` when given)
        and read every image once (before any work)."""
        prepare_output(out, overwrite=overwrite)
        dataset = spec.load(stream=True, transform=transform)
        source_sha = data_fingerprint(dataset)
        return cls(created_by, spec, dataset, source_sha, Path(out), overwrite, resolve_device(device), seed)

    def finish(self, result: ImageSet, provenance: dict[str, Any]) -> Path:
        """Write ``result`` to ``out`` with ``provenance`` plus where it came from (an artifact's own source is kept
        as ``source_spec``, so a chain of jobs still names the original data)."""
        source_spec = self.dataset.provenance.get("source_spec", {"source": self.spec.source, "split": self.spec.split})
        full = {
            "created_by": self.created_by,
            "created": now(),
            **provenance,
            "source": self.dataset.description,
            "source_spec": source_spec,
            "source_sha256_tensors": self.source_sha,
            "seed": self.seed,
            "versions": versions(),
        }
        return write_artifact(self.out, result, provenance=full, replace=self.overwrite)
