"""From a config entry to a ready purifier: given checkpoint, cached one, or one trained now (and cached)."""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape
from torch import nn

from robaudit.config import ComponentSpec
from robaudit.data import load_dataset
from robaudit.data.transforms import EvalTransform
from robaudit.errors import ConfigError
from robaudit.progress import console
from robaudit.purifiers.base import (
    PURIFIERS,
    Purifier,
    load_purifier_network,
    purifier_cache_path,
    recipe_for,
    save_purifier_network,
    train_purifier_network,
)
from robaudit.registry import check_keys


@dataclass
class ResolvedPurifier:
    """A purifier with every hyperparameter fixed, and where its network comes from."""

    name: str
    label: str
    params: dict[str, Any]
    checkpoint: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    eot: int | None = None  # EOT draws per gradient for this defense (None: the run's eot)

    def to_dict(self) -> dict[str, Any]:
        """Plain form for configs and manifests."""
        out = {"name": self.name, "label": self.label, "params": self.params, "recipe": self.recipe}
        if self.checkpoint:
            out["checkpoint"] = self.checkpoint
        if self.eot is not None:
            out["eot"] = self.eot
        return out


def resolve_purifier(spec: ComponentSpec, *, label: str | None = None) -> ResolvedPurifier:
    """Check names and keys; fill in the factory's defaults.

    Special keys: ``checkpoint`` (a trained purifier), ``recipe`` (training hyperparameters) and ``eot`` (EOT draws
    per gradient against this defense, overriding the run's ``eot``; e.g. 1 for a purifier whose prediction ensemble
    already averages many draws inside every forward pass).
    """
    entry = PURIFIERS.get(spec.name)
    params = dict(spec.params)
    checkpoint = params.pop("checkpoint", None)
    recipe = params.pop("recipe", None) or {}
    eot = params.pop("eot", None)
    if eot is not None and (not isinstance(eot, int) or isinstance(eot, bool) or eot <= 0):
        raise ConfigError(f"purifier {spec.name!r}: eot must be a positive integer, got {eot!r}")
    hyper = entry.hyperparameters()
    check_keys(params, sorted([*hyper, "checkpoint", "recipe", "eot"]), where=f"purifier {spec.name!r}")
    recipe_values = asdict(recipe_for(spec.name, recipe))
    full = {k: p.default for k, p in hyper.items() if p.default is not inspect.Parameter.empty}
    full.update(params)
    return ResolvedPurifier(spec.name, label or spec.name, full, checkpoint, recipe_values, eot)


def obtain_purifier(
    resolved: ResolvedPurifier,
    *,
    data_source: str,
    image_size: int | None,
    channels: int | None,
    seed: int,
    device: str,
    classifier: nn.Module | None = None,
    classifier_sha256: str = "",
    trust_checkpoint: bool = False,
    transform: EvalTransform | None = None,
) -> tuple[Purifier, Path]:
    """The purifier ``resolved`` describes: from its checkpoint, or trained on ``data_source``'s train split (read
    through a pretrained model's evaluation ``transform`` when given, so it purifies images at the model's size).

    A trained network is cached keyed by kind, data, recipe, seed, size and transform; robaudit says when it trains
    or reuses one.
    """
    if resolved.checkpoint:
        path = Path(resolved.checkpoint)
    else:
        require_classifier(resolved.name, classifier)  # before any work, not after minutes of training
        recipe = recipe_for(resolved.name, resolved.recipe)
        extra = classifier_sha256 if PURIFIERS.get(resolved.name).meta.get("needs_classifier") else ""
        if transform is not None:
            extra = f"{extra}/{transform.description()}"
        path = purifier_cache_path(
            resolved.name, data=data_source, recipe=recipe, seed=seed, extra=f"{image_size}/{channels}/{extra}"
        )
        if path.exists():
            console.print(f"reusing cached {escape(resolved.name)} purifier {escape(str(path))}")
        else:
            console.print(
                f"no {resolved.name} purifier given: training one on {data_source} (train split), cached at {path}"
            )
            train_purifier_file(
                resolved.name,
                data=data_source,
                out=path,
                recipe=resolved.recipe,
                seed=seed,
                device=device,
                image_size=image_size,
                channels=channels,
                classifier=classifier,
                transform=transform,
            )
    kind, network, _ = load_purifier_network(path, trust_checkpoint=trust_checkpoint)
    if kind != resolved.name:
        raise ConfigError(f"checkpoint {str(path)!r} holds a {kind!r} purifier, not {resolved.name!r}")
    purifier = PURIFIERS.build(resolved.name, resolved.params, network)
    return purifier.eval(), path


def train_purifier_file(
    kind: str,
    *,
    data: str,
    out: Path,
    recipe: dict[str, Any],
    seed: int,
    device: str,
    image_size: int | None = None,
    channels: int | None = None,
    classifier: nn.Module | None = None,
    transform: EvalTransform | None = None,
) -> Path:
    """Train purifier ``kind`` on ``data``'s train split and write its checkpoint to ``out`` (the one training path:
    ``robaudit train``, and evaluate / purify / distill when no checkpoint is given); ``transform``: a pretrained
    model's evaluation transform the images go through first."""
    require_classifier(kind, classifier)
    recipe_obj = recipe_for(kind, recipe)
    train_set = load_dataset(data, split="train", image_size=image_size, channels=channels, transform=transform)
    network = train_purifier_network(
        kind, train_set, recipe=recipe_obj, seed=seed, device=device, classifier=classifier
    )
    return save_purifier_network(
        out,
        kind=kind,
        network=network,
        recipe=recipe_obj,
        input_size=list(train_set.shape),
        training={"data": train_set.description, "seed": seed},
    )


def require_classifier(kind: str, classifier: nn.Module | None) -> None:
    """A one-line error when purifier ``kind`` is trained against a classifier and none is given."""
    if PURIFIERS.get(kind).meta.get("needs_classifier") and classifier is None:
        raise ConfigError(f"the {kind} purifier is fine-tuned against a classifier; pass --model PATH")
