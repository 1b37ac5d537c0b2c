"""From a config entry to a ready purifier: given checkpoint, cached one, or one trained now (and cached)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape
from torch import nn

from robaudit.config import ComponentSpec
from robaudit.data import load_dataset
from robaudit.data.transforms import EvalTransform
from robaudit.errors import ConfigError
from robaudit.fileio import sha256_file
from robaudit.frozen import frozen, thawed
from robaudit.progress import console
from robaudit.purifiers.base import (
    PURIFIERS,
    Purifier,
    purifier_cache_path,
    recipe_for,
    save_purifier_network,
    train_purifier_network,
)
from robaudit.purifiers.bridge import ResolutionBridge, bridged
from robaudit.purifiers.factories import network_from_factory
from robaudit.purifiers.sources import load_purifier_network, pretrained_network, split_purifier_source


@dataclass(frozen=True)
class ResolvedPurifier:
    """A purifier with every hyperparameter fixed, and where its network comes from."""

    name: str
    label: str
    params: Mapping[str, Any]  # read-only, as recipe and network
    checkpoint: str | None = None
    recipe: Mapping[str, Any] = field(default_factory=dict)
    eot: int | None = None  # EOT draws per gradient for this defense (None: the run's eot)
    network: Mapping[str, Any] | None = None  # the user's own network: {factory, kwargs, weights}
    graft: int = 0  # > 0: adaptive EOT gradients grafted through this many purifier draws (attacks.gradient)

    def __post_init__(self) -> None:
        for name in ("params", "recipe", "network"):
            object.__setattr__(self, name, frozen(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        """Plain form for configs and manifests."""
        out = {"name": self.name, "label": self.label, "params": thawed(self.params), "recipe": thawed(self.recipe)}
        if self.checkpoint:
            out["checkpoint"] = self.checkpoint
        if self.eot is not None:
            out["eot"] = self.eot
        if self.network is not None:
            out["network"] = thawed(self.network)
        if self.graft:
            out["graft"] = self.graft
        return out


def resolve_purifier(spec: ComponentSpec, *, label: str | None = None) -> ResolvedPurifier:
    """Fill in the factory's defaults (names, keys and types are checked where the config is parsed).

    Special keys: ``checkpoint`` (a trained purifier file, or ``hf-hub:``/``local-dir:`` for a pretrained diffusion
    model), ``network`` (the user's own network: ``{factory, kwargs, weights}``), ``recipe`` (training
    hyperparameters) and ``eot`` (EOT draws per gradient against this defense, overriding the run's ``eot``; e.g. 1
    for a purifier whose prediction ensemble already averages many draws inside every forward pass).
    """
    entry = PURIFIERS.get(spec.name)
    params = thawed(spec.params)
    checkpoint = params.pop("checkpoint", None)
    network = params.pop("network", None)
    recipe = params.pop("recipe", None) or {}
    eot = params.pop("eot", None)
    if eot is not None and (not isinstance(eot, int) or isinstance(eot, bool) or eot <= 0):
        raise ConfigError(f"purifier {spec.name!r}: eot must be a positive integer, got {eot!r}")
    graft = params.pop("graft", 0)
    if not isinstance(graft, int) or isinstance(graft, bool) or graft < 0:
        raise ConfigError(f"purifier {spec.name!r}: graft must be 0 (full EOT gradients) or the draws to graft through")
    if network is not None and (checkpoint is not None or not isinstance(network, dict)):
        raise ConfigError(
            f"purifier {spec.name!r}: network must be a mapping {{factory, kwargs, weights}}, without a checkpoint"
        )
    hyper = entry.hyperparameters()  # keys and types checked where the config was parsed
    recipe_values = asdict(recipe_for(spec.name, recipe))
    full = {k: p.default for k, p in hyper.items() if p.default is not inspect.Parameter.empty}
    full.update(params)
    return ResolvedPurifier(spec.name, label or spec.name, full, checkpoint, recipe_values, eot, network, graft)


@dataclass(frozen=True, eq=False)
class PurifierContext:
    """What obtaining a purifier needs besides its resolved spec, built once per run: the data a missing one trains
    on (``data_source``'s train split at ``image_size`` and ``channels``, read through a pretrained classifier's
    evaluation ``transform`` when given), the seed and device, the ``classifier`` it defends (``mae`` trains against
    it; its ``classifier_sha256`` keys the cache), the trust flags, and the classifier's ``input_shape`` (C, H, W: a
    purifier at another resolution runs inside a ``ResolutionBridge``)."""

    data_source: str
    seed: int
    device: str
    image_size: int | None = None
    channels: int | None = None
    classifier: nn.Module | None = None
    classifier_sha256: str = ""
    trust_checkpoint: bool = False
    trust_code: bool = False
    transform: EvalTransform | None = None
    input_shape: tuple[int, ...] | None = None


def obtain_purifier(resolved: ResolvedPurifier, context: PurifierContext) -> tuple[Purifier, dict[str, Any]]:
    """The purifier ``resolved`` describes, and its provenance (checkpoint, sha256, source and card): from the user's
    factory, a pretrained diffusion model (``hf-hub:``, ``local-dir:``), a checkpoint file, or trained as
    ``context`` says and cached; bridged to the classifier's input shape when the context gives one."""
    trust = context.trust_checkpoint
    if resolved.network is not None:
        network, card = network_from_factory(resolved.network, kind=resolved.name, trust_code=context.trust_code)
        provenance = {"checkpoint": f"factory {resolved.network['factory']}", **card}
    elif resolved.checkpoint and split_purifier_source(resolved.checkpoint):
        network, card = pretrained_network(resolved.checkpoint, kind=resolved.name, trust=trust)
        provenance = {"checkpoint": resolved.checkpoint, **card}
    else:
        path = resolved_checkpoint_path(resolved, context)
        kind, network, card = load_purifier_network(path, kind=resolved.name, trust_checkpoint=trust)
        if kind != resolved.name:
            raise ConfigError(f"checkpoint {str(path)!r} holds a {kind!r} purifier, not {resolved.name!r}")
        sha = sha256_file(path) if path.is_file() else card.get("sha256", "")
        provenance = {"source": "file", **card, "checkpoint": str(path), "sha256": sha}
    purifier = PURIFIERS.build(resolved.name, resolved.params, network)
    if context.input_shape is not None:
        purifier = bridged(purifier, purifier_shape=card["input_size"], input_shape=tuple(context.input_shape))
    describe = getattr(purifier, "process_description", None)
    provenance["process"] = describe() if describe else ""
    if isinstance(purifier, ResolutionBridge):
        provenance["bridge"] = purifier.description()
    return purifier.eval(), provenance


