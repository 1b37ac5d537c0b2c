"""`robaudit distill`: distill a teacher classifier into a small student; write it and the comparison."""

from __future__ import annotations

from pathlib import Path

import typer

from robaudit.cli.common import DeviceOption, TrustOption, handle_errors
from robaudit.config import load_yaml
from robaudit.distill import DISTILL_KEYS

app = typer.Typer()


@app.command("distill")
@handle_errors
def distill_command(
    config: Path = typer.Option(None, "--config", help="YAML config (keys: " + ", ".join(DISTILL_KEYS) + ")."),
    teacher: str = typer.Option(None, "--teacher", help="Teacher classifier checkpoint."),
    data: str = typer.Option(None, "--data", help="Dataset (train split to distill on, test split to compare)."),
    student: str = typer.Option(None, "--student", help="Student architecture (robaudit ls models) or timm name."),
    purifier: str = typer.Option(None, "--purifier", help="Distill the purified pipeline (purifier name)."),
    epochs: int = typer.Option(None, "--epochs"),
    out: Path = typer.Option(None, "--out", help="Student checkpoint (default runs/models/<data>-student.pt)."),
    seed: int = typer.Option(None, "--seed"),
    device: str = DeviceOption,
    trust_checkpoint: bool = TrustOption,
) -> None:
    """Distill a teacher into a student; write the student and a teacher/student comparison."""
    from robaudit.distill.run import DistillConfig, run_distillation

    mapping = load_yaml(config) if config else {}
    flags = {"teacher": teacher, "data": data, "student": student, "purifier": purifier, "out": out, "seed": seed}
    mapping.update({key: str(value) if key == "out" else value for key, value in flags.items() if value is not None})
    if epochs is not None:
        mapping["recipe"] = {**(mapping.get("recipe") or {}), "epochs": epochs}
    settings = DistillConfig.from_mapping(mapping)
    typer.echo(run_distillation(settings, device=device, trust_checkpoint=trust_checkpoint))
