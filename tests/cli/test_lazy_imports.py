"""``robaudit --help`` and every command's ``--help`` answer without importing torch (measured by the modules
loaded, not by time: a fresh interpreter runs the CLI and reports what it imported)."""

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
