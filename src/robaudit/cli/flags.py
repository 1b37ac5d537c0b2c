"""Groups of CLI flags shared by several commands, declared once and handed to a command as one object.

``@with_flags(GATE_FLAGS)`` gives a Typer command the gate flags and calls it with ``gate_flags=GateFlags(...)``;
``DATA_FLAGS`` (split, limit, image size, channels, skip-bad, class map; as a dict of the ones given) and
``JOB_FLAGS`` (batch size, overwrite, seed, device, trust-checkpoint) work the same way.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from robaudit.cli.common import DeviceOption, SeedOption, SkipBadOption, TrustOption

if TYPE_CHECKING:
    from robaudit.data.job import DatasetJob
    from robaudit.data.transforms import EvalTransform
    from robaudit.reporting.gates import GateOptions

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class FlagGroup:
    """Flags a command receives as one object: ``build(**values)`` passed as the keyword ``keyword``.

    ``options`` maps each ``build`` keyword to (the type Typer parses, the ``typer.Option``).
    """

    keyword: str
    build: Callable[..., Any]
    options: dict[str, tuple[type, Any]]

    @classmethod
    def overrides(cls, keyword: str, table: dict[str, tuple[type, str]]) -> FlagGroup:
        """Flags ``--KEY`` (``_`` written ``-``) for config keys, from ``{key: (type, help)}``; the command receives
        ``{key: value}`` of the flags given (a flag not given leaves the config's value, or the default)."""

        def flag(key: str, hint: type) -> str:
            name = "--" + key.replace("_", "-")
            return f"{name}/--no-{name[2:]}" if hint is bool else name  # a switch, not a value

        options = {key: (hint, typer.Option(None, flag(key, hint), help=text)) for key, (hint, text) in table.items()}
        return cls(keyword, given, options)


def with_flags(group: FlagGroup) -> Callable[[F], F]:
    """Add ``group``'s flags to a Typer command, which takes them as one keyword argument ``group.keyword``."""

    def decorate(func: F) -> F:
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=hint)
            for name, (hint, option) in group.options.items()
        ]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in group.options}
            return func(*args, **{group.keyword: group.build(**values)}, **kwargs)

        signature = inspect.signature(func)
        kept = [p for p in signature.parameters.values() if p.name != group.keyword]
        wrapper.__signature__ = signature.replace(parameters=kept + added)  # type: ignore[attr-defined]
        annotations = {k: v for k, v in func.__annotations__.items() if k != group.keyword}
        wrapper.__annotations__ = {**annotations, **{p.name: p.annotation for p in added}}
        return wrapper  # type: ignore[return-value]

    return decorate


@dataclass
class GateFlags:
    """Release gates to judge on a finished run (``evaluate`` and ``report``)."""

    gate: list[str] | None = None
    gate_bound: str = "value"
    baseline: Path | None = None
    max_drop: float | None = None
    junit: Path | None = None
    json_output: bool = False
    strict: bool = False

    def options(self) -> GateOptions:
        """How the gates are judged (``reporting.gates.GateOptions``)."""
        from robaudit.reporting.gates import GateOptions

        baseline = None if self.baseline is None else str(self.baseline)
        return GateOptions(bound=self.gate_bound, baseline=baseline, max_drop=self.max_drop, strict=self.strict)


GATE_FLAGS = FlagGroup(
    "gate_flags",
    GateFlags,
    {
        "gate": (list[str], typer.Option(None, "--gate", help='A gate, e.g. "robust_accuracy\\[pgd] >= 0.40".')),
        "gate_bound": (str, typer.Option("value", "--gate-bound", help="value: gate the rate; ci_low: its CI low.")),
        "baseline": (Path, typer.Option(None, "--baseline", help="Run directory to compare against (--max-drop).")),
        "max_drop": (float, typer.Option(None, "--max-drop", help="Fail if a rate fell more than this vs --baseline.")),
        "junit": (Path, typer.Option(None, "--junit", help="Write the gates as JUnit XML (one test case per gate).")),
        "json_output": (bool, typer.Option(False, "--json", help="Print the gate results as JSON on stdout.")),
        "strict": (bool, typer.Option(False, "--strict", help="Fail the gates on a sanity warning or error.")),
    },
)


def given(**values: Any) -> dict[str, Any]:
    """The flags given: ``{name: value}`` without the ones left at None or False."""
    return {name: value for name, value in values.items() if value is not None and value is not False}


DATA_FLAGS = FlagGroup(  # the command receives {key: value} of the DataSpec keys given
    "data_flags",
    given,
    {
        "split": (str, typer.Option(None, "--split", help="Dataset split (default test).")),
        "limit": (int, typer.Option(None, "--limit", help="At most this many samples.")),
        "image_size": (int, typer.Option(None, "--image-size", help="Resize images to this size.")),
        "channels": (int, typer.Option(None, "--channels", help="Convert images to 1 or 3 channels.")),
        "skip_bad": (bool, SkipBadOption),
        "class_map": (
            str,
            typer.Option(None, "--class-map", help="YAML/JSON {data class: model class} when their names differ."),
        ),
    },
)


@dataclass
class JobFlags:
    """How a dataset job runs: batch size, overwrite, seed, device, trust in pickled checkpoints."""

    batch_size: int = 128
    overwrite: bool = False
    seed: int = 0
    device: str = "auto"
    trust_checkpoint: bool = False

    def start(
        self,
        created_by: str,
        source: str,
        data_flags: dict[str, Any],
        out: Path,
        *,
        transform: EvalTransform | None = None,
    ) -> DatasetJob:
        """Start a dataset job reading ``source`` (with the data flags given; through a model's evaluation
        ``transform`` when given) and writing ``out``."""
        from robaudit.data.job import DatasetJob
        from robaudit.data.spec import DataSpec

        spec = DataSpec(source=source, **data_flags)
        options = {"overwrite": self.overwrite, "device": self.device, "seed": self.seed, "transform": transform}
        return DatasetJob.start(created_by, spec, out=out, **options)


JOB_FLAGS = FlagGroup(
    "job",
    JobFlags,
    {
        "batch_size": (int, typer.Option(128, "--batch-size", help="Samples per batch (changes no result).")),
        "overwrite": (bool, typer.Option(False, "--overwrite", help="Replace the --out folder when it exists.")),
        "seed": (int, SeedOption),
        "device": (str, DeviceOption),
        "trust_checkpoint": (bool, TrustOption),
    },
)
