"""`robaudit purify`: purify a dataset (a data source or an attack artifact) and write a dataset artifact."""

from __future__ import annotations

from pathlib import Path

import typer

from robaudit.audit.evaluate import data_fingerprint
from robaudit.cli.common import DeviceOption, SeedOption, SkipBadOption, TrustOption, handle_errors
from robaudit.config import ComponentSpec
from robaudit.data import write_artifact
from robaudit.data.artifact import prepare_output
from robaudit.data.spec import DataSpec
from robaudit.fileio import sha256_file
from robaudit.manifest import now, resolve_device, versions
from robaudit.models.spec import ModelSpec, obtain_classifier
from robaudit.progress import console
from robaudit.purifiers.dataset import purify_dataset
from robaudit.purifiers.resolve import obtain_purifier, resolve_purifier

app = typer.Typer()


@app.command("purify")
@handle_errors
def purify(
    purifier: str = typer.Option(..., "--purifier", help="Purifier name (robaudit ls purifiers)."),
    data: str = typer.Option(..., "--data", help="Dataset name or path (e.g. an attack artifact)."),
    purifier_checkpoint: str = typer.Option(None, "--purifier-checkpoint", help="A trained purifier checkpoint."),
    train_data: str = typer.Option(
        None,
        "--train-data",
        help="Where to train a purifier when none is given (default: the data source, or an artifact's source).",
    ),
    model: str = typer.Option(None, "--model", help="Classifier (needed to train mae)."),
    out: Path = typer.Option(None, "--out", help="Output dataset folder (default runs/purified-<purifier>-<data>)."),
    split: str = typer.Option("test", "--split"),
    limit: int = typer.Option(None, "--limit", help="At most this many samples."),
    skip_bad: bool = SkipBadOption,
    batch_size: int = typer.Option(128, "--batch-size"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    seed: int = SeedOption,
    device: str = DeviceOption,
    trust_checkpoint: bool = TrustOption,
) -> None:
    """Purify every image of a dataset and write the result (float32 shards) with provenance."""
    params = {"checkpoint": purifier_checkpoint} if purifier_checkpoint else {}
    resolved = resolve_purifier(ComponentSpec(purifier, params))
    out = out or Path("runs") / f"purified-{purifier}-{Path(data).stem}"
    prepare_output(out, overwrite=overwrite)
    torch_device = resolve_device(device)
    dataset = DataSpec(source=data, split=split, limit=limit, skip_bad=skip_bad).load(stream=True)
    source_sha = data_fingerprint(dataset)  # reads and checks every image before any work
    source = train_data or dataset.provenance.get("source_spec", {}).get("source") or data
    classifier, classifier_sha = None, ""
    if model:
        classifier, model_path = obtain_classifier(
            ModelSpec(path=model, trust_checkpoint=trust_checkpoint), device=str(torch_device)
        )
        classifier_sha = sha256_file(model_path)
    module, path = obtain_purifier(
        resolved,
        data_source=source,
        image_size=dataset.shape[1],
        channels=dataset.shape[0],
        seed=seed,
        device=str(torch_device),
        classifier=classifier,
        classifier_sha256=classifier_sha,
        trust_checkpoint=trust_checkpoint,
    )
    purified = purify_dataset(module, dataset, seed=seed, batch_size=batch_size, device=torch_device)
    provenance = {
        "created_by": "robaudit purify",
        "created": now(),
        "purifier": {**resolved.to_dict(), "checkpoint": str(path), "sha256": sha256_file(path)},
        "source": dataset.description,
        "source_provenance": dataset.provenance,
        "source_spec": dataset.provenance.get("source_spec", {"source": data, "split": split}),
        "source_sha256_tensors": source_sha,
        "seed": seed,
        "versions": versions(),
    }
    write_artifact(out, purified, provenance=provenance, replace=overwrite)
    console.print(f"wrote {len(purified)} purified images ({resolved.label}) to {out}")
