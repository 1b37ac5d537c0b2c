"""Model sources, each through its library's own loader: ``timm:NAME[.TAG]`` and ``hf-hub:REPO`` via
``timm.create_model(..., pretrained=True)`` (the Hugging Face cache, offline when ``HF_HUB_OFFLINE`` is set),
``local-dir:PATH`` (a folder in timm's hub layout: ``config.json`` + ``model.safetensors``) and
``robustbench:NAME`` (the ``robustbench`` package, from a local ``--model-dir``).

The card comes from the model itself: mean/std (applied inside the wrapper), input size and evaluation transform
from timm's resolved data config, class names where the config names them. Weights load as safetensors or
weights-only pickles; ``--weights FILE`` puts a fine-tuned state dict (the whole network, or only its head) over the
pretrained one, e.g. a head for ``--num-classes 2``.

Each module of this package is one source (``source:reference`` on ``--model``) and registers itself when imported:
a new source is one new file; installed plugins add theirs through the ``robaudit.model_sources`` entry-point group
(``robaudit.plugins``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

from robaudit.errors import ConfigError
from robaudit.registry import Registry


@dataclass
class SourceOptions:
    """What every source may use besides its reference: a new head's class count, fine-tuned weights and the trust
    flag for pickled files. A source's own options (RobustBench's model folder, dataset and threat) are its
    loader's keyword-only arguments, checked like an attack's (``source_option_names``)."""

    num_classes: int | None = None
    weights: str | None = None
    trust_checkpoint: bool = False


class SourceLoader(Protocol):
    def __call__(self, ref: str, options: SourceOptions, **source_options: Any) -> nn.Module: ...


@dataclass(frozen=True)
class SourceMeta:
    """A source's usage example (``robaudit ls models``)."""

    example: str


MODEL_SOURCES: Registry[SourceLoader] = Registry("model source", metadata=SourceMeta)

# Files a --model path may name (models.classifiers.load_classifier), listed beside the sources by `robaudit ls models`
FILE_KINDS = [
    ("checkpoint", "a robaudit checkpoint (.pt weights-only, or .safetensors with its card)", "runs/vit.pt"),
    (
        "state dict",
        "a bare timm state dict with its architecture (config: arch_kwargs, mean, std)",
        "weights.pt --arch resnet18",
    ),
    ("TorchScript", "a scripted or traced module taking [0, 1] images (class count probed)", "model.ts"),
    (
        "torch.export",
        "a torch.export program (torch.export.save) taking [0, 1] images; loads weights-only, class count probed",
        "model.pt2",
    ),
    ("pickled module", "a whole pickled nn.Module (runs code: --trust-checkpoint)", "model.pt --trust-checkpoint"),
]


def split_source(model: str) -> tuple[str, str] | None:
    """(source, reference) of ``source:reference`` text naming a registered source; None for a plain path."""
    source, sep, ref = model.partition(":")
    return (source, ref) if sep and source in MODEL_SOURCES else None


def source_option_names(model: str) -> list[str]:
    """The options the source ``model`` (``source:reference``) names declares: its loader's keyword-only arguments
    (empty for a plain path)."""
    source = split_source(model)
    return sorted(MODEL_SOURCES.get(source[0]).hyperparameters()) if source else []


def load_from_source(model: str, options: SourceOptions, source_options: Mapping[str, Any] | None = None) -> nn.Module:
    """The classifier ``model`` (``source:reference``) names, in eval mode, with a filled card; ``source_options``
    are the source's own (an unknown one is an error naming the source's)."""
    source, ref = split_source(model) or (None, "")
    if source is None:
        raise ConfigError(f"{model!r} names no model source; use one of {', '.join(MODEL_SOURCES.names())}")
    if not ref:
        raise ConfigError(f"{model!r} has nothing after '{source}:'; e.g. {MODEL_SOURCES.get(source).meta['example']}")
    return MODEL_SOURCES.build(source, source_options, ref, options).eval()


from robaudit.plugins import discover, load_plugins  # noqa: E402  (after the names the sources import from here)

discover(__name__)
load_plugins("robaudit.model_sources")
