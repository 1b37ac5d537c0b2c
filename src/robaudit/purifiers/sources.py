"""Where a purifier's network comes from, with the grammar of classifiers: ``hf-hub:ORG/NAME[@REV]`` (a diffusers
repository through the Hugging Face cache; offline with ``HF_HUB_OFFLINE``), ``local-dir:PATH`` (a diffusers
``save_pretrained`` folder), a robaudit purifier checkpoint file, or ``network: {factory: ...}`` (the user's own code:
``purifiers.factories``).

A pretrained diffusion model is loaded through diffusers' own ``from_pretrained`` (safetensors only unless the user
trusts pickles); its scheduler config gives the noise schedule; the purifier method turns it into its own network
(``PurifierEntry.from_diffusion``: DiffPure's DDPM as it is, ADP's score at a noise level). The card comes from the
model: resolution, channels, value range, parameter count, schedule and a fingerprint of its weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from robaudit.components.plugins import load_plugins
from robaudit.components.registry import Registry
from robaudit.errors import CheckpointError, ConfigError
from robaudit.hub import snapshot
from robaudit.models.fingerprint import weights_fingerprint
from robaudit.purifiers.base import FORMAT_VERSION, PURIFIERS, recipe_for
from robaudit.purifiers.diffusion import DDPMNetwork


@dataclass(frozen=True)
class PurifierSourceMeta:
    """A purifier source's usage example (``robaudit ls purifiers``)."""

    example: str


PURIFIER_SOURCES: Registry = Registry("purifier source", metadata=PurifierSourceMeta)


@PURIFIER_SOURCES.register(
    "local-dir",
    description="a diffusers model folder (save_pretrained: UNet2DModel + scheduler config, safetensors)",
    example="--purifier ddpm --purifier-checkpoint local-dir:models/ddpm-cifar10-32",
)
def local_dir(ref: str, *, trust: bool) -> DDPMNetwork:
    """``DDPMNetwork.from_pretrained`` on a folder."""
    folder = Path(ref)
    if not folder.is_dir():
        raise CheckpointError(f"purifier folder {ref!r} does not exist; pass a diffusers save_pretrained folder")
    return DDPMNetwork.from_pretrained(folder, trust=trust)


@PURIFIER_SOURCES.register(
    "hf-hub",
    description="a diffusers repository through the Hugging Face cache (HF_HUB_OFFLINE honoured)",
    example="--purifier ddpm --purifier-checkpoint hf-hub:google/ddpm-cifar10-32",
)
def hf_hub(ref: str, *, trust: bool) -> DDPMNetwork:
    """The repository's cached snapshot (configs and safetensors; ``.bin`` weights too when trusted)."""
    repo, _, revision = ref.partition("@")
    patterns = ["*.json", "*/*.json", "*.safetensors", "*/*.safetensors"] + (["*.bin", "*/*.bin"] if trust else [])
    folder = snapshot(repo, revision=revision or None, allow_patterns=patterns)
    return DDPMNetwork.from_pretrained(folder, trust=trust)


def split_purifier_source(reference: str) -> tuple[str, str] | None:
    """(source, reference) of ``source:reference`` text naming a purifier source; None for a plain path."""
    source, sep, ref = reference.partition(":")
    return (source, ref) if sep and source in PURIFIER_SOURCES else None


def pretrained_network(reference: str, *, kind: str, trust: bool) -> tuple[nn.Module, dict[str, Any]]:
    """(network for purifier ``kind``, card) from a pretrained diffusion model (``hf-hub:`` or ``local-dir:``)."""
    source, ref = split_purifier_source(reference) or ("local-dir", reference)
    diffusion = PURIFIER_SOURCES.get(source).factory(ref, trust=trust)
    return as_method_network(diffusion, kind=kind), diffusion_card(diffusion, kind=kind, source=source, ref=ref)


def as_method_network(diffusion: DDPMNetwork, *, kind: str) -> nn.Module:
    """Purifier ``kind``'s network on a pretrained diffusion model, or a one-line error when it has no such form."""
    from_diffusion = PURIFIERS.get(kind).meta["from_diffusion"]
    if from_diffusion is None:
        users = ", ".join(e.name for e in PURIFIERS if e.meta["from_diffusion"] is not None)
        raise ConfigError(
            f"the {kind} purifier does not run on a pretrained diffusion model (those that do: {users}); give a "
            f"robaudit {kind} checkpoint (robaudit train {kind}) or none to train one"
        )
    return from_diffusion(diffusion).eval()


def diffusion_card(diffusion: DDPMNetwork, *, kind: str, source: str, ref: str) -> dict[str, Any]:
    """What the report states about a pretrained diffusion model: where it came from and what it is."""
    channels, height, width = diffusion.input_size
    schedule = getattr(diffusion, "schedule_config", {})
    betas = diffusion.betas
    return {
        "kind": kind,
        "recipe": {},
        "input_size": list(diffusion.input_size),
        "training": {"pretrained": f"{source}:{ref}"},
        "source": source,
        "ref": ref,
        "resolution": f"{height}x{width}, {channels} channel(s)",
        "value_range": "[-1, 1] (the purifier maps [0, 1] images to 2x - 1 and back)",
        "parameters": diffusion.parameter_count(),
        "schedule": f"{len(betas)} steps, {schedule.get('beta_schedule', 'given')} betas "
        f"{float(betas[0]):.3g} .. {float(betas[-1]):.3g}",
        "sha256": weights_fingerprint(diffusion.state_dict()),
    }


def load_purifier_network(
    path: str | Path, *, kind: str = "ddpm", trust_checkpoint: bool = False
) -> tuple[str, nn.Module, dict[str, Any]]:
    """(kind, network in eval mode, card) from a purifier checkpoint file, or from a diffusers folder run as purifier
    ``kind``; no code in the file runs unless trusted."""
    from robaudit.models.classifiers import load_checkpoint_payload

    path = Path(path)
    if path.is_dir():
        network, card = pretrained_network(f"local-dir:{path}", kind=kind, trust=trust_checkpoint)
        return kind, network, card
    if not path.is_file():
        raise CheckpointError(f"purifier checkpoint {str(path)!r} does not exist; pass an existing file")
    payload = load_checkpoint_payload(path, trust=trust_checkpoint)
    if not isinstance(payload, dict) or payload.get("robaudit") != "purifier":
        raise CheckpointError(f"{str(path)!r} is not a robaudit purifier checkpoint; train one with robaudit train")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"purifier checkpoint {str(path)!r} has an unsupported format version")
    kind = payload["kind"]
    recipe = recipe_for(kind, payload["recipe"])
    network = PURIFIERS.get(kind).meta["build"](recipe, payload["input_size"])
    try:
        network.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"purifier checkpoint {str(path)!r} does not fit its recipe: {exc}") from None
    card = {k: payload[k] for k in ("kind", "recipe", "input_size", "training")}
    return kind, network.eval(), card


load_plugins("robaudit.purifier_sources")  # installed packages add purifier sources (robaudit.components.plugins)
