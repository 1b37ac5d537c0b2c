"""Purifier networks from the user's own code: published checkpoints that come with their own architecture and no
diffusers port (OpenAI's guided-diffusion U-Net, the Score SDE DDPM++/NCSN++ networks, ADP's score network).

A purifier config names the network: ``network: {factory: "package.module:function", kwargs: {...}, weights: PATH}``.
``factory`` is either ``module:function`` (importing it runs the user's code: it needs ``--trust-code``) or the name
of an entry point in the group ``robaudit.purifier_networks`` that an installed package provides. The factory
returns a ``DiffusionNetwork`` (or a mapping with the same keys): a noise predictor ``model(x, t)`` on images in
[-1, 1] and integer steps t, the ``betas`` it was trained with and the ``input_size`` it runs at. robaudit wraps it
in the same machinery as a diffusers model: its samplers, per-sample streams, gradient checkpointing, pass counting
at the network and the resolution bridge. ``weights`` load as safetensors or a weights-only pickle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file
from torch import nn

from robaudit.config import check_keys
from robaudit.errors import CheckpointError, ConfigError, first_line
from robaudit.fileio import sha256_file
from robaudit.models.fingerprint import weights_fingerprint
from robaudit.purifiers.checkpointing import CheckpointedEvaluation
from robaudit.purifiers.diffusion import DDPMNetwork
from robaudit.purifiers.sources import as_method_network

ENTRY_POINT_GROUP = "robaudit.purifier_networks"
NETWORK_KEYS = ["factory", "kwargs", "weights"]


@dataclass
class DiffusionNetwork:
    """What a factory returns: ``model(x (N, C, H, W) in [-1, 1], t (N,) long)`` predicting the noise (a tensor, an
    object with ``.sample``, or 2C channels of which the first C are the noise, as guided-diffusion's learned-sigma
    models give), the ``betas`` (T,) it was trained with and its ``input_size`` [C, H, W]."""

    model: nn.Module
    betas: Any
    input_size: list[int]


class FactoryNoisePredictor(CheckpointedEvaluation):
    """``eps(x, t)`` from a user's model, checkpointed when an attack differentiates through it and
    ``purifiers.checkpointing`` says the chain would not fit."""

    def __init__(self, model: nn.Module, *, channels: int) -> None:
        super().__init__()
        self.model = model
        self.channels = channels

    def evaluate(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) in [-1, 1], t: (N,) long -> the predicted noise (N, C, H, W)."""
        out = self.model(x, t)
        out = getattr(out, "sample", out)
        out = out[0] if isinstance(out, tuple | list) else out
        return out[:, : self.channels]


def resolve_factory(name: str, *, trust_code: bool) -> Callable[..., Any]:
    """The factory ``name`` names: ``module:function`` (needs ``trust_code``) or an installed entry point."""
    if ":" in name:
        if not trust_code:
            raise ConfigError(
                f"the purifier network factory {name!r} imports and runs your own Python code; pass --trust-code to "
                "allow it (or install it as a robaudit.purifier_networks entry point)"
            )
        module_name, _, attribute = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            problem = first_line(exc)
            raise ConfigError(f"cannot import the factory {name!r} ({problem}); check it is on PYTHONPATH") from None
    entry_points = {e.name: e for e in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if name not in entry_points:
        known = ", ".join(sorted(entry_points)) or "none installed"
        raise ConfigError(
            f"no purifier network {name!r} among the {ENTRY_POINT_GROUP} entry points ({known}); name a factory as "
            "package.module:function (with --trust-code)"
        )
    return entry_points[name].load()


def load_weights(model: nn.Module, path: str) -> str:
    """Load a state dict (safetensors, or a weights-only pickle; a ``state_dict`` key is unwrapped) into ``model``
    strictly; returns the file's sha256."""
    from robaudit.models.classifiers import load_checkpoint_payload

    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"purifier network weights {path!r} do not exist; pass an existing file")
    state = load_file(str(file)) if file.suffix == ".safetensors" else load_checkpoint_payload(file, trust=False)
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    try:
        model.load_state_dict(dict(state))
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"weights {path!r} do not fit the factory's network ({first_line(exc)})") from None
    return sha256_file(file)


def as_diffusion_network(result: Any, name: str) -> DiffusionNetwork:
    """A factory's result as a DiffusionNetwork (a mapping with its keys is accepted too)."""
    if isinstance(result, Mapping):
        check_keys(result, ["model", "betas", "input_size"], where=f"the result of factory {name!r}")
        result = DiffusionNetwork(**result)
    if not isinstance(result, DiffusionNetwork) or not isinstance(result.model, nn.Module):
        raise ConfigError(
            f"factory {name!r} must return robaudit.purifiers.factories.DiffusionNetwork(model, betas, input_size)"
        )
    return result


def network_from_factory(spec: Mapping[str, Any], *, kind: str, trust_code: bool) -> tuple[nn.Module, dict[str, Any]]:
    """(network for purifier ``kind``, card) from a config's ``network:`` mapping."""
    check_keys(spec, NETWORK_KEYS, where="purifier network")
    name = spec.get("factory")
    if not isinstance(name, str):
        raise ConfigError("purifier network: give factory: package.module:function (or an entry point's name)")
    built = as_diffusion_network(resolve_factory(name, trust_code=trust_code)(**dict(spec.get("kwargs") or {})), name)
    weights_sha = load_weights(built.model, spec["weights"]) if spec.get("weights") else None
    channels = int(built.input_size[0])
    betas = torch.as_tensor(built.betas, dtype=torch.float64).float()
    schedule = DDPMScheduler(num_train_timesteps=len(betas), trained_betas=betas.tolist())
    eps_model = FactoryNoisePredictor(built.model.eval(), channels=channels)
    diffusion = DDPMNetwork.from_eps_model(eps_model, schedule, [int(v) for v in built.input_size]).eval()
    card = {
        "kind": kind,
        "recipe": {},
        "input_size": list(diffusion.input_size),
        "training": {"pretrained": f"factory {name}"},
        "source": "factory",
        "ref": name,
        "factory": {"name": name, "kwargs": dict(spec.get("kwargs") or {}), "weights": spec.get("weights")},
        "resolution": f"{diffusion.input_size[1]}x{diffusion.input_size[2]}, {channels} channel(s)",
        "value_range": "[-1, 1] (the purifier maps [0, 1] images to 2x - 1 and back)",
        "parameters": diffusion.parameter_count(),
        "schedule": f"{len(betas)} steps, betas {float(betas[0]):.3g} .. {float(betas[-1]):.3g} (from the factory)",
        "sha256": weights_sha or weights_fingerprint(diffusion.state_dict()),
    }
    return as_method_network(diffusion, kind=kind), card
