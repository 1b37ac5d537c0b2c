"""Parts sized by time (``engine.part_sizing``): one process's fresh run times a first part and cuts the rest to
``part_seconds``; the layout is saved, so resuming and shards cut alike; records never depend on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import audit_workdir
from robaudit.cli import app
from robaudit.engine.part_sizing import FIRST_PART, size_for
from robaudit.engine.plan import PartLayout

CONFIG = {
    "model": "m.pt",
    "data": {"name": "digits", "limit": 40},
    "attacks": ["fgsm", {"name": "pgd", "steps": 3}],
    "batch_size": 8,
    "part_size": 16,
    "device": "cpu",
    "seed": 7,
}


def test_a_part_is_the_largest_power_of_two_that_fits_the_time_within_its_bounds():
    assert size_for(1.0, target_seconds=120, smallest=8, largest=128) == 64
    assert size_for(0.01, target_seconds=120, smallest=8, largest=128) == 128
    assert size_for(100.0, target_seconds=120, smallest=8, largest=128) == 8
    assert size_for(0.5, target_seconds=120, smallest=8, largest=100) == 100


@pytest.mark.parametrize("num_samples", [0, 5, 8, 9, 40, 1000])
@pytest.mark.parametrize("layout", [PartLayout(16), PartLayout(16, first=8), PartLayout(3, first=8)])
def test_a_layout_covers_every_sample_once_in_order(num_samples, layout):
    cut = layout.parts(num_samples)
    assert [p.number for p in cut] == list(range(len(cut)))
    covered = [i for p in cut for i in range(p.start, p.stop)]
    assert covered == list(range(num_samples)) and all(p.stop > p.start for p in cut)
    assert PartLayout.from_dict(layout.to_dict()) == layout


@pytest.fixture()
def workdir(tmp_path, digits_model_path, monkeypatch):
    return audit_workdir(tmp_path, digits_model_path, CONFIG, monkeypatch)


def _evaluate(*args: str) -> None:
    result = CliRunner().invoke(app, ["evaluate", "--config", "audit.yaml", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _records(run: Path) -> list[dict]:
    lines = [line for p in sorted((run / "records").glob("part-*.jsonl")) for line in p.read_text().splitlines()]
    return sorted((json.loads(line) for line in lines), key=lambda r: (r["condition"], r["repeat"], r["index"]))


def _bases(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "records").glob("part-*.jsonl") if not p.name.startswith("part-check"))


@pytest.mark.slow
def test_one_process_times_a_first_part_and_its_records_are_those_of_parts_by_count(workdir):
    _evaluate("--out", "by-count", "--part-seconds", "0")
    _evaluate("--out", "roomy", "--part-seconds", "100000")  # any part fits: parts of part_size after the first
    _evaluate("--out", "tight", "--part-seconds", "0.000001")  # none fits: parts of the first part's size
    assert _bases(workdir / "by-count") == [
        "part-000000-000016.jsonl",
        "part-000016-000032.jsonl",
        "part-000032-000040.jsonl",
    ]
    assert _bases(workdir / "roomy") == [
        "part-000000-000008.jsonl",
        "part-000008-000024.jsonl",
        "part-000024-000040.jsonl",
    ]
    assert len(_bases(workdir / "tight")) == 40 // FIRST_PART
    layout = json.loads((workdir / "roomy" / "records" / "layout.json").read_text())
    assert layout == {"size": 16, "first": FIRST_PART}
    reference = _records(workdir / "by-count")
    assert _records(workdir / "roomy") == reference and _records(workdir / "tight") == reference


@pytest.mark.slow
def test_a_resumed_run_and_shards_added_later_keep_the_saved_layout(workdir):
    _evaluate("--out", "run", "--part-seconds", "100000")
    reference = _records(workdir / "run")
    lost = workdir / "run" / "records" / "part-000008-000024.jsonl"
    lost.unlink()
    _evaluate("--out", "run", "--shard", "1/2")  # the saved layout, not parts of 16 from 0: shard 1 owns part 1
    assert lost.exists() and _records(workdir / "run") == reference
    lost.unlink()
    _evaluate("--out", "run")
    assert _records(workdir / "run") == reference
    manifest = json.loads((workdir / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["missing_parts"] == []


@pytest.mark.slow
def test_a_run_sharded_from_the_start_cuts_by_count(workdir):
    _evaluate("--out", "array", "--shard", "0/2")
    assert json.loads((workdir / "array" / "records" / "layout.json").read_text()) == {"size": 16, "first": 0}
    assert _bases(workdir / "array") == ["part-000000-000016.jsonl", "part-000032-000040.jsonl"]
