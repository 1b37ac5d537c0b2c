"""`robaudit attack`: attack a dataset and write an adversarial dataset artifact with provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from robaudit.cli.common import handle_errors
from robaudit.cli.flags import DATA_FLAGS, JOB_FLAGS, JobFlags, with_flags
from robaudit.config import parse_eps
from robaudit.progress import console

app = typer.Typer()


@app.command("attack")
@handle_errors
@with_flags(JOB_FLAGS)
@with_flags(DATA_FLAGS)
def attack(
    model: str = typer.Option(..., "--model", help="Classifier checkpoint."),
    data: str = typer.Option("digits", "--data", help="Dataset name or path."),
    attack_name: str = typer.Option("pgd", "--attack", help="Attack name (robaudit ls attacks)."),
    out: Path = typer.Option(None, "--out", help="Output dataset folder (default runs/adv-<attack>-<data>)."),
    eps: str = typer.Option("8/255", "--eps", help="Linf budget, e.g. 8/255."),
    eps_l2: str = typer.Option("0.5", "--eps-l2", help="L2 budget for L2 attacks."),
    data_flags: dict[str, Any] = None,  # type: ignore[assignment]  (filled by with_flags)
    job: JobFlags = None,  # type: ignore[assignment]
) -> None:
    """Attack every sample of a dataset and write the adversarial images (float32 shards) with provenance."""
    from robaudit.attacks import resolve_attack
    from robaudit.attacks.dataset import attack_dataset
    from robaudit.models.fingerprint import model_fingerprint
    from robaudit.models.model_data import fit_to_model, model_transform
    from robaudit.models.spec import ModelSpec, obtain_classifier
    from robaudit.runs.manifest import resolve_device

    resolved = resolve_attack(
        attack_name, {}, eps=parse_eps(eps, name="--eps"), eps_l2=parse_eps(eps_l2, name="--eps-l2")
    )
    out = out or Path("runs") / f"adv-{attack_name}-{Path(data).stem}"
    classifier, model_path = obtain_classifier(
        ModelSpec(path=model, trust_checkpoint=job.trust_checkpoint), device=str(resolve_device(job.device))
    )
    task = job.start("robaudit attack", data, data_flags, out, transform=model_transform(classifier))
    task.dataset = fit_to_model(classifier, task.dataset, class_map=task.spec.class_map)
    classifier.to(task.device)
    adversarial = attack_dataset(
        classifier, task.dataset, resolved, seed=job.seed, batch_size=job.batch_size, device=task.device
    )
    provenance = {"attack": resolved.to_dict(), "model_path": str(model_path)}
    provenance["model_sha256"] = model_fingerprint(classifier, model_path)
    task.finish(adversarial, provenance)
    budget = f"{resolved.label}, {resolved.budget()}"
    console.print(f"wrote {len(adversarial)} adversarial images ({budget}) to {escape(str(task.out))}")
