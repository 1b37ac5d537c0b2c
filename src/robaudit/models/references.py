"""What ``--model`` text names, read without importing torch: a file (``FILE_KINDS``, as ``robaudit ls models`` lists
them beside the sources; ``models.classifiers.load_classifier`` reads them) or ``source:reference`` (a registered
model source, from the catalog)."""

from __future__ import annotations

from robaudit.components.catalog import catalog
from robaudit.errors import CheckpointError

FILE_KINDS = (
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
)


def split_source(model: str) -> tuple[str, str] | None:
    """(source, reference) of ``source:reference`` text naming a registered source; None for a plain path."""
    source, sep, ref = model.partition(":")
    return (source, ref) if sep and source in catalog("model source") else None


def source_option_names(model: str) -> list[str]:
    """The options the source ``model`` (``source:reference``) names declares: its loader's keyword-only arguments
    (empty for a plain path)."""
    source = split_source(model)
    return sorted(catalog("model source").get(source[0]).params) if source else []


def missing_checkpoint(path: object) -> CheckpointError:
    """The error for a ``--model`` file that does not exist."""
    return CheckpointError(f"model checkpoint {str(path)!r} does not exist; pass an existing file to --model")
