"""backward_steps: auto -- the DDIM surrogate's step count chosen by a measured rule: each candidate's gradient
compared with the true process's (cosine, same draws) on the first samples, the smallest one reaching 0.9 kept. Known
answers: a surrogate of as many DDIM steps as a DDIM purifier's own chain is that chain, so it agrees exactly; the
rule picks the smallest passing count or none; a run records the measurement and the report states it."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.errors import ConfigError
from robaudit.purifiers.base import PURIFIERS, recipe_for
from robaudit.purifiers.surrogate import calibrate_surrogate, choose_backward_steps, measure_agreement
from tiny import TINY_RECIPES
from toys import WithCard


def tiny_ddpm(**params):
    recipe = recipe_for("ddpm", TINY_RECIPES["ddpm"])
    torch.manual_seed(0)
    network = PURIFIERS.get("ddpm").meta["build"](recipe, [1, 32, 32]).eval()
    return PURIFIERS.build("ddpm", {"t_star": 0.02, **params}, network).eval()


def linear_classifier():
    torch.manual_seed(1)
    return WithCard(nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))).eval()


def test_the_rule_keeps_the_smallest_step_count_that_agrees_or_none():
    assert choose_backward_steps({1: 0.5, 2: 0.93, 5: 0.97, 10: 0.99}) == 2
    assert choose_backward_steps({1: 0.95, 2: 0.8}) == 1
    assert choose_backward_steps({1: 0.2, 2: 0.4}) is None


def test_a_surrogate_with_the_chains_own_ddim_steps_agrees_exactly(digits_test):
    purifier = tiny_ddpm(sampler="ddim", steps=5, backward_steps="auto")
    images, labels = digits_test.images[:4], digits_test.labels[:4]
    agreement = measure_agreement(purifier, linear_classifier(), images, labels, seed=0, draws=2)
    assert set(agreement) == {1, 2, 5, 10} and purifier.backward_steps == "auto", "t_start 19: 20 is not below"
    assert agreement[5] == pytest.approx(1.0, abs=1e-4)
    assert all(-1 <= v <= 1 for v in agreement.values())


def test_calibration_resolves_auto_and_is_reproducible(digits_test):
    images, labels = digits_test.images[:4], digits_test.labels[:4]
    chosen = []
    for _ in range(2):
        purifier = tiny_ddpm(sampler="ddpm", backward_steps="auto")
        record = calibrate_surrogate(purifier, linear_classifier(), images, labels, seed=3)
        assert record["chosen"] == purifier.backward_steps and record["chosen"] != "auto"
        chosen.append(record)
    assert chosen[0] == chosen[1], "seeded: the same measurement twice"


def test_an_unresolved_auto_never_silently_differentiates(digits_test):
    purifier = tiny_ddpm(sampler="ddpm", backward_steps="auto")
    x = digits_test.images[:2].clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="resolved by purifiers.surrogate"):
        purifier(x)
    with pytest.raises(ConfigError, match="backward_steps must be a step count >= 1, auto or absent"):
        tiny_ddpm(backward_steps=0)


def test_an_audit_with_auto_records_the_measurement_and_the_report_states_it(tmp_path, digits_model_path):
    from test_purifier_cli import invoke

    invoke("train", "ddpm", "--data", "digits", "--out", tmp_path / "ddpm.pt", "--config", recipe_file(tmp_path))
    config = {
        "data": {"name": "digits", "split": "test", "limit": 4},
        "attacks": [{"name": "pgd", "steps": 2}],
        "purifiers": [
            {
                "name": "ddpm",
                "checkpoint": str(tmp_path / "ddpm.pt"),
                "t_star": 0.02,
                "sampler": "ddpm",
                "backward_steps": "auto",
            }
        ],
        "threats": ["adaptive"],
        "eot": 1,
        "repeats": 2,
        "selection_draws": 2,
        "convergence": "off",
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["evaluate", "--config", str(tmp_path / "c.yaml"), "--model", str(digits_model_path), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    surrogate = summary["defenses"][1]["surrogate"]
    assert set(surrogate["agreement"]) == {"1", "2", "5", "10"} and surrogate["samples"] == 4
    report = (out / "report.md").read_text()
    assert "DDIM surrogate chosen by measurement" in report


def recipe_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**TINY_RECIPES["ddpm"], "epochs": 1}))
    return path
