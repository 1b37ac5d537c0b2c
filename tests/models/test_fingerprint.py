"""Weight fingerprints are defined for any state dict: every dtype, 0-dim buffers, views, sparse and quantized
tensors; stable across loads, changed by any changed value."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from robaudit.models.fingerprint import tensor_bytes, weights_fingerprint

DTYPES = [
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
]


def some_values(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """1, 2, 3, ... in ``shape`` (odd/even as True/False for bool)."""
    count = 1
    for size in shape:
        count *= size
    base = torch.arange(1, count + 1, dtype=torch.float32).reshape(shape)
    return (base % 2).to(dtype) if dtype == torch.bool else base.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(), (3,), (2, 3)], ids=["0-dim", "1-d", "2-d"])
def test_every_dtype_and_a_0_dim_tensor_has_a_fingerprint_that_sees_its_values(dtype, shape):
    value = some_values(dtype, shape)
    first = weights_fingerprint({"w": value})
    assert first == weights_fingerprint({"w": value.clone()})
    assert len(tensor_bytes(value)) == value.numel() * value.element_size()
    changed = value.clone().reshape(-1)
    if dtype == torch.bool:
        changed[0] = ~changed[0]
    else:  # float8 has no arithmetic: add in float32 (complex: on the real part)
        changed[0] = changed[0] + 1 if dtype.is_complex else changed[0].to(torch.float32).add(1).to(dtype)
    assert weights_fingerprint({"w": changed.reshape(shape)}) != first


def test_dtype_shape_and_name_are_part_of_the_fingerprint():
    value = torch.zeros(4, dtype=torch.int32)
    first = weights_fingerprint({"w": value})
    assert weights_fingerprint({"w": value.view(torch.float32)}) != first, "same bytes, another dtype"
    assert weights_fingerprint({"w": value.view(2, 2)}) != first, "same bytes, another shape"
    assert weights_fingerprint({"v": value}) != first, "same tensor, another name"


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_views_sparse_and_quantized_tensors_fingerprint_by_value():
    matrix = torch.arange(12.0).view(3, 4)
    transposed = matrix.t()
    assert not transposed.is_contiguous()
    assert weights_fingerprint({"w": transposed}) == weights_fingerprint({"w": transposed.contiguous()})
    assert weights_fingerprint({"w": matrix[:, 1]}) == weights_fingerprint({"w": matrix[:, 1].clone()})
    sparse = torch.eye(3).to_sparse()
    assert weights_fingerprint({"w": sparse}) == weights_fingerprint({"w": torch.eye(3)})
    quantized = torch.quantize_per_tensor(torch.tensor([0.1, 0.5, 0.9]), 0.1, 0, torch.quint8)
    coarser = torch.quantize_per_tensor(torch.tensor([0.1, 0.5, 0.9]), 0.2, 0, torch.quint8)
    assert weights_fingerprint({"w": quantized}) != weights_fingerprint({"w": coarser})
    per_channel = torch.quantize_per_channel(
        torch.rand(2, 3), torch.tensor([0.1, 0.2]), torch.tensor([0, 1]), 0, torch.qint8
    )
    assert weights_fingerprint({"w": per_channel}) == weights_fingerprint({"w": per_channel.clone()})


def test_extra_state_entries_are_fingerprinted_too():
    assert weights_fingerprint({"a": {"k": 1}}) == weights_fingerprint({"a": {"k": 1}})
    assert weights_fingerprint({"a": {"k": 1}}) != weights_fingerprint({"a": {"k": 2}})


def batchnorm_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def test_a_batchnorm_network_is_stable_across_two_loads_and_changes_with_any_parameter():
    torch.manual_seed(0)
    net = batchnorm_cnn()
    net(torch.rand(2, 3, 8, 8))
    assert net[1].num_batches_tracked.ndim == 0 and net[1].num_batches_tracked.dtype == torch.int64
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    loads = []
    for _ in range(2):
        buffer.seek(0)
        loads.append(weights_fingerprint(torch.load(buffer, weights_only=True)))
    assert loads[0] == loads[1] == weights_fingerprint(net.state_dict())
    with torch.no_grad():
        net[1].running_var[2] += 1e-3
    assert weights_fingerprint(net.state_dict()) != loads[0], "a buffer is part of the weights"
    with torch.no_grad():
        net[1].running_var[2] -= 1e-3
        net[1].num_batches_tracked += 1
    assert weights_fingerprint(net.state_dict()) != loads[0], "a 0-dim integer buffer is part of the weights"
