"""Models that carry no card and take [0, 1] images: TorchScript files (scripted or traced), ``torch.export``
programs (``.pt2``) and, with ``--trust-checkpoint``, whole pickled modules.

They normalize themselves, so robaudit wraps them without a Normalize step; their class count comes from
``--num-classes`` or from one forward pass on the data (``model_data.settle_class_count``).

A ``torch.export`` program loads with ``torch.export.load`` under weights-only unpickling: the archive's own
serialization is data, but ``torch.export.load`` falls back to full unpickling for tensor subclasses, custom
objects and sample inputs it cannot read otherwise, and robaudit refuses that unless the user trusts the file.
"""

from __future__ import annotations

import contextlib
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from rich.markup import escape
from torch import nn

from robaudit.errors import TRUST_HINT, CheckpointError, first_line
from robaudit.models.card import ModelCard


class CardlessClassifier(nn.Module):
    """Wraps a module that takes [0, 1] images and normalizes itself (TorchScript, torch.export, trusted pickle)
    with a card."""

    def __init__(self, net: nn.Module, card: ModelCard) -> None:
        super().__init__()
        self.net = net
        self.card = card

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, C, H, W) in [0, 1] -> logits (N, num_classes)."""
        return self.net(images)


def cardless_card(
    kind: str,
    source: str,
    *,
    path: Path,
    num_classes: int | None,
    class_names: list[str] | None,
    input_size: list[int] | None,
    origin: dict[str, Any] | None = None,
) -> ModelCard:
    """A card for a module that carries none; an unknown class count stays 0 until ``model_data.settle_class_count``
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
        origin={
            "source": source,
            "ref": str(path),
            "num_classes": "given (--num-classes)" if num_classes else "unknown",
            "normalization": "inside the model (it takes [0, 1] images)",
            **(origin or {}),
        },
    )


def is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (``torch.jit.save``)."""
    names = _archive_names(path)
    return any(name.endswith("constants.pkl") or "/code/" in name for name in names)


def is_exported_program(path: Path) -> bool:
    """True for a ``torch.export.save`` archive (a zip whose ``archive_format`` says pt2)."""
    return any(name.endswith("archive_format") for name in _archive_names(path)) and not is_torchscript(path)


def _archive_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def load_torchscript(
    path: Path, *, num_classes: int | None, class_names: list[str] | None, input_size: list[int] | None
) -> CardlessClassifier:
    """A TorchScript file (scripted or traced) wrapped with a card."""
    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise CheckpointError(f"TorchScript file {str(path)!r} is unreadable ({first_line(exc)})") from None
    card = cardless_card(
        "torchscript", "TorchScript", path=path, num_classes=num_classes, class_names=class_names, input_size=input_size
    )
    return CardlessClassifier(scripted, card).eval()


def wrap_pickled_module(
    module: nn.Module,
    *,
    path: Path,
    num_classes: int | None,
    class_names: list[str] | None,
    input_size: list[int] | None,
) -> nn.Module:
    """A trusted, fully pickled module: a robaudit classifier keeps its card; any other module gets one."""
    if isinstance(getattr(module, "card", None), ModelCard):
        return module.float().eval()
    num_classes = num_classes or getattr(module, "num_classes", None)
    card = cardless_card(
        "pickled-module",
        "pickled module",
        path=path,
        num_classes=num_classes,
        class_names=class_names,
        input_size=input_size,
    )
    return CardlessClassifier(module.float(), card).eval()


class ExportedNetwork(nn.Module):
    """The module of a ``torch.export`` program: (N, C, H, W) images in [0, 1] -> logits (N, classes).

    A program exported with a static batch size B is called on chunks of B (the last one padded with copies of its
    last image, whose outputs are dropped), so any batch size works. ``train()``/``eval()`` leave the program alone:
    its mode was fixed when it was exported (and exported modules refuse both).
    """

    def __init__(self, program: torch.export.ExportedProgram, *, batch: int | None) -> None:
        super().__init__()
        self.program_module = program.module()
        self.batch = batch
        for module in self.program_module.modules():
            module.training = False  # the flag only: exported modules refuse eval(), their mode is in the graph

    def train(self, mode: bool = True) -> ExportedNetwork:
        self.training = mode
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, C, H, W) -> logits (N, classes), in chunks of the program's static batch size if it has one."""
        if self.batch is None:
            return self.program_module(images)
        outputs = []
        for start in range(0, len(images), self.batch):
            chunk = images[start : start + self.batch]
            kept = len(chunk)
            if kept < self.batch:
                chunk = torch.cat([chunk, chunk[-1:].expand(self.batch - kept, *chunk.shape[1:])])
            outputs.append(self.program_module(chunk)[:kept])
        return torch.cat(outputs)


