"""Classifiers: the normalizing wrapper, self-describing checkpoints (cards), safe loading.

A robaudit checkpoint (``.pt``) is a dict of plain values and tensors, loadable with
``torch.load(weights_only=True)``::

    {"robaudit": "classifier", "format_version": 1, "card": {...ModelCard...}, "state_dict": {...}}

A ``.safetensors`` checkpoint holds the state dict with the card as JSON under the ``robaudit_card`` metadata key.
Plain timm state dicts (with ``arch=``) and TorchScript files load too. Pickled modules are refused unless the
user passes ``--trust-checkpoint``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from rich.markup import escape
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from robaudit.errors import TRUST_HINT, CheckpointError, first_line
from robaudit.fileio import atomic_write
from robaudit.models import architectures  # noqa: F401 - registers robaudit's own timm models
from robaudit.models.card import ModelCard
from robaudit.models.references import missing_checkpoint

__all__ = ["ModelCard", "NormalizedClassifier", "load_classifier", "save_classifier"]

FORMAT_VERSION = 1


class NormalizedClassifier(nn.Module):
    """Maps images in [0, 1] (N, C, H, W) to logits (N, num_classes); normalization happens inside.

    The buffers are named ``norm_mean``/``norm_std`` on purpose: torchattacks reads attributes called
    ``mean``/``std`` and would normalize a second time.
    """

    def __init__(self, net: nn.Module, *, card: ModelCard) -> None:
        super().__init__()
        self.net = net
        self.card = card
        channels = len(card.mean)
        self.register_buffer("norm_mean", torch.tensor(card.mean, dtype=torch.float32).view(1, channels, 1, 1))
        self.register_buffer("norm_std", torch.tensor(card.std, dtype=torch.float32).view(1, channels, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, C, H, W) in [0, 1] -> logits (N, num_classes)."""
        return self.net((images - self.norm_mean) / self.norm_std)


def build_network(card: ModelCard) -> nn.Module:
    """Instantiate the (untrained) timm network a card describes."""
    try:
        return timm.create_model(card.arch, pretrained=False, num_classes=card.num_classes, **card.arch_kwargs)
    except RuntimeError as exc:  # timm: unknown model
        raise CheckpointError(f"cannot build architecture {card.arch!r} ({exc}); use a timm model name") from None
    except TypeError as exc:
        raise CheckpointError(f"architecture {card.arch!r} rejects its arguments ({exc})") from None


def create_classifier(card: ModelCard) -> NormalizedClassifier:
    """A freshly initialised classifier for ``card``."""
    return NormalizedClassifier(build_network(card), card=card)


def save_classifier(model: NormalizedClassifier, path: str | Path) -> Path:
    """Write a self-describing checkpoint (``.safetensors`` by suffix, else a weights-only ``.pt``), atomically."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    card = asdict(model.card)
    if path.suffix == ".safetensors":
        metadata = {"robaudit_card": json.dumps(card), "format_version": str(FORMAT_VERSION)}
        return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    payload = {"robaudit": "classifier", "format_version": FORMAT_VERSION, "card": card, "state_dict": state}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint_payload(path: Path, *, trust: bool = False) -> Any:
    """The object stored in a torch checkpoint: ``weights_only`` unpickling unless ``trust`` (runs code!)."""
    if not trust:
        return _load_weights_only(path)
    from robaudit.progress import console

    console.print(
        f"[yellow]warning:[/yellow] --trust-checkpoint: fully unpickling {escape(str(path))} (this can run code)"
    )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any failure of arbitrary unpickling is the file's fault
        raise CheckpointError(f"checkpoint {str(path)!r} is unreadable ({first_line(exc)})") from None


def _load_weights_only(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle_errors() as exc:
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise CheckpointError(
                f"checkpoint {str(path)!r} contains pickled Python objects (such as a whole nn.Module): {TRUST_HINT}"
            ) from None
        raise CheckpointError(
            f"checkpoint {str(path)!r} is unreadable ({first_line(exc)}); re-create or re-download it"
        ) from None


def pickle_errors() -> tuple[type[BaseException], ...]:
    """Exceptions torch.load raises on refused or corrupt pickles."""
    import pickle

    return (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError, KeyError)


def load_classifier(
    path: str | Path,
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    input_size: list[int] | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    trust_checkpoint: bool = False,
) -> NormalizedClassifier | nn.Module:
    """Load a classifier without executing code from the file.

    Accepts a robaudit checkpoint (``.pt`` or ``.safetensors``), a plain state dict of a timm architecture
    (``arch=`` required, with ``arch_kwargs`` where it is not the architecture's default; classes inferred from the
    head; ``mean``/``std`` its normalization), a TorchScript file or a ``torch.export`` program (``.pt2``). Returns a
    model in eval mode carrying a ``card`` whose ``origin`` says where it came from. A whole pickled ``nn.Module``
    (which must take images in [0, 1]) loads only with ``trust_checkpoint=True``, because unpickling it runs code
    from the file.
    """
    from robaudit.models import programs

    path = Path(path)
    if not path.is_file():
        raise missing_checkpoint(path)
    described = {"num_classes": num_classes, "class_names": class_names}
    if programs.is_torchscript(path):
        return programs.load_torchscript(path, **described, input_size=input_size)
    if programs.is_exported_program(path):
        return programs.load_exported_program(path, **described, trust=trust_checkpoint)
    if path.suffix == ".safetensors":
        card, state = _read_safetensors(path, arch=arch)
    else:
        payload = load_checkpoint_payload(path, trust=trust_checkpoint)
        if isinstance(payload, nn.Module):
            return programs.wrap_pickled_module(payload, path=path, **described, input_size=input_size)
        card, state = _read_payload(payload, path, arch=arch)
    if card is None:
        hints = StateDictHints(arch, arch_kwargs or {}, num_classes, class_names, input_size, mean, std)
        card = card_for_state_dict(state, hints, path=path)
    else:
        card = checkpoint_card(card, path)
    model = create_classifier(card)
    try:
        model.net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit {card.arch!r}: {first_line(exc)}") from None
    return model.eval()


def training_data_source(path: str | Path) -> str | None:
    """The data source a robaudit checkpoint was trained on (``card.training["data_source"]``), read without
    building the model and without running code from the file; None for any other file or an older checkpoint."""
    path = Path(path)
    if not path.is_file() or path.suffix not in (".pt", ".pth", ".safetensors"):
        return None
    try:
        card, _ = _read_safetensors(path, arch="-") if path.suffix == ".safetensors" else _read_card_payload(path)
    except CheckpointError:
        return None
    return card.training.get("data_source") if card is not None else None


def _read_card_payload(path: Path) -> tuple[ModelCard | None, dict]:
    return _read_payload(_load_weights_only(path), path, arch="-")


def checkpoint_card(card: ModelCard, path: Path) -> ModelCard:
    """A robaudit checkpoint's card with an origin naming this file (an earlier origin kept as ``saved_from``)."""
    origin = {"source": "robaudit checkpoint", "ref": str(path), "num_classes": "checkpoint card"}
    origin["normalization"] = "checkpoint card"
    if card.origin:
        origin["saved_from"] = card.origin
    card.origin = origin
    return card


