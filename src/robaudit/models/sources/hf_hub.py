"""``hf-hub:REPO[@REVISION]``: a timm or transformers repository on the Hugging Face hub (cached)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from robaudit.hub import hub_errors, snapshot
from robaudit.models.hf_transformers import is_transformers_config, read_json
from robaudit.models.sources import MODEL_SOURCES, SourceOptions
from robaudit.models.sources._pretrained import pretrained_classifier, transformers_source


@MODEL_SOURCES.register(
    "hf-hub",
    description="a timm or transformers model repository on the Hugging Face hub (cached; HF_HUB_OFFLINE honoured)",
    example="hf-hub:google/vit-base-patch16-224",
)
def hf_hub_source(ref: str, options: SourceOptions) -> nn.Module:
    """A transformers repository (its config.json names a ``model_type``) through ``AutoModelForImageClassification``
    on the cached snapshot; a timm one through ``timm.create_model('hf-hub:' + ref, pretrained=True)``."""
    repo, _, revision = ref.partition("@")
    origin = {"source": "hf-hub", "ref": ref, "repo": repo}
    if is_transformers_config(read_json(Path(hub_file(repo, "config.json", revision=revision or None)))):
        return transformers_source(Path(snapshot(repo, revision=revision or None)), options, origin=origin)
    return pretrained_classifier(f"hf-hub:{ref}", options, origin=origin)


def hub_file(repo: str, filename: str, *, revision: str | None) -> str:
    """A file of a hub repository through the Hugging Face cache (one-line errors when it is missing offline)."""
    from huggingface_hub import hf_hub_download

    with hub_errors(repo, repo):
        return hf_hub_download(repo, filename, revision=revision)
