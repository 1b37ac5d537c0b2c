"""``local-dir:PATH``: a folder in timm's hub layout or transformers' ``save_pretrained`` layout; no network."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from robaudit.errors import CheckpointError
from robaudit.models.hf_transformers import is_transformers_folder
from robaudit.models.sources import MODEL_SOURCES, SourceOptions
from robaudit.models.sources._pretrained import pretrained_classifier, transformers_source


@MODEL_SOURCES.register(
    "local-dir",
    description="a folder a model was saved to: timm's hub layout (save_for_hf) or transformers' save_pretrained",
    example="local-dir:models/vit-xray",
)
def local_dir_source(ref: str, options: SourceOptions) -> nn.Module:
    """A transformers folder (config.json with a ``model_type``) through ``AutoModelForImageClassification``; a timm
    one through ``timm.create_model('local-dir:' + ref, pretrained=True)``. No network; weights only."""
    folder = Path(ref)
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{str(folder)!r} is not a model folder (no config.json); save one with "
            "timm.models.save_for_hf(model, PATH, safe_serialization=True) or model.save_pretrained(PATH)"
        )
    origin = {"source": "local-dir", "ref": str(folder)}
    if is_transformers_folder(folder):
        return transformers_source(folder, options, origin=origin)
    return pretrained_classifier(f"local-dir:{folder}", options, origin=origin)
