"""Fingerprints of classifiers: the sha256 of the file a model came from, or of its weights.

A weight fingerprint is defined for any state dict a user's model can have: every dtype (bool, integers, float8,
bfloat16, complex), 0-dim tensors (BatchNorm's ``num_batches_tracked``), buffers, non-contiguous views, sparse and
quantized tensors, and the odd non-tensor entry (``get_extra_state``). It depends on names, dtypes, shapes and
values only, so two loads of the same weights agree and any changed value changes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robaudit.errors import CheckpointError
from robaudit.fileio import sha256_file


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The values of ``tensor`` (any shape, dtype or layout) as bytes, in row-major order."""
    value = tensor.detach()
    if value.is_meta:
        raise CheckpointError("the model's weights are not loaded (meta tensors); load them before auditing")
    if value.is_quantized:  # viewing a quantized tensor's bytes crashes: its integers plus its quantization
        return quantized_bytes(value)
    if value.layout != torch.strided:
        value = value.to_dense()
    flat = value.cpu().contiguous().reshape(-1)  # 1-d: a 0-dim tensor cannot be viewed as bytes
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def quantized_bytes(value: torch.Tensor) -> bytes:
    """A quantized tensor's integer representation, scheme, scales and zero points as bytes."""
    scheme = value.qscheme()
    if scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        params = f"{scheme}|{value.q_scale()!r}|{value.q_zero_point()}".encode()
    else:
        scales, zeros = value.q_per_channel_scales(), value.q_per_channel_zero_points()
        params = f"{scheme}|{value.q_per_channel_axis()}|".encode() + tensor_bytes(scales) + tensor_bytes(zeros)
    return params + tensor_bytes(value.int_repr())


def weights_fingerprint(state: Mapping[str, Any]) -> str:
    """sha256 over a state dict's entries in name order: name, dtype, shape and values of each tensor; other
    entries (extra state) by their JSON form."""
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        if isinstance(value, torch.Tensor):
            digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
            digest.update(tensor_bytes(value))
        else:
            digest.update(f"{name}|{json.dumps(value, sort_keys=True, default=_type_name)}|".encode())
    return digest.hexdigest()


def _type_name(value: object) -> str:
    return type(value).__qualname__


def model_fingerprint(model: nn.Module, path: Path) -> str:
    """The sha256 of the file ``model`` was loaded from (which covers the code of a TorchScript or torch.export
    program too), or of its weights (``weights_fingerprint``) when it came from a pretrained source (``timm:``,
    ``hf-hub:``, ...) rather than from that file."""
    from robaudit.models.sources import MODEL_SOURCES

    if path.is_file() and model.card.origin.get("source") not in MODEL_SOURCES:
        return sha256_file(path)
    return weights_fingerprint(model.state_dict())
