"""`robaudit attack`: attack a dataset and write an adversarial dataset artifact with provenance."""

from __future__ import annotations

from pathlib import Path

import typer

from robaudit.attacks import resolve_attack
from robaudit.attacks.dataset import attack_dataset
from robaudit.audit.evaluate import data_fingerprint
from robaudit.cli.common import DeviceOption, SeedOption, SkipBadOption, TrustOption, handle_errors
from robaudit.config import parse_eps
from robaudit.data import write_artifact
from robaudit.data.artifact import prepare_output
from robaudit.data.spec import DataSpec
from robaudit.fileio import sha256_file
from robaudit.manifest import now, resolve_device, versions
from robaudit.models.compat import check_compatible
from robaudit.models.spec import ModelSpec, obtain_classifier
from robaudit.progress import console

app = typer.Typer()


@app.command("attack")
@handle_errors
def attack(
    model: str = typer.Option(..., "--model", help="Classifier checkpoint."),
    data: str = typer.Option("digits", "--data", help="Dataset name or path."),
    attack_name: str = typer.Option("pgd", "--attack", help="Attack name (robaudit ls attacks)."),
    out: Path = typer.Option(None, "--out", help="Output dataset folder (default runs/adv-<attack>-<data>)."),
    split: str = typer.Option("test", "--split"),
    limit: int = typer.Option(None, "--limit", help="At most this many samples."),
    image_size: int = typer.Option(None, "--image-size", help="Resize images to this size."),
    channels: int = typer.Option(None, "--channels", help="Convert images to 1 or 3 channels."),
    skip_bad: bool = SkipBadOption,
    eps: str = typer.Option("8/255", "--eps", help="Linf budget, e.g. 8/255."),
    eps_l2: str = typer.Option("0.5", "--eps-l2", help="L2 budget for L2 attacks."),
    batch_size: int = typer.Option(128, "--batch-size"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    seed: int = SeedOption,
    device: str = DeviceOption,
    trust_checkpoint: bool = TrustOption,
) -> None:
    """Attack every sample of a dataset and write the adversarial images (float32 shards) with provenance."""
    resolved = resolve_attack(
        attack_name, {}, eps=parse_eps(eps, name="--eps"), eps_l2=parse_eps(eps_l2, name="--eps-l2")
    )
    out = out or Path("runs") / f"adv-{attack_name}-{Path(data).stem}"
    prepare_output(out, overwrite=overwrite)
    torch_device = resolve_device(device)
    classifier, model_path = obtain_classifier(
        ModelSpec(path=model, trust_checkpoint=trust_checkpoint), device=str(torch_device)
    )
    spec = DataSpec(source=data, split=split, limit=limit, image_size=image_size, channels=channels, skip_bad=skip_bad)
    dataset = spec.load(stream=True)
    source_sha = data_fingerprint(dataset)  # reads and checks every image before any work
    check_compatible(classifier, dataset)
    classifier.to(torch_device)
    adversarial = attack_dataset(classifier, dataset, resolved, seed=seed, batch_size=batch_size, device=torch_device)
    provenance = {
        "created_by": "robaudit attack",
        "created": now(),
        "attack": resolved.to_dict(),
        "model_path": str(model_path),
        "model_sha256": sha256_file(model_path),
        "source": dataset.description,
        "source_spec": {"source": data, "split": split},
        "source_sha256_tensors": source_sha,
        "seed": seed,
        "versions": versions(),
    }
    write_artifact(out, adversarial, provenance=provenance, replace=overwrite)
    console.print(f"wrote {len(adversarial)} adversarial images ({resolved.label}, {resolved.threat_model()}) to {out}")
