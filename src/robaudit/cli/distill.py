"""`robaudit distill`: distill a teacher classifier into a small student; write it and the comparison."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import typer

from robaudit.classifiers import save_classifier
from robaudit.cli.common import DeviceOption, TrustOption, handle_errors
from robaudit.config import ComponentSpec, check_keys, load_yaml, parse_eps
from robaudit.distill import DistillRecipe, compare, comparison_markdown, distill
from robaudit.evaluate import DataSpec
from robaudit.fileio import atomic_write_json, atomic_write_text, sha256_file
from robaudit.manifest import resolve_device
from robaudit.modelspec import ModelSpec, obtain_classifier
from robaudit.progress import console
from robaudit.purifiers.resolve import obtain_purifier, resolve_purifier

app = typer.Typer()

CONFIG_KEYS = ["teacher", "data", "purifier", "student", "recipe", "eval_limit", "eps", "steps", "seed", "out"]


@app.command("distill")
@handle_errors
def distill_command(
    config: Path = typer.Option(None, "--config", help="YAML config (keys: " + ", ".join(CONFIG_KEYS) + ")."),
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
    mapping = load_yaml(config) if config else {}
    check_keys(mapping, CONFIG_KEYS, where="distill config")
    recipe_values = dict(mapping.get("recipe") or {})
    check_keys(recipe_values, [f.name for f in fields(DistillRecipe)], where="distill recipe")
    for key, value in (("student", student or mapping.get("student")), ("epochs", epochs)):
        if value is not None:
            recipe_values[key] = value
    recipe = DistillRecipe(**recipe_values)
    teacher_spec = teacher or mapping.get("teacher")
    if teacher_spec is None:
        from robaudit.errors import ConfigError

        raise ConfigError("no teacher given; pass --teacher PATH or set 'teacher:' in the config")
    data_spec = DataSpec.parse(data or mapping.get("data") or "digits")
    seed = seed if seed is not None else int(mapping.get("seed", 0))
    out = out or Path(mapping.get("out") or Path("runs") / "models" / f"{Path(data_spec.source).stem}-student.pt")
    torch_device = str(resolve_device(device))
    teacher_model_spec = ModelSpec.parse(teacher_spec)
    teacher_model_spec.trust_checkpoint = trust_checkpoint
    teacher_model, teacher_path = obtain_classifier(teacher_model_spec, device=torch_device)
    purifier_entry = purifier or mapping.get("purifier")
    purifier_module = None
    if purifier_entry:
        resolved = resolve_purifier(ComponentSpec.parse(purifier_entry, where="purifier"))
        purifier_module, _ = obtain_purifier(
            resolved,
            data_source=data_spec.source,
            image_size=data_spec.image_size,
            channels=data_spec.channels,
            seed=seed,
            device=torch_device,
            classifier=teacher_model,
            classifier_sha256=sha256_file(teacher_path),
            trust_checkpoint=trust_checkpoint,
        )
    train_spec = DataSpec(**{**data_spec.__dict__, "split": "train", "limit": None})
    student_model = distill(
        teacher_model, train_spec.load(), recipe=recipe, purifier=purifier_module, seed=seed, device=torch_device
    )
    save_classifier(student_model, out)
    test_spec = DataSpec(**{**data_spec.__dict__, "limit": mapping.get("eval_limit", data_spec.limit)})
    result = compare(
        teacher_model,
        student_model,
        test_spec.load(),
        purifier=purifier_module,
        eps=parse_eps(mapping.get("eps", "8/255")),
        steps=int(mapping.get("steps", 20)),
        seed=seed,
        device=torch_device,
    )
    result.update(teacher_checkpoint=str(teacher_path), student_checkpoint=str(out), purifier=purifier_entry)
    stem = out.with_suffix("")
    atomic_write_json(f"{stem}.comparison.json", result)
    text = comparison_markdown(result)
    atomic_write_text(f"{stem}.comparison.md", text)
    typer.echo(text)
    console.print(f"wrote {out}, {stem}.comparison.md and {stem}.comparison.json")
