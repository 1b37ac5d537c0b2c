"""Registries are typed (a typo in an entry fails at import), reports need no registry, templates render, and a
purifier that needs a classifier says so before any work."""

from __future__ import annotations

import time

import pytest
import yaml
from typer.testing import CliRunner

from golden_run import _run_dir
from robaudit.attacks.base import ATTACKS, AttackEntry
from robaudit.cli import app
from robaudit.components.registry import Registry
from robaudit.purifiers.base import PURIFIERS, PurifierEntry
from robaudit.reporting.report import default_templates, rebuild_reports


def test_a_typo_in_a_registry_entry_fails_at_registration():
    registry = Registry("attack", metadata=AttackEntry)
    with pytest.raises(TypeError, match="acess"):
        registry.register("x", description="x", acess="black-box")(lambda model: model)
    purifiers = Registry("purifier", metadata=PurifierEntry)
    with pytest.raises(TypeError, match="buidl"):
        purifiers.register("y", description="y", recipe=dict, buidl=dict)(lambda network: network)
    with pytest.raises(TypeError, match="build"):
        purifiers.register("z", description="z", recipe=dict)(lambda network: network)


@pytest.mark.parametrize("name", PURIFIERS.names())
def test_every_purifier_entry_is_complete(name):
    meta = PURIFIERS.get(name).meta
    assert callable(meta["build"]) and isinstance(meta["needs_classifier"], bool)
    assert meta["train"] is None or callable(meta["train"])  # None: fit network.loss with the recipe


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_entry_states_its_access_and_tier(name):
    meta = ATTACKS.get(name).meta
    assert meta["access"] in ("white-box", "black-box")
    assert meta["tier"] in (None, 1, 2, 3)


def test_reports_of_a_renamed_attack_still_rebuild(tmp_path):
    run = _run_dir(tmp_path / "run")
    config = yaml.safe_load(run.config_path.read_text())
    for attack in config["attacks"]:
        attack.update(name=f"old-{attack['name']}", access="white-box", tier=None)
    run.write_config(config)
    rebuild_reports(run.path)
    assert "old-pgd" in (run.path / "summary.json").read_text()


@pytest.mark.parametrize("template", ["audit-letter.md.j2", "ci-summary.md.j2"])
def test_example_templates_render_on_a_run(tmp_path, template):
    run = _run_dir(tmp_path / "run")
    written = rebuild_reports(run.path, template=default_templates() / "examples" / template)
    text = written["report"].read_text()
    assert written["report"].name == template.removesuffix(".j2")
    assert "33.3%" in text  # the worst case of the golden records: 2 of 6


def test_a_purifier_that_needs_a_classifier_fails_before_any_work(tmp_path):
    tic = time.perf_counter()
    out = tmp_path / "purified"
    result = CliRunner().invoke(app, ["purify", "--purifier", "mae", "--data", "digits", "--out", str(out)])
    assert result.exit_code == 2 and "pass --model" in result.output and "Traceback" not in result.output
    assert time.perf_counter() - tic < 30 and not out.exists()
