"""A randomized classifier's own draws, each row of a call from that row's stream: one batched call, per-sample draws.

A user's randomized model (noise injection, random resizing, stochastic activation pruning; a TorchScript file as
often as not) draws its noise from torch's global generator. Row i's noise then depends on the rows before it in the
call, so robaudit used to run such a model one row per call under a generator seeded from the row's stream: the
records never depended on the batch, but every EOT, selection and scoring draw was a call of one row.

``RowDraws`` is a ``TorchDispatchMode``: inside it, every random operation the model runs (those torch tags
``nondeterministic_seeded``: ``randn_like``, ``rand``, ``normal_``, ``bernoulli``, ``multinomial``, ``randint``,
...) is answered from the rows' own streams (a ``SampleRNG``): row i of the result from row i's stream, drawn with the
same distribution. The call runs batched, and a sample's draws still depend on its own stream alone -- not on its
batch, the batch size, the layout or the number of processes. It sits below autograd and TorchScript alike.

A random operation whose result has no leading dimension of one entry per row (one random size for the whole batch,
``torch.rand(1)``), or one this module does not know (``randperm``, ``poisson``, ...), cannot be attributed to rows:
it raises ``Unattributable``. A random operation that draws nothing with the arguments it got (dropout at
probability 0, or outside training: the fused attention kernels of timm's and transformers' ViTs) simply runs.
``attributable`` tries a model once on a few rows; a model that fails it runs one row
per call, as before (``sample_rng.per_sample``), so every draw is still its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from robaudit.rng.sample_rng import SampleRNG

aten = torch.ops.aten


class Unattributable(RuntimeError):
    """A random operation whose draws cannot be given to rows (its name in the message)."""


def rows_shape(rng: SampleRNG, shape: Any, op: object) -> tuple[int, ...]:
    """``shape`` as a tuple, checked to lead with one entry per row of ``rng``."""
    shape = tuple(int(s) for s in shape)
    if not shape or shape[0] != len(rng):
        raise Unattributable(f"{op} drew a tensor of shape {shape}, not one row per sample ({len(rng)} rows)")
    return shape


def uniform(rng: SampleRNG, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) draws of ``shape`` (rows first), row i from stream i, in ``dtype`` (float64 for integers)."""
    floating = dtype if dtype.is_floating_point else torch.float64
    return rng.rand(*shape[1:], dtype=floating, device=device)