def resolved_checkpoint_path(resolved: ResolvedPurifier, context: PurifierContext) -> Path:
    """The purifier's checkpoint: the one given, or the cached one trained now (keyed by kind, data, recipe, seed,
    size and transform); robaudit says when it trains or reuses one."""
    if resolved.checkpoint:
        return Path(resolved.checkpoint)
    require_classifier(resolved.name, context.classifier)  # before any work, not after minutes of training
    recipe = recipe_for(resolved.name, resolved.recipe)
    extra = context.classifier_sha256 if PURIFIERS.get(resolved.name).meta.get("needs_classifier") else ""
    if context.transform is not None:
        extra = f"{extra}/{context.transform.description()}"
    data_source, image_size, channels = context.data_source, context.image_size, context.channels
    path = purifier_cache_path(
        resolved.name, data=data_source, recipe=recipe, seed=context.seed, extra=f"{image_size}/{channels}/{extra}"
    )
    if path.exists():
        console.print(f"reusing cached {escape(resolved.name)} purifier {escape(str(path))}")
        return path
    console.print(f"no {resolved.name} purifier given: training one on {data_source} (train split), cached at {path}")
    return train_purifier_file(
        resolved.name,
        data=data_source,
        out=path,
        recipe=resolved.recipe,
        seed=context.seed,
        device=context.device,
        image_size=image_size,
        channels=channels,
        classifier=context.classifier,
        transform=context.transform,
    )


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
