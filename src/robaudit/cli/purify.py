"""`robaudit purify`: purify a dataset (a data source or an attack artifact) and write a dataset artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from robaudit.cli.common import TrustCodeOption, handle_errors
from robaudit.cli.flags import DATA_FLAGS, JOB_FLAGS, JobFlags, with_flags
from robaudit.config import ComponentSpec
from robaudit.errors import ConfigError
from robaudit.progress import console

app = typer.Typer()


@app.command("purify")
@handle_errors
@with_flags(JOB_FLAGS)
@with_flags(DATA_FLAGS)
def purify(
    purifier: str = typer.Option(..., "--purifier", help="Purifier name (robaudit ls purifiers)."),
    data: str = typer.Option(..., "--data", help="Dataset name or path (e.g. an attack artifact)."),
    purifier_checkpoint: str = typer.Option(
        None, "--purifier-checkpoint", help="A purifier checkpoint, or hf-hub:ORG/NAME or local-dir:PATH (diffusers)."
    ),
    train_data: str = typer.Option(
        None,
        "--train-data",
        help="Where to train a purifier when none is given (default: the data source, or an artifact's source).",
    ),
    model: str = typer.Option(None, "--model", help="Classifier (needed to train mae)."),
    out: Path = typer.Option(None, "--out", help="Output dataset folder (default runs/purified-<purifier>-<data>)."),
    trust_code: bool = TrustCodeOption,
    data_flags: dict[str, Any] = None,  # type: ignore[assignment]  (filled by with_flags)
    job: JobFlags = None,  # type: ignore[assignment]
) -> None:
    """Purify every image of a dataset and write the result (float32 shards) with provenance."""
    from robaudit.models.fingerprint import model_fingerprint
    from robaudit.models.spec import ModelSpec, obtain_classifier
    from robaudit.purifiers.dataset import purify_dataset
    from robaudit.purifiers.resolve import PurifierContext, obtain_purifier, resolve_purifier

    if data_flags.get("class_map"):
        raise ConfigError("--class-map maps data classes to a model's; purify reads no model's classes, so drop it")
    params = {"checkpoint": purifier_checkpoint} if purifier_checkpoint else {}
    resolved = resolve_purifier(ComponentSpec(purifier, params))
    out = out or Path("runs") / f"purified-{purifier}-{Path(data).stem}"
    task = job.start("robaudit purify", data, data_flags, out)
    classifier, classifier_sha = None, ""
    if model:
        spec = ModelSpec(path=model, trust_checkpoint=job.trust_checkpoint)
        classifier, model_path = obtain_classifier(spec, device=str(task.device))
        classifier_sha = model_fingerprint(classifier, model_path)
    context = PurifierContext(
        data_source=train_data or task.dataset.provenance.get("source_spec", {}).get("source") or data,
        seed=job.seed,
        device=str(task.device),
        image_size=task.dataset.shape[1],
        channels=task.dataset.shape[0],
        classifier=classifier,
        classifier_sha256=classifier_sha,
        trust_checkpoint=job.trust_checkpoint,
        trust_code=trust_code,
        input_shape=tuple(task.dataset.shape),
    )
    module, provenance = obtain_purifier(resolved, context)
    purified = purify_dataset(module, task.dataset, seed=job.seed, batch_size=job.batch_size, device=task.device)
    purifier_record = {**resolved.to_dict(), **{k: v for k, v in provenance.items() if k != "kind"}}
    task.finish(purified, {"purifier": purifier_record, "source_provenance": task.dataset.provenance})
    console.print(f"wrote {len(purified)} purified images ({escape(resolved.label)}) to {escape(str(task.out))}")