def load_exported_program(
    path: Path, *, num_classes: int | None, class_names: list[str] | None, trust: bool
) -> CardlessClassifier:
    """A ``torch.export`` program (``.pt2``) wrapped with a card: input size and static batch size from its input
    spec, gradients checked on its own example input. Loading runs no pickled code unless ``trust``."""
    if any("aotinductor" in name for name in _archive_names(path)):
        raise CheckpointError(
            f"{str(path)!r} is an AOTInductor package (compiled for inference, no gradients for attacks); save the "
            "model with torch.export.save(torch.export.export(model.eval(), (images,)), 'model.pt2') instead"
        )
    program = _read_program(path, trust=trust)
    shape = _input_shape(program, path)
    training_ops = _training_batch_norms(program)
    if training_ops:
        raise CheckpointError(
            f"the program in {str(path)!r} was exported in training mode ({training_ops} BatchNorm layer(s) use the "
            "batch's statistics, so a prediction depends on its batch); export model.eval() instead"
        )
    batch = shape[0] if isinstance(shape[0], int) else None
    static = [int(d) for d in shape[1:]] if all(isinstance(d, int) for d in shape[1:]) else None
    try:
        network = ExportedNetwork(program, batch=batch)
    except Exception as exc:  # noqa: BLE001 - a malformed foreign program is the file's fault
        raise CheckpointError(
            f"torch.export program {str(path)!r} is malformed ({first_line(exc)}); re-export it"
        ) from None
    check_gradients(network, program, path)
    origin = {"batch": f"static batch of {batch}: called in chunks of {batch}" if batch else "dynamic batch"}
    card = cardless_card(
        "torch-export",
        "torch.export",
        path=path,
        num_classes=num_classes,
        class_names=class_names,
        input_size=static,
        origin=origin,
    )
    return CardlessClassifier(network, card).eval()


def _read_program(path: Path, *, trust: bool) -> torch.export.ExportedProgram:
    if trust:
        from robaudit.progress import console

        shown = escape(str(path))
        console.print(f"[yellow]warning:[/yellow] --trust-checkpoint: loading {shown} may unpickle objects (runs code)")
    try:
        with contextlib.nullcontext() if trust else weights_only_unpickling():
            return torch.export.load(str(path))
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"the program in {str(path)!r} holds pickled Python objects (in its sample inputs, constants or tensor "
            f"subclasses): {TRUST_HINT}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any failure to read a foreign archive is the file's fault
        raise CheckpointError(f"torch.export program {str(path)!r} is unreadable ({first_line(exc)})") from None


@contextlib.contextmanager
def weights_only_unpickling() -> Iterator[None]:
    """While it lasts, ``torch.load`` unpickles weights only (whatever its caller asks) and the other unpicklers
    ``torch.export.load`` may reach refuse: reading a program can then run no code from it."""
    real_load = torch.load

    def weights_only_load(file: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return real_load(file, *args, **kwargs)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("a custom object would be unpickled")

    patches = [mock.patch("torch.load", weights_only_load), mock.patch("pickle.loads", refuse)]
    if hasattr(torch._C, "_pickle_load_obj"):
        patches.append(mock.patch.object(torch._C, "_pickle_load_obj", refuse))
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        yield


def _input_shape(program: torch.export.ExportedProgram, path: Path) -> list[Any]:
    """The shape of the program's one user input: ints where static, symbols where dynamic."""
    names = list(program.graph_signature.user_inputs)
    if len(names) != 1:
        raise CheckpointError(
            f"the program in {str(path)!r} takes {len(names)} inputs; robaudit calls a classifier with one batch of "
            "images: export a module whose forward takes (images,)"
        )
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == names[0])
    value = node.meta.get("val")
    if value is None or value.ndim != 4:
        raise CheckpointError(f"the program in {str(path)!r} does not take (N, C, H, W) images; export one that does")
    return [d if isinstance(d, int) else None for d in value.shape]


def _training_batch_norms(program: torch.export.ExportedProgram) -> int:
    """How many BatchNorm calls of the program use batch statistics (exported in training mode)."""
    aten = torch.ops.aten
    count = 0
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        if (
            node.target is aten.batch_norm.default
            and len(node.args) > 5
            and node.args[5]
            or node.target in (aten._native_batch_norm_legit_functional.default, aten._native_batch_norm_legit.default)
        ):
            count += 1
    return count


def check_gradients(network: ExportedNetwork, program: torch.export.ExportedProgram, path: Path) -> None:
    """Raise a one-line CheckpointError when gradients do not reach the input of the program's own example input
    (attacks need them); no check when the program saved no example input."""
    args = (program.example_inputs or ((), {}))[0]
    if not args or not isinstance(args[0], torch.Tensor):
        return
    images = args[0].detach().float().clone().requires_grad_(True)
    try:
        network(images).float().sum().backward()
        reached = images.grad is not None
        problem = "no gradient reaches the input"
    except Exception as exc:  # noqa: BLE001 - any failure of a foreign program on its own input is one line
        reached, problem = False, first_line(exc)
    if not reached:
        raise CheckpointError(
            f"the program in {str(path)!r} cannot be differentiated ({problem}); attacks need its gradients: "
            "export the model itself with torch.export.export(model.eval(), (images,)), without detach() or "
            "inference-only ops in its forward"
        )