def _read_safetensors(path: Path, *, arch: str | None) -> tuple[ModelCard | None, dict[str, torch.Tensor]]:
    """(card or None, state dict) of a safetensors checkpoint; a card-less one needs ``arch``."""
    try:
        state = load_file(str(path))
        with open(path, "rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a readable safetensors file ({exc})") from None
    card_json = header.get("__metadata__", {}).get("robaudit_card")
    if card_json is None and arch is None:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no robaudit card; pass --arch with the timm architecture name"
        )
    return (ModelCard.from_dict(json.loads(card_json)) if card_json else None), state


def _read_payload(payload: Any, path: Path, *, arch: str | None) -> tuple[ModelCard | None, dict[str, torch.Tensor]]:
    """(card or None, state dict) of a loaded ``.pt`` payload: a robaudit checkpoint or a bare state dict."""
    if isinstance(payload, dict) and payload.get("robaudit") == "classifier":
        if payload.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {str(path)!r} has format version {payload.get('format_version')!r}; "
                f"this robaudit reads version {FORMAT_VERSION}"
            )
        return ModelCard.from_dict(payload["card"]), payload["state_dict"]
    if isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
        if arch is None:
            raise CheckpointError(
                f"checkpoint {str(path)!r} is a bare state dict; pass --arch with its timm architecture name"
            )
        return None, payload
    raise CheckpointError(f"checkpoint {str(path)!r} is neither a robaudit checkpoint nor a state dict; re-save it")


@dataclass(frozen=True)
class StateDictHints:
    """What the user said about a bare state dict: its timm architecture and arguments, classes, input size and
    normalization (None: read from the weights, or none)."""

    arch: str | None
    arch_kwargs: dict[str, Any]
    num_classes: int | None
    class_names: list[str] | None
    input_size: list[int] | None
    mean: list[float] | None
    std: list[float] | None


HEAD_SUFFIXES = ("head.weight", "fc.weight", "classifier.weight")


def card_for_state_dict(state: dict[str, torch.Tensor], hints: StateDictHints, *, path: Path) -> ModelCard:
    """A card for a bare timm state dict: classes from the head, channels (and a ViT's image size) from shapes,
    the user's architecture arguments over those."""
    num_classes, counted = hints.num_classes, "given (--num-classes)"
    if num_classes is None:
        heads = [k for k in state if k.endswith(HEAD_SUFFIXES)]
        if not heads:
            raise CheckpointError("cannot infer the number of classes from the state dict; pass --num-classes")
        num_classes, counted = int(state[heads[-1]].shape[0]), f"state dict head {heads[-1]!r}"
    convs = [v for v in state.values() if v.ndim == 4]
    channels = int(convs[0].shape[1]) if convs else 3
    kwargs: dict[str, Any] = {"in_chans": channels}
    input_size = hints.input_size
    if "pos_embed" in state and "patch_embed.proj.weight" in state:
        patch = int(state["patch_embed.proj.weight"].shape[-1])
        tokens = int(state["pos_embed"].shape[1]) - (1 if "cls_token" in state else 0)
        grid = math.isqrt(tokens)
        kwargs.update(img_size=grid * patch, patch_size=patch)
        input_size = input_size or [channels, grid * patch, grid * patch]
    kwargs.update(hints.arch_kwargs)
    normalized = hints.mean is not None or hints.std is not None
    return ModelCard(
        arch=hints.arch,
        arch_kwargs=kwargs,
        num_classes=num_classes,
        class_names=list(hints.class_names or [str(i) for i in range(num_classes)]),
        input_size=list(input_size or []),  # empty: not checked against the data
        mean=list(hints.mean or [0.0] * channels),
        std=list(hints.std or [1.0] * channels),
        origin={
            "source": "state dict",
            "ref": str(path),
            "num_classes": counted,
            "normalization": "given (model mean/std)"
            if normalized
            else "none given: identity (set model mean/std when the network expects normalized images)",
        },
    )
