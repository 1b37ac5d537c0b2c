"""Configuration: value parsing (``eps: 8/255``), safe YAML loading, schema validation and CLI overrides."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from robaudit.errors import ConfigError
from robaudit.frozen import frozen, thawed

_NUMBER = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")


def parse_eps(value: object, *, name: str = "eps", allow_zero: bool = False) -> float:
    """Parse a perturbation budget: a number or a fraction such as ``"8/255"``. Must be finite and > 0."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} {value!r} is not a number; write e.g. {name}=8/255 or {name}=0.5")
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                if not (_NUMBER.match(num) and _NUMBER.match(den)):
                    raise ValueError(text)
                number = float(Fraction(num.strip()) / Fraction(den.strip()))
            elif _NUMBER.match(text):
                number = float(text)
            else:
                raise ValueError(text)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(
                f"{name} {text!r} does not parse; write a number or a fraction, e.g. {name}=8/255"
            ) from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be finite and {bound}, got {value!r}; e.g. {name}=8/255")
    return number


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"config {str(path)!r}{where}: {problem}; fix the YAML syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {str(path)!r} is not UTF-8 text; pass a YAML file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {str(path)!r} must be a mapping of keys to values, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class ComponentSpec:
    """A registered component chosen by ``name`` with its factory's keyword arguments (read-only)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", frozen(self.params))

    @classmethod
    def parse(cls, value: object, *, where: str) -> ComponentSpec:
        """Accept ``"pgd"`` or ``{name: pgd, steps: 20}``."""
        if isinstance(value, str):
            return cls(value.strip())
        if isinstance(value, Mapping):
            params = dict(value)
            name = params.pop("name", None)
            if not isinstance(name, str):
                raise ConfigError(f"{where}: each entry needs a 'name:' (got keys {sorted(params)})")
            return cls(name, params)
        raise ConfigError(f"{where}: expected a name or a mapping with 'name:', got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """The YAML form: ``{name: ..., **params}``."""
        return {"name": self.name, **thawed(self.params)}


LABEL_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.+-]*$")


def labelled(specs: list[ComponentSpec], *, where: str) -> list[tuple[str, ComponentSpec]]:
    """Each spec's label and the spec without its ``label:`` key.

    The label is the entry's ``label:`` if given, else its name, a repeated name getting ``#2``, ``#3``... Labels
    name rows of reports and keys of records, so they must be unique, start with a letter and use only letters,
    digits and ``_ . + -``; ``none`` is reserved for the undefended model.
    """
    out, seen, taken = [], {}, set()
    for spec in specs:
        params = thawed(spec.params)
        label = params.pop("label", None)
        if label is None:
            seen[spec.name] = seen.get(spec.name, 0) + 1
            label = spec.name if seen[spec.name] == 1 else f"{spec.name}#{seen[spec.name]}"
        elif not isinstance(label, str) or not LABEL_PATTERN.match(label) or label == "none":
            raise ConfigError(
                f"{where}: label {label!r} is not usable; use letters, digits and _ . + - (starting with a letter),"
                " and not 'none'"
            )
        if label in taken:
            raise ConfigError(f"{where}: two entries are labelled {label!r}; give each a distinct 'label:'")
        taken.add(label)
        out.append((label, ComponentSpec(spec.name, params)))
    return out


def as_mapping(value: object, *, where: str, short_key: str, expected: str) -> dict[str, Any]:
    """A config entry written as a string (short for ``{short_key: value}``) or a mapping, as a new dict."""
    if isinstance(value, str):
        return {short_key: value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected {expected}, got {value!r}")
    return dict(value)


def rules(default: Any, *, positive: bool = False, at_least: float | None = None, choices: tuple[str, ...] = ()) -> Any:
    """A config section's field with its ``default`` and the rules ``build_dataclass`` checks a given value against,
    declared beside it: ``positive``, its least value (``at_least``), the values it may take (``choices``)."""
    return field(default=default, metadata={"positive": positive, "at_least": at_least, "choices": choices})


def build_dataclass(cls: type, mapping: Mapping[str, Any], *, where: str) -> Any:
    """Instantiate dataclass ``cls`` from ``mapping``: the one builder of every config section. Unknown keys are
    errors naming the key; each value is checked against its field (``checked_field``)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(mapping, list(fields), where=where)
    hints = typing.get_type_hints(cls)
    prefix = f"{where}." if where else ""
    return cls(
        **{key: checked_field(fields[key], value, hints[key], where=prefix + key) for key, value in mapping.items()}
    )


def checked_field(spec: dataclasses.Field, value: object, hint: Any, *, where: str) -> Any:
    """``value`` coerced to the field's type (``hint``, or the ``coerce`` type its metadata declares) and checked
    against the rules its metadata declares: ``positive``, ``at_least`` and ``choices``."""
    declared = spec.metadata
    value = coerce(value, declared.get("coerce", hint), where=where)
    if declared.get("positive") and value is not None and value <= 0:
        raise ConfigError(f"{where} must be a positive integer, got {value}")
    if declared.get("at_least") is not None and value is not None and value < declared["at_least"]:
        raise ConfigError(f"{where} must be at least {declared['at_least']:g}, got {value:g}")
    if declared.get("choices") and value is not None and value not in declared["choices"]:
        raise ConfigError(f"{where} must be one of {', '.join(declared['choices'])}; got {value!r}")
    return value


def coerce(value: Any, hint: Any, *, where: str) -> Any:
    """Check/convert a scalar config value against a simple type hint (int, float, str, bool, optional)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where=where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def did_you_mean(name: str, valid: list[str]) -> str:
    """A " (did you mean 'x'?)" suffix when a valid name is close to ``name``, else ""."""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    """One-line message for an unknown component name."""
    return f"unknown {kind} {name!r}; valid: {', '.join(valid)}" + did_you_mean(name, valid)


def check_keys(mapping: Mapping[str, Any], allowed: list[str], *, where: str) -> None:
    """Raise a ConfigError naming the first key of ``mapping`` not in ``allowed`` (the one key check of robaudit:
    configs, recipes, attack and purifier sections), with the valid keys and a "did you mean"."""
    for key in mapping:
        if key not in allowed:
            raise ConfigError(
                f"unknown key {key!r} in {where}; valid keys: {', '.join(allowed)}" + did_you_mean(key, allowed)
            )
