"""`distill` as a library call: its config schema (the keys of a distill YAML) and the run that writes a student
checkpoint and the teacher/student comparison."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from robaudit.config import ComponentSpec, check_keys, parse_eps
from robaudit.data.spec import DataSpec
from robaudit.distill import DISTILL_KEYS
from robaudit.distill.loop import DistillRecipe, compare_teacher_and_student, comparison_markdown, distill
from robaudit.errors import ConfigError
from robaudit.fileio import atomic_write_json, atomic_write_text
from robaudit.models.classifiers import save_classifier
from robaudit.models.fingerprint import model_fingerprint
from robaudit.models.spec import ModelSpec, obtain_classifier
from robaudit.purifiers.resolve import PurifierContext, obtain_purifier, resolve_purifier
from robaudit.runs.manifest import resolve_device


@dataclass
class DistillConfig:
    """Everything a distillation needs; ``eps`` (the Linf budget) and ``steps`` set the PGD attack of the comparison."""

    teacher: ModelSpec
    data: DataSpec
    recipe: DistillRecipe = field(default_factory=DistillRecipe)
    purifier: ComponentSpec | None = None
    eval_limit: int | None = None
    eps: float = 8 / 255
    steps: int = 20
    seed: int = 0
    out: Path | None = None

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any]) -> DistillConfig:
        """Validate a distill mapping (YAML + overrides); unknown keys are errors naming the key."""
        check_keys(mapping, DISTILL_KEYS, where="distill config")
        recipe = dict(mapping.get("recipe") or {})
        if mapping.get("student") is not None:
            recipe["student"] = mapping["student"]
        check_keys(recipe, [f.name for f in fields(DistillRecipe)], where="distill recipe")
        if mapping.get("teacher") is None:
            raise ConfigError("no teacher given; pass --teacher PATH or set 'teacher:' in the config")
        data = DataSpec.parse(mapping.get("data") or "digits")
        purifier = mapping.get("purifier")
        return cls(
            teacher=ModelSpec.parse(mapping["teacher"]),
            data=data,
            recipe=DistillRecipe(**recipe),
            purifier=ComponentSpec.parse(purifier, where="purifier") if purifier else None,
            eval_limit=mapping.get("eval_limit", data.limit),
            eps=parse_eps(mapping.get("eps", "8/255")),
            steps=int(mapping.get("steps", 20)),
            seed=int(mapping.get("seed") or 0),
            out=Path(mapping["out"]) if mapping.get("out") else None,
        )

    def student_path(self) -> Path:
        """Where the student is written (default ``runs/models/<data>-student.pt``)."""
        return self.out or Path("runs") / "models" / f"{Path(self.data.source).stem}-student.pt"


def run_distillation(config: DistillConfig, *, device: str = "auto", trust_checkpoint: bool = False) -> str:
    """Distill ``config.teacher`` into a student on the data's train split, compare both on its test split; write
    the student checkpoint and ``<student>.comparison.{json,md}``. Returns the comparison's markdown."""
    torch_device = str(resolve_device(device))
    teacher_spec = replace(config.teacher, trust_checkpoint=trust_checkpoint)
    teacher, teacher_path = obtain_classifier(teacher_spec, device=torch_device)
    purifier = None
    if config.purifier is not None:
        context = PurifierContext(
            data_source=config.data.source,
            seed=config.seed,
            device=torch_device,
            image_size=config.data.image_size,
            channels=config.data.channels,
            classifier=teacher,
            classifier_sha256=model_fingerprint(teacher, teacher_path),
            trust_checkpoint=trust_checkpoint,
            input_shape=tuple(teacher.card.input_size) or None,
        )
        purifier, _ = obtain_purifier(resolve_purifier(config.purifier), context)
    train = replace(config.data, split="train", limit=None).load()
    student = distill(teacher, train, recipe=config.recipe, purifier=purifier, seed=config.seed, device=torch_device)
    out = config.student_path()
    save_classifier(student, out)
    test = replace(config.data, limit=config.eval_limit).load()
    result = compare_teacher_and_student(
        teacher,
        student,
        test,
        purifier=purifier,
        eps=config.eps,
        steps=config.steps,
        seed=config.seed,
        device=torch_device,
    )
    label = (
        None
        if config.purifier is None
        else config.purifier.to_dict()
        if config.purifier.params
        else config.purifier.name
    )
    result.update(teacher_checkpoint=str(teacher_path), student_checkpoint=str(out), purifier=label)
    atomic_write_json(f"{out.with_suffix('')}.comparison.json", result)
    text = comparison_markdown(result)
    atomic_write_text(f"{out.with_suffix('')}.comparison.md", text)
    return text
