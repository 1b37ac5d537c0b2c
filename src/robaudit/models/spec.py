"""Where a classifier comes from: a checkpoint path, or a training recipe whose result is cached on disk."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from robaudit.config import as_mapping, build_dataclass, check_keys, coerce
from robaudit.errors import ConfigError
from robaudit.frozen import frozen, thawed
from robaudit.models.recipe import ClassifierRecipe
from robaudit.models.references import missing_checkpoint, source_option_names, split_source
from robaudit.progress import console

if TYPE_CHECKING:  # reading a config imports no torch; loading and training a classifier do (inside the functions)
    from torch import nn


def cache_dir() -> Path:
    """robaudit's cache: ``$ROBAUDIT_CACHE``, else ``$XDG_CACHE_HOME/robaudit``, else ``~/.cache/robaudit``."""
    if os.environ.get("ROBAUDIT_CACHE"):
        return Path(os.environ["ROBAUDIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "robaudit"


@dataclass(frozen=True)
class TrainSpec:
    """Train a classifier on ``data`` (its ``train`` split; validation on ``val`` when present). Read-only."""

    data: str = "digits"
    image_size: int | None = None
    channels: int | None = None
    seed: int = 0
    recipe: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipe", frozen(self.recipe))


@dataclass(frozen=True)
class ModelSpec:
    """A classifier: ``path`` to a checkpoint, and/or ``train`` to train (and cache) one when it is missing.
    Read-only: its mappings are read-only and its lists tuples."""

    path: str | None = None
    arch: str | None = None
    num_classes: int | None = None
    train: TrainSpec | None = None
    randomized: bool = False  # declared randomized (noise inside): evaluated with EOT and repeats
    weights: str | None = None  # a pretrained source: fine-tuned state dict over the pretrained weights
    source_options: Mapping[str, Any] = field(default_factory=dict)  # the source's own (robustbench: model_dir, ...)
    arch_kwargs: Mapping[str, Any] | None = None  # a bare state dict: its timm architecture's arguments
    mean: tuple[float, ...] | None = None  # a bare state dict: the normalization its network expects
    std: tuple[float, ...] | None = None
    trust_checkpoint: bool = False  # set by the --trust-checkpoint flag only, never by a config file

    def __post_init__(self) -> None:
        for name in ("source_options", "arch_kwargs", "mean", "std"):
            object.__setattr__(self, name, frozen(getattr(self, name)))

    KEYS = ("path", "arch", "num_classes", "train", "randomized", "stochastic", "arch_kwargs", "mean", "std", "weights")

    @classmethod
    def parse(cls, value: object) -> ModelSpec:
        """Accept a path string or a mapping ``{path, arch, num_classes, train: {...}}``."""
        value = as_mapping(value, where="model", short_key="path", expected="a checkpoint path or a mapping")
        if "threat" in value:  # the earlier name of rb_threat
            value = {"rb_threat": value["threat"], **{k: v for k, v in value.items() if k != "threat"}}
        path = value.get("path")
        own = source_option_names(path) if isinstance(path, str) else []  # the source's own options
        where = f"model (source {path.partition(':')[0]})" if own else "model"
        check_keys(value, [*cls.KEYS, *own], where=where)
        fields: dict[str, Any] = {"path": path, "arch": value.get("arch"), "num_classes": value.get("num_classes")}
        if value.get("weights") is not None:
            fields["weights"] = coerce(value["weights"], str, where="model.weights")
        given = [key for key in own if value.get(key) is not None]
        fields["source_options"] = {key: coerce(value[key], str, where=f"model.{key}") for key in given}
        declared = value.get("randomized", value.get("stochastic", False))  # stochastic: the earlier name
        fields["randomized"] = coerce(declared, bool, where="model.randomized")
        if value.get("arch_kwargs") is not None:
            if not isinstance(value["arch_kwargs"], dict):
                raise ConfigError(
                    f"model.arch_kwargs must be a mapping such as {{depth: 4}}; got {value['arch_kwargs']!r}"
                )
            fields["arch_kwargs"] = dict(value["arch_kwargs"])
        fields["mean"], fields["std"] = (float_list(value.get(k), where=f"model.{k}") for k in ("mean", "std"))
        if value.get("train") is not None:
            fields["train"] = build_dataclass(TrainSpec, value["train"], where="model.train")
            build_dataclass(ClassifierRecipe, thawed(fields["train"].recipe), where="model.train.recipe")
        if fields["path"] is None and fields.get("train") is None:
            raise ConfigError("model: give a checkpoint 'path:' or a 'train:' recipe")
        return cls(**fields)

    def check_file(self) -> None:
        """Fail now, before any work, when ``path`` names no registered source, no existing file and no ``train:``
        recipe that would write it."""
        if (
            self.path is not None
            and self.train is None
            and not split_source(self.path)
            and not Path(self.path).is_file()
        ):
            raise missing_checkpoint(self.path)

    def to_dict(self) -> dict[str, Any]:
        """YAML form for the resolved config."""
        out = {
            k: thawed(v)
            for k, v in asdict(self).items()
            if v is not None and k not in ("trust_checkpoint", "source_options")
        }
        out.update(thawed(self.source_options))
        if not self.randomized:
            out.pop("randomized")
        return out


def float_list(value: object, *, where: str) -> list[float] | None:
    """A list of numbers from a YAML list or a comma-separated string ("0.485,0.456,0.406"); None stays None."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    try:
        return [float(item) for item in items]
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a list of numbers such as 0.5,0.5,0.5; got {value!r}") from None


def trained_checkpoint_path(train: TrainSpec) -> Path:
    """The cache path for the classifier ``train`` describes (keyed by data, sizes, seed and recipe)."""
    key = json.dumps(thawed(asdict(train)), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "classifiers" / f"{Path(train.data).stem}-{digest}.pt"


def data_location(source: str) -> str:
    """A data source as a checkpoint records it: an existing path made absolute, a registered name as given."""
    path = Path(source)
    return str(path.resolve()) if path.exists() else source


def train_and_save(train: TrainSpec, path: Path, *, device: str) -> Path:
    """Train the classifier ``train`` describes and save it to ``path``."""
    from robaudit.data import load_dataset
    from robaudit.errors import DataError
    from robaudit.models.classifiers import save_classifier
    from robaudit.models.training import train_classifier

    options = {"image_size": train.image_size, "channels": train.channels}
    train_set = load_dataset(train.data, split="train", **options)
    try:
        val_set = load_dataset(train.data, split="val", **options)
    except DataError:
        val_set = None
    model, _ = train_classifier(
        train_set, val_set, recipe=ClassifierRecipe(**thawed(train.recipe)), seed=train.seed, device=device
    )
    model.card.training["data_source"] = data_location(train.data)
    save_classifier(model, path)
    return path


def obtain_classifier(spec: ModelSpec, *, device: str) -> tuple[nn.Module, Path]:
    """Load the classifier ``spec`` names, training and caching it first when only a recipe is given.

    Returns the model and the checkpoint it came from; for a pretrained source (``timm:``, ``hf-hub:``...) a name
    made from the reference (no such file: the model is fingerprinted by its weights, ``model_fingerprint``)."""
    from robaudit.models.classifiers import load_classifier
    from robaudit.models.sources import SourceOptions, load_from_source

    if spec.path is not None and split_source(spec.path):
        options = SourceOptions(
            num_classes=spec.num_classes, weights=spec.weights, trust_checkpoint=spec.trust_checkpoint
        )
        return load_from_source(spec.path, options, thawed(spec.source_options)), Path(safe_name(spec.path))
    if spec.path is not None and (Path(spec.path).exists() or spec.train is None):
        path = Path(spec.path)
    else:
        path = Path(spec.path) if spec.path else trained_checkpoint_path(spec.train)
        if path.exists():
            console.print(f"reusing cached classifier {escape(str(path))}")
        else:
            shown, data = escape(str(path)), escape(spec.train.data)
            console.print(f"no classifier at {shown}: training one ({data}, seed {spec.train.seed})")
            train_and_save(spec.train, path, device=device)
            console.print(f"saved classifier to {escape(str(path))}")
    model = load_classifier(
        path,
        arch=spec.arch,
        arch_kwargs=thawed(spec.arch_kwargs),
        num_classes=spec.num_classes,
        mean=thawed(spec.mean),
        std=thawed(spec.std),
        trust_checkpoint=spec.trust_checkpoint,
    )
    return model, path


def safe_name(text: str) -> str:
    """``text`` as a file-name stem: letters, digits, dots and dashes kept, anything else an underscore."""
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in text).strip("_.") or "model"
