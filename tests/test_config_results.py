"""Config parsing (eps fractions, unknown keys), the registry, Wilson intervals and worst-case aggregation."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from robaudit.components.registry import Registry
from robaudit.config import parse_eps
from robaudit.engine.config import EvaluateConfig
from robaudit.errors import ConfigError
from robaudit.reporting.results import CLEAN, records_frame, summarize, wilson_interval

pytestmark = pytest.mark.usefixtures("checkpoint_here")  # configs name m.pt: parse checks it exists


@pytest.mark.parametrize(
    "text, value", [("8/255", 8 / 255), ("0.5", 0.5), (0.25, 0.25), (" 4 / 255 ", 4 / 255), ("1e-2", 0.01)]
)
def test_parse_eps(text, value):
    assert parse_eps(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["eight", "8/0", "-0.1", "0", "nan", "inf", "8/255/2", True, ""])
def test_parse_eps_rejects(text):
    with pytest.raises(ConfigError):
        parse_eps(text)


def test_wilson_matches_reference_values():
    low, high = wilson_interval(81, 263)  # Wilson (1927) example as tabulated by Newcombe (1998)
    assert low == pytest.approx(0.2553, abs=1e-3) and high == pytest.approx(0.3662, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("total", [1, 7, 24, 200, 2000, 9999])
def test_wilson_interval_contains_the_rate(total):
    for successes in range(0, total + 1, max(1, total // 50)):
        low, high = wilson_interval(successes, total)
        assert 0.0 <= low <= successes / total <= high <= 1.0
    assert wilson_interval(0, total)[0] == 0.0 and wilson_interval(total, total)[1] == 1.0


def test_registry_did_you_mean():
    registry = Registry("widget")
    registry.register("alpha", description="a")(lambda *, x=1: x)
    with pytest.raises(ConfigError, match="unknown widget 'alpah'; valid: alpha \\(did you mean 'alpha'\\?\\)"):
        registry.get("alpah")
    with pytest.raises(ConfigError, match="unknown key 'y'"):
        registry.build("alpha", {"y": 2})
    assert registry.build("alpha", {"x": 3}) == 3


def test_config_unknown_key_is_named():
    with pytest.raises(ConfigError, match="unknown key 'atacks'.*did you mean 'attacks'"):
        EvaluateConfig.parse({"model": "m.pt", "data": "digits", "atacks": ["pgd"]})


def test_config_eps_fraction_and_labels():
    config = EvaluateConfig.parse({"model": "m.pt", "data": "digits", "attacks": ["pgd", "pgd"], "eps": "4/255"})
    labels = [a.label for a in config.resolved_attacks()]
    assert config.eps == pytest.approx(4 / 255) and labels == ["pgd", "pgd+x2", "pgd#2"]
    assert [a.convergence_of for a in config.resolved_attacks()] == [None, "pgd", None], "the headline check escalates"
    ladders = EvaluateConfig.parse(
        {"model": "m.pt", "data": "digits", "attacks": ["pgd", "pgd"], "convergence": {"scope": "attack"}}
    )
    assert [a.label for a in ladders.resolved_attacks()] == ["pgd", "pgd+x2", "pgd#2", "pgd#2+x2"]


def test_config_entries_take_their_own_labels():
    mapping = {
        "model": "m.pt",
        "data": "digits",
        "attacks": [{"name": "pgd", "label": "pgd-long", "steps": 40}, "pgd"],
        "purifiers": [{"name": "cold", "variant": "blurred", "label": "blurred"}, "cold", "cold"],
    }
    config = EvaluateConfig.parse(mapping)
    assert [a.label for a in config.resolved_attacks() if a.convergence_of is None] == ["pgd-long", "pgd"]
    assert config.resolved_attacks()[0].params["steps"] == 40
    purifiers = config.resolved_purifiers()
    assert [p.label for p in purifiers] == ["blurred", "cold", "cold#2"]
    assert purifiers[0].params["variant"] == "blurred" and "label" not in purifiers[0].params


@pytest.mark.parametrize("label, message", [("none", "not usable"), ("a|b", "not usable"), (3, "not usable")])
def test_unusable_labels_are_named(label, message):
    mapping = {"model": "m.pt", "data": "digits", "purifiers": [{"name": "cold", "label": label}]}
    with pytest.raises(ConfigError, match=message):
        EvaluateConfig.parse(mapping).resolved_purifiers()


def test_duplicate_labels_are_an_error():
    mapping = {"model": "m.pt", "data": "digits", "attacks": ["pgd", {"name": "fgsm", "label": "pgd"}]}
    with pytest.raises(ConfigError, match="two entries are labelled 'pgd'"):
        EvaluateConfig.parse(mapping).resolved_attacks()


def _rec(sample, condition, correct):
    return {
        "sample_id": sample,
        "index": 0,
        "label": 0,
        "condition": condition if condition == CLEAN else f"{condition}|none|none",
        "attack": condition,
        "norm": "Linf",
        "eps": 0.1,
        "purifier": "none",
        "threat": "white-box",
        "repeat": 0,
        "clean_pred": 0,
        "pred": 0 if correct else 1,
        "correct": correct,
        "attacked": condition != CLEAN,
        "linf": 0.1,
        "l2": 0.5,
    }


def test_worst_case_is_per_sample_and():
    # Four samples: a survives both attacks, b falls to A, c falls to B, d is wrong when clean.
    table = {"a": (True, True, True), "b": (True, False, True), "c": (True, True, False), "d": (False, False, False)}
    records = []
    for sample, (clean, under_a, under_b) in table.items():
        records += [_rec(sample, CLEAN, clean), _rec(sample, "A", under_a), _rec(sample, "B", under_b)]
    attacks = [
        {"label": "A", "name": "A", "norm": "Linf", "eps": 0.1},
        {"label": "B", "name": "B", "norm": "Linf", "eps": 0.1},
    ]
    summary = summarize(records_frame(records), attacks=attacks)
    assert summary["clean_accuracy"]["value"] == 0.75
    assert [a["robust_accuracy"]["value"] for a in summary["attacks"]] == [0.5, 0.5]
    assert summary["worst_case"]["robust_accuracy"]["value"] == 0.25  # not min(0.5, 0.5)
    assert math.isclose(summary["attacks"][0]["attack_success_rate"]["value"], 1 / 3)


def test_a_missing_clean_record_counts_as_wrong():
    records = []
    for sample, clean_ok in (("a", True), ("b", True)):
        for repeat in (0, 1):
            if sample == "b" and repeat == 1:
                continue  # b's second clean draw is missing: it must not count as correct
            records.append(
                {
                    "sample_id": sample,
                    "index": 0,
                    "label": 0,
                    "condition": "none|p|none",
                    "attack": "none",
                    "norm": "none",
                    "eps": 0.0,
                    "purifier": "p",
                    "threat": "none",
                    "repeat": repeat,
                    "clean_pred": 0,
                    "pred": 0,
                    "correct": clean_ok,
                    "attacked": False,
                    "linf": 0.0,
                    "l2": 0.0,
                }
            )
            records.append({**records[-1], "condition": "none|none|none", "purifier": "none"})
    defenses = [{"label": "none", "threats": ["none"]}, {"label": "p", "threats": []}]
    summary = summarize(records_frame(records), attacks=[], defenses=defenses)
    defended = summary["defenses"][1]
    assert defended["clean_accuracy_worst_of_n"]["value"] == 0.5  # b is not correct in every repeat
    assert defended["clean_accuracy"]["value"] == 0.75


def test_resume_fingerprint_covers_purifier_checkpoints():
    from robaudit.engine.prepare import run_fingerprint

    same = run_fingerprint({"seed": 0}, "m", "d", {"ddpm": {"sha256": "a"}})
    assert same == run_fingerprint({"seed": 0}, "m", "d", {"ddpm": {"sha256": "a"}})
    assert same != run_fingerprint({"seed": 0}, "m", "d", {"ddpm": {"sha256": "b"}})


def test_gates_and_part_size_belong_to_the_library_config():
    base = {"model": "m.pt", "data": "digits"}
    config = EvaluateConfig.parse({**base, "gates": ["worst_case >= 0.1"], "part_size": 64})
    assert config.gates == ("worst_case >= 0.1",) and config.resolve().to_dict()["gates"] == ["worst_case >= 0.1"]
    assert config.part_size == 64 and "batch_size" not in config.resolve().fingerprinted()
    with pytest.raises(ConfigError, match="unknown metric"):
        EvaluateConfig.parse({**base, "gates": ["worst >= 0.1"]})
    with pytest.raises(ConfigError, match="part_size must be a positive integer"):
        EvaluateConfig.parse({**base, "part_size": 0})


def test_the_resolved_audit_is_read_only_all_the_way_down():
    """What the engine reads after ``resolve`` cannot change under it: frozen dataclasses, tuples, read-only
    mappings; the saved form is plain again."""
    import dataclasses

    mapping = {
        "model": "m.pt",
        "data": "digits",
        "attacks": [{"name": "pgd", "steps": 3}],
        "purifiers": [{"name": "ddpm", "steps": 2}],
        "eps": "4/255,8/255",
        "gates": ["worst_case >= 0.1"],
    }
    resolved = EvaluateConfig.parse(mapping).resolve()
    attack, purifier = resolved.attacks[0], resolved.purifiers[0]
    read_only = [(resolved.config, "eps"), (attack, "label"), (purifier, "label")]
    read_only += [
        (resolved.config.model, "path"),
        (resolved.config.data, "source"),
        (resolved.config.convergence, "mode"),
    ]
    for frozen_object, field in read_only:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(frozen_object, field, 0)
    for mapping_field in (attack.params, purifier.params, purifier.recipe, resolved.config.attacks[0].params):
        with pytest.raises(TypeError):
            mapping_field["steps"] = 99
    assert isinstance(resolved.config.attacks, tuple) and isinstance(resolved.config.eps_sweep, tuple)
    saved = resolved.to_dict()
    assert type(saved["attacks"][0]["params"]) is dict and saved["eps_sweep"] == [4 / 255]
    assert yaml.safe_dump(saved) and json.dumps(saved)
