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
(``robaudit.components.plugins``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from robaudit.components.registry import Registry
from robaudit.errors import ConfigError
from robaudit.models.references import split_source


@dataclass
class SourceOptions:
    """What every source may use besides its reference: a new head's class count, fine-tuned weights and the trust
    flag for pickled files. A source's own options (RobustBench's model folder, dataset and threat) are its
    loader's keyword-only arguments, checked like an attack's (``models.references.source_option_names``)."""

    num_classes: int | None = None
    weights: str | None = None
    trust_checkpoint: bool = False


class SourceLoader(Protocol):
    def __call__(self, ref: str, options: SourceOptions, **source_options: Any) -> nn.Module: ...


@dataclass(frozen=True)
class SourceMeta:
    """A source's usage example (``robaudit ls models``) and the values its own options may take (``choices``:
    option -> values; an option left out takes any)."""

    example: str
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


MODEL_SOURCES: Registry[SourceLoader] = Registry("model source", metadata=SourceMeta)


def load_from_source(model: str, options: SourceOptions, source_options: Mapping[str, Any] | None = None) -> nn.Module:
    """The classifier ``model`` (``source:reference``) names, in eval mode, with a filled card; ``source_options``
    are the source's own (an unknown one is an error naming the source's)."""
    source, ref = split_source(model) or (None, "")
    if source is None:
        raise ConfigError(f"{model!r} names no model source; use one of {', '.join(MODEL_SOURCES.names())}")
    if not ref:
        raise ConfigError(f"{model!r} has nothing after '{source}:'; e.g. {MODEL_SOURCES.get(source).meta['example']}")
    return MODEL_SOURCES.build(source, source_options, ref, options).eval()


from robaudit.components.plugins import discover, load_plugins  # noqa: E402  (after the names the sources import from here)

discover(__name__)
load_plugins("robaudit.model_sources")
