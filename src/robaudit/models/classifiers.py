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
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from robaudit.errors import CheckpointError, first_line
from robaudit.fileio import atomic_write

FORMAT_VERSION = 1


@dataclass
class ModelCard:
    """Everything needed to rebuild and use a classifier: `--model vit.pt` must be enough."""

    arch: str
    arch_kwargs: dict[str, Any]
    num_classes: int
    class_names: list[str]
    input_size: list[int]  # [C, H, W]; empty when unknown (TorchScript without --input-size)
    mean: list[float]
    std: list[float]
    kind: str = "timm"  # "timm" (rebuilt with timm.create_model) or "torchscript"
    training: dict[str, Any] = field(default_factory=dict)
    # the model's evaluation transform (timm's data config without mean/std: input_size, interpolation, crop_pct,
    # crop_mode), applied to data at another resolution before attacks; empty: images must already fit
    preprocess: dict[str, Any] = field(default_factory=dict)
    # where the model came from (source, reference, weights) and how parts of the card were found
    origin: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Build a card from its dict form; a CheckpointError names a missing field."""
        try:
            return cls(**data)
        except TypeError as exc:
            raise CheckpointError(f"checkpoint card is malformed ({exc}); re-save the checkpoint") from None


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


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


TRUST_HINT = (
    "unpickling can run arbitrary code, so robaudit refuses it. Re-save the weights as a state dict, a robaudit "
    "checkpoint or safetensors, or pass --trust-checkpoint if you trust whoever made this file"
)


def load_checkpoint_payload(path: Path, *, trust: bool = False) -> Any:
    """The object stored in a torch checkpoint: ``weights_only`` unpickling unless ``trust`` (runs code!)."""
    if not trust:
        return _load_weights_only(path)
    from robaudit.progress import console

    console.print(f"[yellow]warning:[/yellow] --trust-checkpoint: fully unpickling {path} (this can run code)")
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
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    input_size: list[int] | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    trust_checkpoint: bool = False,
) -> NormalizedClassifier | nn.Module:
    """Load a classifier without executing code from the file.

    Accepts a robaudit checkpoint (``.pt`` or ``.safetensors``), a plain state dict of a timm architecture
    (``arch=`` required; classes inferred from the head), or a TorchScript file. Returns a model in eval mode
    carrying a ``card``. A whole pickled ``nn.Module`` (which must take images in [0, 1]) loads only with
    ``trust_checkpoint=True``, because unpickling it runs code from the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model checkpoint {str(path)!r} does not exist; pass an existing file to --model")
    if path.suffix == ".safetensors":
        card, state = _read_safetensors(path, arch=arch)
    elif _is_torchscript(path):
        return _load_torchscript(path, num_classes, class_names, input_size, mean, std)
    else:
        payload = load_checkpoint_payload(path, trust=trust_checkpoint)
        if isinstance(payload, nn.Module):
            return _wrap_module(payload, path, num_classes, class_names, input_size)
        card, state = _read_payload(payload, path, arch=arch)
    if card is None:
        card = _card_for_state_dict(state, arch, num_classes, class_names, input_size, mean, std)
    model = create_classifier(card)
    try:
        model.net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit {card.arch!r}: {first_line(exc)}") from None
    return model.eval()


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


def _card_for_state_dict(state, arch, num_classes, class_names, input_size, mean, std) -> ModelCard:
    """A card for a bare timm state dict: classes from the head, channels (and a ViT's image size) from shapes."""
    if num_classes is None:
        heads = [v for k, v in state.items() if k.endswith(("head.weight", "fc.weight", "classifier.weight"))]
        if not heads:
            raise CheckpointError("cannot infer the number of classes from the state dict; pass --num-classes")
        num_classes = int(heads[-1].shape[0])
    convs = [v for v in state.values() if v.ndim == 4]
    channels = int(convs[0].shape[1]) if convs else 3
    kwargs: dict[str, Any] = {"in_chans": channels}
    if "pos_embed" in state and "patch_embed.proj.weight" in state:
        patch = int(state["patch_embed.proj.weight"].shape[-1])
        tokens = int(state["pos_embed"].shape[1]) - (1 if "cls_token" in state else 0)
        grid = math.isqrt(tokens)
        kwargs.update(img_size=grid * patch, patch_size=patch)
        input_size = input_size or [channels, grid * patch, grid * patch]
    return ModelCard(
        arch=arch,
        arch_kwargs=kwargs,
        num_classes=num_classes,
        class_names=list(class_names or [str(i) for i in range(num_classes)]),
        input_size=list(input_size or []),  # empty: not checked against the data
        mean=list(mean or [0.0] * channels),
        std=list(std or [1.0] * channels),
    )


class _CardlessClassifier(nn.Module):
    """Wraps a module that takes [0, 1] images and normalizes itself (TorchScript, trusted pickle) with a card."""

    def __init__(self, net: nn.Module, card: ModelCard) -> None:
        super().__init__()
        self.net = net
        self.card = card

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, C, H, W) in [0, 1] -> logits (N, num_classes)."""
        return self.net(images)


def _cardless_card(kind, path, num_classes, class_names, input_size) -> ModelCard:
    """A card for a module that carries none; an unknown class count stays 0 until ``compat.settle_class_count``
    reads it from one forward pass on the data."""
    num_classes = num_classes or len(class_names or [])
    return ModelCard(
        arch=kind,
        arch_kwargs={},
        num_classes=num_classes,
        class_names=list(class_names or [str(i) for i in range(num_classes)]),
        input_size=list(input_size or []),  # empty: unknown, not checked against the data
        mean=[],
        std=[],
        kind=kind,
        origin={"num_classes": "given" if num_classes else "unknown"},
    )


def _wrap_module(module: nn.Module, path, num_classes, class_names, input_size) -> nn.Module:
    """A trusted, fully pickled module: a robaudit classifier keeps its card; any other module gets one."""
    card = getattr(module, "card", None)
    if isinstance(card, ModelCard):
        return module.float().eval()
    num_classes = num_classes or getattr(module, "num_classes", None)
    card = _cardless_card("pickled-module", path, num_classes, class_names, input_size)
    return _CardlessClassifier(module.float(), card).eval()


def _load_torchscript(path, num_classes, class_names, input_size, mean, std) -> nn.Module:
    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise CheckpointError(f"TorchScript file {str(path)!r} is unreadable ({exc})") from None
    card = _cardless_card("torchscript", path, num_classes, class_names, input_size)
    return _CardlessClassifier(scripted, card).eval()
