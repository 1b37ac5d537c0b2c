"""The evaluate config resolves once into an immutable audit that everything reads, its keys are its fields, and
running it changes nothing in it."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from robaudit.engine.config import NOT_FINGERPRINTED, EvaluateConfig, ResolvedAudit, evaluate_keys, scalar_settings
from robaudit.engine.evaluate import run_evaluation
from robaudit.errors import ConfigError

pytestmark = pytest.mark.usefixtures("checkpoint_here")  # configs name m.pt: parse checks it exists

MAPPING = {"model": "m.pt", "data": "digits", "attacks": ["fgsm", {"name": "pgd", "steps": 3}], "eps": "4/255,8/255"}


def test_the_accepted_keys_are_the_fields():
    names = {f.name for f in dataclasses.fields(EvaluateConfig)}
    assert set(evaluate_keys()) == names - {"eps_sweep", "eps_l2_sweep"}
    with pytest.raises(ConfigError, match="unknown key 'attack' in config; valid keys: model, data, attacks"):
        EvaluateConfig.parse({**MAPPING, "attack": ["pgd"]})


def test_resolve_gives_one_immutable_audit_that_the_saved_config_reads():
    config = EvaluateConfig.parse(MAPPING)
    resolved = config.resolve()
    assert isinstance(resolved, ResolvedAudit) and isinstance(resolved.attacks, tuple)
    labels = [a.label for a in resolved.attacks]
    assert labels == ["fgsm", "fgsm@0.01569", "pgd", "pgd+x2", "pgd@0.01569"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.attacks = ()
    assert resolved.to_dict() == config.resolve().to_dict(), "resolving is deterministic"
    assert not hasattr(config, "to_dict") and not hasattr(config, "fingerprinted"), "only the resolution is saved"
    assert not set(NOT_FINGERPRINTED) & set(resolved.fingerprinted())


def test_a_run_changes_nothing_in_its_config(tmp_path, digits_model_path):
    mapping = {"model": str(digits_model_path), "data": {"name": "digits", "limit": 4}, "attacks": ["fgsm"]}
    config = EvaluateConfig.parse({**mapping, "out": str(tmp_path / "run"), "convergence": "off"})
    before = copy.deepcopy(config)
    run_evaluation(config, trust_checkpoint=True)
    assert config == before and config.model.trust_checkpoint is False


@pytest.mark.parametrize("key", [f.name for f in scalar_settings()])
def test_every_scalar_key_is_one_field_with_its_rules_beside_it(key):
    """A scalar key declared with ``setting`` is read (its type checked), checked and saved by its field's rules
    alone: no other list names it."""
    spec = next(f for f in scalar_settings() if f.name == key)
    kind, default = spec.metadata["coerce"], spec.default
    choices = [c for c in spec.metadata["choices"] or () if c != default]  # a declared value other than the default
    text = choices[0] if choices else "cpu" if key == "device" else "x"
    value = {int: 7, float: 7.5, str: text, bool: not default}[kind]
    config = EvaluateConfig.parse({**MAPPING, key: value})
    assert getattr(config, key) == value
    saved = config.resolve().to_dict()
    assert (key in saved) == (spec.metadata["saved"] != "never") and saved.get(key, value) == value
    if spec.metadata["positive"]:
        with pytest.raises(ConfigError, match=f"{key} must be a positive integer"):
            EvaluateConfig.parse({**MAPPING, key: 0})
    if spec.metadata["at_least"] is not None:
        with pytest.raises(ConfigError, match=f"{key} must be at least"):
            EvaluateConfig.parse({**MAPPING, key: spec.metadata["at_least"] - 1})
