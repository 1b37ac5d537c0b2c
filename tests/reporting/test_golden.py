"""Golden test: a fixed set of per-sample records (with config and manifest) renders to the expected markdown and
CSV. Regenerate the expected files on purpose with ``ROBAUDIT_REGENERATE_GOLDEN=1 pytest tests/test_golden.py``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from golden_run import _run_dir
from robaudit.reporting.report import rebuild_reports

GOLDEN = Path(__file__).parent / "golden"


def test_records_render_to_the_expected_markdown_and_csv(tmp_path):
    run = _run_dir(tmp_path / "run")
    rebuild_reports(run.path)
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["clean_accuracy"]["value"] == 5 / 6
    assert [a["robust_accuracy"]["value"] for a in summary["attacks"]] == [3 / 6, 3 / 6]
    assert summary["worst_case"]["robust_accuracy"]["value"] == 2 / 6  # per-sample AND, not min(3/6, 3/6)
    produced = {name: (run.path / name).read_text() for name in ("report.md", "results.csv")}
    if os.environ.get("ROBAUDIT_REGENERATE_GOLDEN"):
        for name, text in produced.items():
            (GOLDEN / name).write_text(text)
        pytest.fail("regenerated tests/golden/; review the diff, then run again without ROBAUDIT_REGENERATE_GOLDEN")
    for name, text in produced.items():
        assert text == (GOLDEN / name).read_text(), f"{name} differs from tests/golden/{name}"
    assert yaml.safe_load((run.path / "config.yaml").read_text())["seed"] == 0
