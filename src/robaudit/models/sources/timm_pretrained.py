"""``timm:NAME[.TAG]``: ``timm.create_model(..., pretrained=True)`` through the Hugging Face cache."""

from __future__ import annotations

from torch import nn

from robaudit.models.sources import MODEL_SOURCES, SourceOptions
from robaudit.models.sources._pretrained import hub_repo_of, pretrained_classifier


@MODEL_SOURCES.register(
    "timm",
    description="a timm model name with its pretrained tag; weights from the Hugging Face cache",
    example="timm:vit_base_patch16_224.augreg2_in21k_ft_in1k",
)
def timm_source(ref: str, options: SourceOptions) -> nn.Module:
    """``timm.create_model(ref, pretrained=True)``."""
    return pretrained_classifier(ref, options, origin={"source": "timm", "ref": ref, "repo": hub_repo_of(ref)})