def normal(rng: SampleRNG, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Standard normal draws of ``shape`` (rows first), row i from stream i."""
    return rng.randn(*shape[1:], dtype=dtype, device=device)


def like(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.dtype, torch.device]:
    """(the template tensor, the result's dtype, its device) of a ``*_like`` operation."""
    template = args[0]
    return template, kwargs.get("dtype") or template.dtype, kwargs.get("device") or template.device


def made(args: tuple, kwargs: dict) -> tuple[tuple, torch.dtype, torch.device]:
    """(size, dtype, device) of a factory operation (``rand(size, ...)``)."""
    return args[0], kwargs.get("dtype") or torch.get_default_dtype(), kwargs.get("device") or torch.device("cpu")


def fill(target: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """An in-place operation's answer: ``target`` holding ``values``."""
    with torch.no_grad():
        return target.copy_(values)


def randn_like(rng: SampleRNG, op: Any, args: tuple, kwargs: dict) -> torch.Tensor:
    """``randn_like(x)``: standard normals shaped like x, rows first."""
    template, dtype, device = like(args, kwargs)
    return normal(rng, rows_shape(rng, template.shape, op), dtype, device)


def rand_like(rng: SampleRNG, op: Any, args: tuple, kwargs: dict) -> torch.Tensor:
    """``rand_like(x)``: uniforms on [0, 1) shaped like x."""
    template, dtype, device = like(args, kwargs)
    return uniform(rng, rows_shape(rng, template.shape, op), dtype, device).to(dtype)


def randn(rng: SampleRNG, op: Any, args: tuple, kwargs: dict) -> torch.Tensor:
    """``randn(size)``: standard normals of ``size``, rows first."""
    size, dtype, device = made(args, kwargs)
    return normal(rng, rows_shape(rng, size, op), dtype, device)


def rand(rng: SampleRNG, op: Any, args: tuple, kwargs: dict) -> torch.Tensor:
    """``rand(size)``: uniforms on [0, 1) of ``size``."""
    size, dtype, device = made(args, kwargs)
    return uniform(rng, rows_shape(rng, size, op), dtype, device).to(dtype)


def normal_(rng: SampleRNG, op: Any, args: tuple, kwargs: dict) -> torch.Tensor:
    """``x.normal_(mean, std)``: x filled with normals."""
    target = args[0]
    mean = args[1] if len(args) > 1 else kwargs.get("mean", 0.0)
    std = args[2] if len(args) > 2 else kwargs.get("std", 1.0)
    values = normal(rng, rows_shape(rng, target.shape, op), target.dtype, target.device)
    return fill(target, values * std + mean)


def uniform_(rng: SampleRNG, op: Any, args: tuple, kwargs: dict) -> torch.Tensor:
    """``x.uniform_(low, high)``: x filled with uniforms on [low, high)."""
    target = args[0]
    low = args[1] if len(args) > 1 else kwargs.get("from", 0.0)
    high = args[2] if len(args) > 2 else kwargs.get("to", 1.0)
    values = uniform(rng, rows_shape(rng, target.shape, op), target.dtype, target.device).to(target.dtype)
    return fill(target, values * (high - low) + low)


def bernoulli(rng: SampleRNG, op: Any, args: tuple, kwargs: dict) -> torch.Tensor:
    """``bernoulli(p)`` (a tensor of probabilities) or ``bernoulli(x, p)`` (p a float, 0.5 unless given, or a
    tensor; x's shape)."""
    template = args[0]
    p = args[1] if len(args) > 1 else kwargs.get("p", template if op._overloadname == "default" else 0.5)
    u = uniform(rng, rows_shape(rng, template.shape, op), torch.float64, template.device)
    return (u < p).to(template.dtype)


def bernoulli_(rng: SampleRNG, op: Any, args: tuple, kwargs: dict) -> torch.Tensor:
    """``x.bernoulli_(p)``: x filled with Bernoulli draws."""
    return fill(args[0], bernoulli(rng, op, args, kwargs))


def randint_bounds(args: tuple, kwargs: dict, *, skip: int) -> tuple[int, int, tuple]:
    """(low, high, rest) of ``randint(high, size)`` / ``randint(low, high, size)`` after ``skip`` leading args."""
    rest = args[skip:]
    numbers = [a for a in rest if isinstance(a, int | float)]
    if len(numbers) >= 2:
        return int(numbers[0]), int(numbers[1]), rest[2:]
    return int(kwargs.get("low", 0)), int(numbers[0] if numbers else kwargs["high"]), rest[1:]


def randint(rng: SampleRNG, op: Any, args: tuple, kwargs: dict) -> torch.Tensor:
    """``randint([low,] high, size)``: integers uniform on [low, high)."""
    low, high, rest = randint_bounds(args, kwargs, skip=0)
    size = rest[0] if rest else kwargs["size"]
    u = uniform(rng, rows_shape(rng, size, op), torch.float64, kwargs.get("device") or torch.device("cpu"))
    return (low + (u * (high - low)).floor()).to(kwargs.get("dtype") or torch.int64)


def randint_like(rng: SampleRNG, op: Any, args: tuple, kwargs: dict) -> torch.Tensor:
    """``randint_like(x, [low,] high)``: integers uniform on [low, high), shaped like x."""
    template, dtype, device = like(args, kwargs)
    low, high, _ = randint_bounds(args, kwargs, skip=1)
    u = uniform(rng, rows_shape(rng, template.shape, op), torch.float64, device)
    return (low + (u * (high - low)).floor()).to(dtype)


def multinomial(rng: SampleRNG, op: Any, args: tuple, kwargs: dict) -> torch.Tensor:
    """Per row: ``num_samples`` categories of the row's weights, with replacement (the inverse of the cumulative
    weights at uniforms) or without (the top keys log w - log(-log u), Gumbel's trick)."""
    weights, count = args[0], int(args[1] if len(args) > 1 else kwargs["num_samples"])
    replacement = bool(args[2] if len(args) > 2 else kwargs.get("replacement", False))
    if weights.dim() != 2:
        raise Unattributable(f"{op} on weights of shape {tuple(weights.shape)}, not one row per sample")
    rows_shape(rng, weights.shape, op)
    w = weights.to(torch.float64)
    if replacement:
        cumulative = w.cumsum(1)
        u = uniform(rng, (len(rng), count), torch.float64, w.device) * cumulative[:, -1:]
        return torch.searchsorted(cumulative, u, right=True).clamp_(max=w.shape[1] - 1)
    u = uniform(rng, tuple(w.shape), torch.float64, w.device).clamp_min(1e-300)
    return (w.log() - (-u.log()).log()).topk(count, dim=1).indices


def normal_tensor(rng: SampleRNG, op: Any, args: tuple, kwargs: dict) -> torch.Tensor:
    """``normal(mean, std)`` with tensor or float mean and std (their broadcast shape), or ``normal(mean, std, size)``
    with floats: rows first."""
    mean, std = args[0], args[1]
    tensors = [a for a in (mean, std) if isinstance(a, torch.Tensor)]
    if tensors:
        shape, dtype, device = torch.broadcast_shapes(*(t.shape for t in tensors)), tensors[0].dtype, tensors[0].device
    else:
        shape, dtype, device = made(args[2:], kwargs)
    return mean + std * normal(rng, rows_shape(rng, shape, op), dtype, device)


HANDLERS: dict[Any, Callable[..., torch.Tensor]] = {
    aten.randn_like: randn_like,
    aten.rand_like: rand_like,
    aten.randn: randn,
    aten.rand: rand,
    aten.normal_: normal_,
    aten.uniform_: uniform_,
    aten.bernoulli: bernoulli,
    aten.bernoulli_: bernoulli_,
    aten.randint: randint,
    aten.randint_like: randint_like,
    aten.multinomial: multinomial,
    aten.normal: normal_tensor,
}


DRAW_PROBABILITIES = ("dropout_p", "dropout", "p")  # the arguments that say how much a dropout op draws


def draws_nothing(func: Any, args: tuple, kwargs: dict) -> bool:
    """Whether a random operation ``func`` (an OpOverload) draws nothing with these arguments: dropout at
    probability 0 (a fused attention kernel's ``dropout_p`` in eval mode, as timm's and transformers' ViTs call
    ``scaled_dot_product_attention``) or outside training (``train`` false)."""
    values = dict(kwargs)
    for position, argument in enumerate(func._schema.arguments):
        if position < len(args):
            values[argument.name] = args[position]
        elif argument.name not in values and argument.has_default_value():
            values[argument.name] = argument.default_value
    if values.get("train") is False:
        return True
    return any(isinstance(values.get(name), int | float) and values[name] == 0 for name in DRAW_PROBABILITIES)


class RowDraws(TorchDispatchMode):
    """Inside it, every random operation draws row i of its result from row i of ``rng`` (``HANDLERS``); one it
    cannot attribute to rows raises ``Unattributable``."""

    def __init__(self, rng: SampleRNG) -> None:
        super().__init__()
        self.rng = rng

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if torch.Tag.nondeterministic_seeded not in func.tags:
            return func(*args, **kwargs)
        handler = HANDLERS.get(func.overloadpacket)
        if handler is None and draws_nothing(func, args, kwargs):
            return func(*args, **kwargs)
        if handler is None:
            raise Unattributable(f"{func} is a random operation robaudit cannot give to rows")
        return handler(self.rng, func, args, kwargs)


def with_row_draws(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, rng: SampleRNG) -> torch.Tensor:
    """``fn(images)`` (N rows) in one call, every random draw inside from the rows' own streams ``rng`` (N)."""
    with RowDraws(rng):
        return fn(images)


def attributable(model: torch.nn.Module, images: torch.Tensor, *, rows: int = 8) -> bool:
    """True when every random draw of ``model`` on ``rows`` rows of ``images`` (a forward and a backward pass) can be
    given to rows: the model may run batched with per-sample draws (``with_row_draws``)."""
    x = images[:1].float().repeat(rows, *([1] * (images.dim() - 1))).requires_grad_(True)
    rng = SampleRNG.from_seeds(range(rows))
    model.eval()
    try:
        with torch.enable_grad():
            out = with_row_draws(model, x, rng)
            if out.requires_grad:
                torch.autograd.grad(out.float().sum(), x, allow_unused=True)
    except Unattributable:
        return False
    return True
