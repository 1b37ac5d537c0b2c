"""The defaults of an evaluate config that depend on what else it gives: the data a model was trained on, and the
default attacks. Applied once, where a config enters the library (``robaudit.api.audit``)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from robaudit.errors import ConfigError
from robaudit.progress import console

DEFAULT_ATTACKS = ["pgd"]


def with_defaults(mapping: dict[str, Any]) -> dict[str, Any]:
    """A copy of the config ``mapping`` with the data and attacks it leaves out filled in."""
    mapping = dict(mapping)
    add_default_data(mapping)
    add_default_attacks(mapping)
    return mapping


def add_default_data(mapping: dict[str, Any]) -> None:
    """No data given: the test split of the data the model was trained on (recorded in robaudit checkpoints, or the
    config's ``model: train: data:``), else a one-line error asking for ``--data``."""
    from robaudit.models.classifiers import training_data_source

    data = mapping.get("data")
    data = {"name": data} if isinstance(data, str) else dict(data or {})
    if data.get("name") or data.get("path"):
        return
    model = mapping.get("model")
    model = {"path": model} if isinstance(model, str) else dict(model or {})
    train = model.get("train") if isinstance(model.get("train"), dict) else {}
    source = train.get("data") or (training_data_source(model["path"]) if model.get("path") else None)
    if not source:
        raise ConfigError(
            "no data given, and the model does not record the data it was trained on: pass --data NAME|PATH "
            "(a registered dataset such as digits, an .npz, an image folder or a robaudit dataset folder)"
        )
    console.print(f"no data given: auditing the test split of the model's training data, {escape(str(source))}")
    mapping["data"] = {"split": "test", **data, "name": source}


def add_default_attacks(mapping: dict[str, Any]) -> None:
    """No attacks given: run the default ones, except on a stored adversarial dataset (scored as given)."""
    from robaudit.data import detect_source

    if not mapping.get("attacks") and "attacks" not in mapping and mapping.get("data") is not None:
        data = mapping["data"]
        source = data if isinstance(data, str) else data.get("path") or data.get("name")
        if isinstance(source, str) and detect_source(source)[0] != "artifact":
            console.print(f"no attacks given: running {', '.join(DEFAULT_ATTACKS)}")
            mapping["attacks"] = list(DEFAULT_ATTACKS)
