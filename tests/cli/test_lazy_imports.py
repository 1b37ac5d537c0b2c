"""``robaudit --help``, every command's ``--help``, every listing and the rejection of bad input answer without
importing torch (measured by the modules loaded, not by time: a fresh interpreter runs the CLI and reports what it
imported)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "transformers", "diffusers", "torchattacks", "pandas")
COMMANDS = ["train", "attack", "purify", "distill", "evaluate", "report", "ls"]

PROBE = """
import json, sys
from typer.testing import CliRunner
from robaudit.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
heavy = json.loads(sys.stdin.read())
print(json.dumps({"exit": result.exit_code, "heavy": sorted(m for m in heavy if m in sys.modules)}))
"""


def loaded_by(*args: str) -> dict:
    """Exit code and the heavy modules a fresh interpreter loaded running ``robaudit ARGS``."""
    command = [sys.executable, "-c", PROBE, *args]
    out = subprocess.run(command, input=json.dumps(HEAVY), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--help"], ["--version"], *([command, "--help"] for command in COMMANDS)])
def test_help_loads_no_heavy_module(args):
    result = loaded_by(*args)
    assert result == {"exit": 0, "heavy": []}, args


@pytest.mark.parametrize("what", ["attacks", "datasets", "models", "architectures", "purifiers"])
def test_listing_loads_no_heavy_module(what):
    assert loaded_by("ls", what) == {"exit": 0, "heavy": []}


BAD_INPUT = {
    "a bad --eps": ["--model", "{model}", "--data", "digits", "--eps", "abc"],
    "a bad --eps in a config": ["--config", "{config}", "--eps", "8/0"],
    "a missing model file": ["--model", "{missing}"],
    "a missing data path": ["--model", "{model}", "--data", "{missing}"],
    "an unknown attack": ["--model", "{model}", "--data", "digits", "--attacks", "pgdd"],
    "an unknown purifier": ["--model", "{model}", "--data", "digits", "--purifier", "ddmp"],
    "an unknown precision": ["--model", "{model}", "--data", "digits", "--precision", "fp16"],
    "an unknown random-stream engine": ["--model", "{model}", "--data", "digits", "--rng", "mt19937"],
    "an unknown threat model": ["--model", "{model}", "--data", "digits", "--purifier", "ddpm", "--threat", "bdpa"],
    "a purifier that cannot certify": ["--model", "{model}", "--data", "digits", "--purifier", "cold", "--certify"],
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_rejected_before_torch_loads(case, tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"not read: the input is rejected first")
    config = tmp_path / "audit.yaml"
    config.write_text(f"model: {model}\ndata: digits\n")
    paths = {"model": str(model), "config": str(config), "missing": str(tmp_path / "missing.pt")}
    args = [arg.format(**paths) for arg in BAD_INPUT[case]]
    assert loaded_by("evaluate", *args) == {"exit": 2, "heavy": []}, case


QUICKSTART_MISTAKES = {  # the quickstart config with one mistake each: what it says, and the error's words
    "a bad value": ({"eps": "8/O"}, "eps '8/O' does not parse"),
    "a typo in an attack's hyperparameter": (
        {"attacks": [{"name": "pgd", "stepz": 10}]},
        "unknown key 'stepz' in attack 'pgd'; valid keys: ",
    ),
    "a hyperparameter of the wrong type": ({"attacks": [{"name": "cw", "steps": "many"}]}, "steps must be an integer"),
}


@pytest.mark.parametrize("case", sorted(QUICKSTART_MISTAKES))
def test_a_mistake_in_the_quickstart_config_is_one_line_before_torch_loads(case, tmp_path):
    """Every check of a config runs in its one parse, before torch loads: a component's hyperparameters included
    (their keys and plain types come from the catalog). ``bench/cli_latency.py`` times these against 0.5 s."""
    import yaml

    from conftest import REPO

    change, words = QUICKSTART_MISTAKES[case]
    mapping = {**yaml.safe_load((REPO / "examples" / "configs" / "quickstart.yaml").read_text()), **change}
    config = tmp_path / "quickstart.yaml"
    config.write_text(yaml.safe_dump(mapping))
    command = [sys.executable, "-c", PROBE.replace('"heavy":', '"output": result.output, "heavy":'), "evaluate"]
    out = subprocess.run([*command, "--config", str(config)], input=json.dumps(HEAVY), capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    lines = result["output"].strip().splitlines()
    assert (result["exit"], result["heavy"], len(lines)) == (2, [], 1), result
    assert words in lines[0] and "Traceback" not in out.stderr
