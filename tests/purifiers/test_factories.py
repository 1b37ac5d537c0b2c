"""Purifier networks from the user's own code: a config factory needs --trust-code (one line, exit 2, without it);
with it the run completes and the report names the factory and the weights' sha256; installed packages provide
factories through the ``robaudit.purifier_networks`` entry point group."""

from __future__ import annotations

import json

import pytest
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from robaudit.errors import ConfigError
from robaudit.fileio import sha256_file
from robaudit.purifiers.factories import ENTRY_POINT_GROUP, network_from_factory, resolve_factory
from tiny_factory import tiny_noise_predictor

runner = CliRunner()


def write_config(tmp_path, model_path):
    weights = tmp_path / "weights.safetensors"
    save_file(tiny_noise_predictor(image_size=16, learned_sigma=True, seed=1).model.state_dict(), str(weights))
    network = {
        "factory": "tiny_factory:tiny_noise_predictor",
        "kwargs": {"image_size": 16, "learned_sigma": True},
        "weights": str(weights),
    }
    config = {
        "model": str(model_path),
        "data": {"name": "digits", "split": "test", "limit": 8},
        "attacks": [{"name": "pgd", "steps": 2}],
        "purifiers": [{"name": "ddpm", "network": network, "t_star": 0.02, "sampler": "sde", "sde_dt": 0.005}],
        "threats": ["adaptive"],
        "repeats": 2,
        "eot": 1,
        "selection_draws": 2,
        "out": str(tmp_path / "run"),
    }
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "audit.yaml", weights


def test_a_config_factory_needs_trust_code_and_the_report_names_it(tmp_path, digits_model_path):
    from robaudit.cli import app

    config, weights = write_config(tmp_path, digits_model_path)
    refused = runner.invoke(app, ["evaluate", "--config", str(config)])
    assert refused.exit_code == 2
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--trust-code" in lines[0] and "tiny_factory:tiny_noise_predictor" in lines[0]
    assert not (tmp_path / "run" / "records").exists(), "nothing ran"
    result = runner.invoke(app, ["evaluate", "--config", str(config), "--trust-code"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    defense = summary["defenses"][1]
    assert summary["complete"] and defense["source"] == "factory" and defense["sha256"] == sha256_file(weights)
    assert defense["bridge"] == "32 -> 16 (bicubic) -> purify -> 32"
    assert "reverse VP-SDE" in defense["process"] and "4 steps" in defense["process"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "factory `tiny_factory:tiny_noise_predictor`" in report and sha256_file(weights) in report
    assert "resolution bridge: 32 -\\> 16 \\(bicubic\\) -\\> purify -\\> 32" in report


def test_weights_must_fit_the_factorys_network(tmp_path):
    save_file(
        {"conv_in.weight": tiny_noise_predictor().model.conv_in.weight[:1].contiguous()},
        str(tmp_path / "w.safetensors"),
    )
    spec = {"factory": "tiny_factory:tiny_noise_predictor", "weights": str(tmp_path / "w.safetensors")}
    with pytest.raises(Exception, match="do not fit"):
        network_from_factory(spec, kind="ddpm", trust_code=True)


def test_an_installed_entry_point_provides_a_factory_without_the_flag(tmp_path, monkeypatch):
    dist = tmp_path / "site" / "robaudit_test_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: robaudit-test-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ntiny = tiny_factory:tiny_noise_predictor\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert resolve_factory("tiny", trust_code=False) is tiny_noise_predictor
    network, card = network_from_factory({"factory": "tiny", "kwargs": {"image_size": 8}}, kind="ebm", trust_code=False)
    assert card["input_size"] == [1, 8, 8] and abs(float(network.sigmas[network.level_for(0.25)]) - 0.25) < 0.01
    with pytest.raises(ConfigError, match=r"no purifier network 'absent' among .*tiny"):
        resolve_factory("absent", trust_code=False)


@pytest.mark.slow
def test_a_factory_network_compiles_inside_its_checkpoint():
    """A user's noise predictor (guided-diffusion's learned-sigma output) under ``--compile`` and forced gradient
    checkpointing: the checkpoint stays outside the compiled evaluation, and the purified images and the input
    gradient equal the eager ones."""
    import torch

    from robaudit.engine.passes import purifier_network
    from robaudit.models.compiled import compile_network
    from robaudit.purifiers import PURIFIERS
    from robaudit.purifiers.checkpointing import CheckpointedEvaluation, forced_checkpointing
    from robaudit.rng.seeding import generator

    spec = {"factory": "tiny_factory:tiny_noise_predictor", "kwargs": {"image_size": 16, "learned_sigma": True}}
    network, _ = network_from_factory(spec, kind="ddpm", trust_code=True)
    purifier = PURIFIERS.build("ddpm", {"t_star": 0.02, "sampler": "ddim", "steps": 3}, network).eval()
    evaluated = purifier_network(purifier)
    assert isinstance(evaluated, CheckpointedEvaluation)
    images = torch.rand(3, 1, 16, 16, generator=generator(0))

    def purified_and_gradient() -> tuple[torch.Tensor, torch.Tensor]:
        x = images.clone().requires_grad_(True)
        with forced_checkpointing(True):
            out = purifier(x, generator=generator(1))
            (gradient,) = torch.autograd.grad(out.square().sum(), x)
        return out.detach(), gradient

    eager = purified_and_gradient()
    compile_network(evaluated)
    assert "evaluate" in vars(evaluated), "the evaluation inside the checkpoint is the compiled one"
    torch.testing.assert_close(purified_and_gradient(), eager, atol=1e-4, rtol=1e-3)
