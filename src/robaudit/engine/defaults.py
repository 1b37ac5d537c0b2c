"""The defaults of an evaluate config that depend on what else it gives: the data a model was trained on, and the
default attacks. ``EvaluateConfig.with_defaults`` applies them, with the convergence mode, in one place."""

from __future__ import annotations

from dataclasses import replace

from rich.markup import escape

from robaudit.config import ComponentSpec
from robaudit.data.spec import DataSpec
from robaudit.errors import ConfigError
from robaudit.models.spec import ModelSpec
from robaudit.progress import console

DEFAULT_ATTACKS = ("pgd",)


def default_data(model: ModelSpec, data: DataSpec | None) -> DataSpec:
    """No data source given: the test split of the data the model was trained on (its ``train:`` recipe's data, or
    what a robaudit checkpoint records), keeping ``data``'s other options; else a one-line error asking for
    ``--data``."""
    from robaudit.models.classifiers import training_data_source

    source = model.train.data if model.train is not None else None
    source = source or (training_data_source(model.path) if model.path else None)
    if not source:
        raise ConfigError(
            "no data given, and the model does not record the data it was trained on: pass --data NAME|PATH "
            "(a registered dataset such as digits, an .npz, an image folder or a robaudit dataset folder)"
        )
    console.print(f"no data given: auditing the test split of the model's training data, {escape(str(source))}")
    return replace(data, source=source) if data is not None else DataSpec(source)


def default_attacks(data: DataSpec) -> tuple[ComponentSpec, ...]:
    """No attacks given: the default ones, except on a stored adversarial dataset (scored as given: none)."""
    from robaudit.data import detect_source

    if detect_source(data.source)[0] == "artifact":
        return ()
    console.print(f"no attacks given: running {', '.join(DEFAULT_ATTACKS)}")
    return tuple(ComponentSpec(name) for name in DEFAULT_ATTACKS)
