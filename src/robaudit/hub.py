"""The Hugging Face hub cache, as every loader of robaudit reads it: offline is normal (``HF_HUB_OFFLINE``), and a
model missing from the cache is one line naming the cache and the command that fills it on a connected machine."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from robaudit.errors import CheckpointError, first_line


def hub_cache_dir() -> str:
    """The Hugging Face hub cache this process reads (``HF_HUB_CACHE``, ``HF_HOME``/hub, ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


@contextlib.contextmanager
def hub_errors(model: str, repo: str | None) -> Iterator[None]:
    """Turn the loaders' missing-cache, offline and unknown-model failures into one-line errors naming the fix."""
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    fill = (
        f"hf download {repo}" if repo else f"python -c \"import timm; timm.create_model('{model}', pretrained=True)\""
    )
    try:
        yield
    except LocalEntryNotFoundError:
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0") else ""
        raise CheckpointError(
            f"model {model!r} is not in the Hugging Face cache {hub_cache_dir()} and the hub is unreachable{offline}; "
            f"on a connected machine run `{fill}` and copy that cache here (or point HF_HUB_CACHE at it)"
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"no Hugging Face repository {repo!r}; check the name (hf-hub:OWNER/NAME)") from None
    except RuntimeError as exc:
        if "Unknown model" not in str(exc):
            raise
        raise CheckpointError(f"timm has no model {model!r}; list them with timm.list_models('*vit*')") from None
    except OSError as exc:  # torch.hub downloads (weights hosted outside the hub) fail without a network
        raise CheckpointError(
            f"weights of {model!r} are not cached ({torch.hub.get_dir()}) and cannot be downloaded "
            f"({first_line(exc)}); on a connected machine run `{fill}`"
        ) from None


def snapshot(repo: str, *, revision: str | None = None, allow_patterns: list[str] | None = None) -> str:
    """The local folder of a hub repository's snapshot (the cache; downloads only when online), or a one-line
    error naming the cache and the command that fills it."""
    from huggingface_hub import snapshot_download

    with hub_errors(repo, repo):
        return snapshot_download(repo, revision=revision, allow_patterns=allow_patterns)
