"""Flag groups: declared once, offered by every command that uses them, handed to the command as one object."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.cli.flags import DATA_FLAGS, GATE_FLAGS, JOB_FLAGS, FlagGroup, given, with_flags


def test_a_flag_group_reaches_the_command_as_one_object():
    seen = {}
    demo = typer.Typer()
    group = FlagGroup.overrides("overrides", {"eps": (str, "budget"), "seed": (int, "seed")})

    @demo.command()
    @with_flags(group)
    def run(name: str = typer.Option("x", "--name"), overrides: dict = None) -> None:  # type: ignore[assignment]
        seen.update(name=name, overrides=overrides)

    result = CliRunner().invoke(demo, ["--name", "y", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert seen == {"name": "y", "overrides": {"seed": 3}}  # --eps not given: absent, so a config value stands


def test_given_drops_flags_left_unset():
    assert given(split=None, limit=5, skip_bad=False, channels=0) == {"limit": 5, "channels": 0}


def test_every_command_offers_its_groups_flags():
    offered = {
        "evaluate": [GATE_FLAGS, DATA_FLAGS],
        "report": [GATE_FLAGS],
        "attack": [DATA_FLAGS, JOB_FLAGS],
        "purify": [DATA_FLAGS, JOB_FLAGS],
    }
    for command, groups in offered.items():
        text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
        for group in groups:
            for _, option in group.options.values():
                assert option.param_decls[0] in text, (command, option.param_decls[0])
