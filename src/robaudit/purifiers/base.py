"""The purifier contract, its registry, self-describing purifier checkpoints and the training cache.

A purifier is an ``nn.Module`` mapping images (N, C, H, W) in [0, 1] to images of the same shape in [0, 1]. It
declares ``randomized`` and ``differentiable``, draws all randomness from the ``torch.Generator`` it is given, and
never wraps its forward pass in ``no_grad``/``inference_mode``: adaptive attacks differentiate through it. The
generator may be a ``SampleRNG`` (one stream per sample): draw noise with ``randn_like`` so each row comes from its
sample's stream.

Each method registers a factory ``(network, *, **purification_hyperparameters) -> Purifier`` with metadata:
``recipe`` (the training hyperparameters, a dataclass), ``build`` (recipe, input shape -> untrained network) and
``train`` (network, train set, recipe, seed, device -> None).
"""

from __future__ import annotations

import abc
import functools
import hashlib
import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robaudit.components.registry import Registry
from robaudit.config import check_keys
from robaudit.data import ImageSet
from robaudit.fileio import atomic_write
from robaudit.rng.sample_rng import SampleRNG


@dataclass(frozen=True)
class PurifierEntry:
    """What a purifier method registers besides its factory: its training ``recipe`` (a dataclass), ``build`` (recipe,
    input shape -> untrained network), ``train`` (network, train set, *, recipe, seed, device[, classifier]; None:
    minimise ``network.loss`` with the recipe's epochs, batch size and lr), whether training needs the classifier
    (``needs_classifier``) and, for methods that can run on a pretrained diffusion model (from the hub, a folder or
    the user's own code: ``purifiers.sources``), ``from_diffusion`` (a ``DDPMNetwork`` -> this method's network) and
    ``tiny`` (the settings under which tests run it in seconds: ``recipe``, a tiny network; ``epochs``, training
    lengths other than ``epochs: 1``; ``params``, a short purification for unit tests; ``purification``, the same
    for end-to-end audits -- a new purifier brings its own, so the contract tests cover it with no other edit) and
    whether randomized smoothing can certify through it (``certifies``: a diffusion network's one-shot denoiser)."""

    recipe: type
    build: Callable[..., nn.Module]
    train: Callable[..., None] | None = None
    needs_classifier: bool = False
    from_diffusion: Callable[..., nn.Module] | None = None
    tiny: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    certifies: bool = False  # its network is a diffusion model: certification denoises through it in one shot


PURIFIERS: Registry = Registry("purifier", metadata=PurifierEntry)
FORMAT_VERSION = 1


class Purifier(nn.Module, abc.ABC):
    """Base class: (N, C, H, W) images in [0, 1] -> purified images in [0, 1].

    ``ensemble``: how many purified draws a defended prediction averages (softmax), e.g. ADP's K = 10.
    """

    randomized: bool = True
    differentiable: bool = True
    ensemble: int = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that still declares ``stochastic`` (the earlier name) declares ``randomized``, with a warning."""
        super().__init_subclass__(**kwargs)
        if "stochastic" in cls.__dict__ and "randomized" not in cls.__dict__:
            cls.randomized = bool(cls.__dict__["stochastic"])
            warnings.warn(
                f"{cls.__name__}.stochastic is the earlier name of randomized; declare randomized = {cls.randomized}",
                DeprecationWarning,
                stacklevel=2,
            )

    @abc.abstractmethod
    def forward(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Purify ``images``; all randomness comes from ``generator`` (a fixed default when None)."""

    def gradient_description(self) -> str:
        """What an adaptive attack differentiates through (stated in reports)."""
        return "the full purifier"

    @property
    def evaluated_network(self) -> nn.Module:
        """The module the purifier calls once per network evaluation: what robaudit counts as one purifier
        evaluation and what ``--compile`` compiles. The purifier itself unless a subclass declares its network."""
        return self

    @staticmethod
    def generator_for(images: torch.Tensor, generator: torch.Generator | None) -> torch.Generator:
        """``generator``, or a fixed-seed generator on the images' device (never the global RNG)."""
        if generator is not None:
            return generator
        return torch.Generator(device=images.device).manual_seed(0)


def randn_like(images: torch.Tensor, generator: torch.Generator | SampleRNG) -> torch.Tensor:
    """Standard normal noise shaped like ``images``, drawn from ``generator`` (on its device), moved to theirs.

    A ``SampleRNG`` (one stream per sample) draws each row from its sample's stream.
    """
    if isinstance(generator, SampleRNG):
        return generator.randn_like(images)
    noise = torch.randn(images.shape, generator=generator, device=generator.device, dtype=images.dtype)
    return noise.to(images.device)


def epochs_key(kind: str) -> str:
    """The recipe key ``--epochs`` sets for purifier ``kind``: the recipe's ``epochs_key`` (default "epochs")."""
    return getattr(PURIFIERS.get(kind).meta["recipe"], "epochs_key", "epochs")


def recipe_for(kind: str, values: dict[str, Any] | None) -> Any:
    """The training recipe dataclass of purifier ``kind`` filled from ``values`` (unknown keys are errors)."""
    recipe_cls = PURIFIERS.get(kind).meta["recipe"]
    values = dict(values or {})
    check_keys(values, [f.name for f in fields(recipe_cls)], where=f"{kind} recipe")
    return recipe_cls(**values)


def save_purifier_network(
    path: str | Path, *, kind: str, network: nn.Module, recipe: Any, input_size: list[int], training: dict
) -> Path:
    """Write a self-describing purifier checkpoint (weights-only loadable)."""
    payload = {
        "robaudit": "purifier",
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "recipe": asdict(recipe),
        "input_size": list(input_size),
        "training": training,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()},
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def train_purifier_network(
    kind: str, train_set: ImageSet, *, recipe: Any, seed: int, device: str, classifier: nn.Module | None = None
) -> nn.Module:
    """Build and train the network of purifier ``kind`` on ``train_set``."""
    from robaudit.purifiers.training import fit_recipe
    from robaudit.rng.seeding import derive_seed, isolated_global_rng

    entry = PURIFIERS.get(kind)
    train = entry.meta["train"] or functools.partial(fit_recipe, description=f"train {kind}")
    with isolated_global_rng(derive_seed(seed, kind, "init")):
        network = entry.meta["build"](recipe, list(train_set.shape))
    network.to(device)
    kwargs = {"classifier": classifier} if entry.meta["needs_classifier"] else {}
    train(network, train_set, recipe=recipe, seed=seed, device=device, **kwargs)
    return network.eval().cpu()


def purifier_cache_path(kind: str, *, data: str, recipe: Any, seed: int, extra: str = "") -> Path:
    """Cache path of a purifier trained with this kind, data, recipe and seed."""
    from robaudit.models.spec import cache_dir

    key = json.dumps([kind, data, asdict(recipe), seed, extra], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "purifiers" / f"{kind}-{Path(data).stem}-{digest}.pt"
