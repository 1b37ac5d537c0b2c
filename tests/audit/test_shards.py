"""A run is the union of its shards: records do not depend on the batch size, the other conditions, the number of
torchrun ranks or job-array tasks; a killed shard resumes only its missing parts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import audit_workdir
from robaudit.attacks import ATTACKS, resolve_attack
from robaudit.cli import app
from robaudit.engine.plan import Shard, parts
from robaudit.errors import ConfigError
from robaudit.rng.sample_rng import ENGINES
from robaudit.runs.records import Condition
from toys import toy_part_output

FAST = {name: dict(ATTACKS.get(name).meta["smoke"]) for name in ("fgsm", "pgd", "autoattack", "square")}
FAST["pgd"]["restarts"] = 2


def _records(batch_size: int, *, extra_purifier: bool = False, n: int = 16, rng: str = "generator") -> list[dict]:
    attacks = []
    for name, params in FAST.items():
        attack = resolve_attack(name, params, eps=0.05, eps_l2=0.5)
        attacks.append(attack)
    return toy_part_output(attacks, batch_size, n=n, extra_purifier=extra_purifier, rng=rng).records


@pytest.mark.parametrize("engine", list(ENGINES))
def test_records_do_not_depend_on_the_batch_size_or_the_other_conditions(engine):
    """FGSM, PGD with restarts, AutoAttack (rand on the noisy pipeline, standard on the bare one), Square and a
    randomized purifier scored over repeats: the same records for batches of 4 and 16, with or without another
    purifier configured, with either random-stream engine."""
    small, large = _records(4, rng=engine), _records(16, rng=engine)
    assert small == large
    assert any(r["attacked"] for r in small) and {r["attack"] for r in small} >= set(FAST)
    with_invert = [r for r in _records(16, extra_purifier=True, rng=engine) if r["purifier"] != "invert"]
    assert with_invert == large


def test_parts_and_shards_cover_every_sample_once():
    every = parts(1000, 128)
    assert [p.start for p in every] == list(range(0, 1000, 128)) and every[-1].stop == 1000
    owned = [[p.number for p in every if Shard(k, 3).owns(p)] for k in range(3)]
    assert sorted(sum(owned, [])) == list(range(len(every)))
    assert Shard.parse("1/4") == Shard(1, 4)
    for bad in ("4/4", "1", "a/b", "-1/2"):
        with pytest.raises(ConfigError, match="--shard must be K/N"):
            Shard.parse(bad)
    assert Condition.parse(Condition("pgd", "ddpm", "adaptive").key()) == Condition("pgd", "ddpm", "adaptive")


CONFIG = {
    "model": "m.pt",
    "data": {"name": "digits", "limit": 24},
    "attacks": ["fgsm", {"name": "pgd", "steps": 3, "restarts": 2}],
    "batch_size": 4,
    "part_size": 6,
    "device": "cpu",
    "seed": 5,
    "eps": "1/255",  # small enough that samples stand: the convergence check has work in every layout
}


@pytest.fixture()
def workdir(tmp_path, digits_model_path, monkeypatch):
    return audit_workdir(tmp_path, digits_model_path, CONFIG, monkeypatch)


def _outputs(run: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted((run / "records").glob("part-*.jsonl"))}
    files["summary.json"] = (run / "summary.json").read_bytes()
    return files


def _robaudit(*args: str) -> None:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _subprocess(workdir: Path, *command: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_torchrun_ranks_and_job_array_shards_give_the_one_process_result(workdir):
    _robaudit("evaluate", "--config", "audit.yaml", "--out", "single", "--batch-size", "6")
    reference = _outputs(workdir / "single")
    assert len([name for name in reference if not name.startswith("part-check-")]) == 4 + 1

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    _subprocess(workdir, *torchrun, "-m", "robaudit", "evaluate", "--config", "audit.yaml", "--out", "ranks")
    assert _outputs(workdir / "ranks") == reference
    manifest = yaml.safe_load((workdir / "ranks" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and sorted(manifest["shards"]) == ["shard-000-of-002", "shard-001-of-002"]
    claimed = [shard["parts_done"] for shard in manifest["shards"].values()]  # ranks claim parts from one counter
    base = [p.name for p in (workdir / "ranks" / "records").glob("part-*.jsonl") if not p.name.startswith("part-check")]
    assert sorted(sum(claimed, [])) == sorted(base)

    for k in (0, 1):
        _robaudit("evaluate", "--config", "audit.yaml", "--out", "array", "--shard", f"{k}/2")
        if k == 0:  # half the parts: the report merges what exists, names what is missing and fails the gates
            result = CliRunner().invoke(app, ["report", "array", "--gate", "clean_accuracy>=0"])
            assert result.exit_code == 1 and "missing" in result.output
            assert "part-000006-000012.jsonl" in result.output
    # the convergence check waits for every part: the last task starts it; one run without --shard finishes it
    assert any(p.name.startswith("part-check-") for p in (workdir / "single" / "records").iterdir())
    _robaudit("evaluate", "--config", "audit.yaml", "--out", "array")
    _robaudit("report", "array")
    assert _outputs(workdir / "array") == reference
    for _ in range(3):  # or a second pass of the array over the check's parts (each pass goes one stage further)
        for k in (0, 1):
            _robaudit("evaluate", "--config", "audit.yaml", "--out", "array2", "--shard", f"{k}/2")
    _robaudit("report", "array2")
    assert _outputs(workdir / "array2") == reference


def test_a_killed_shard_redoes_only_its_missing_parts(workdir):
    _robaudit("evaluate", "--config", "audit.yaml", "--out", "whole")
    reference = _outputs(workdir / "whole")
    for k in (0, 1):
        _robaudit("evaluate", "--config", "audit.yaml", "--out", "killed", "--shard", f"{k}/2")
    records = workdir / "killed" / "records"
    lost = records / "part-000018-000024.jsonl"  # shard 1's second part: as if its task died before writing it
    lost.unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in records.glob("part-*.jsonl")}
    _robaudit("evaluate", "--config", "audit.yaml", "--out", "killed", "--shard", "1/2")
    assert {p.name: p.stat().st_mtime_ns for p in records.glob("part-*.jsonl") if p.name in kept} == kept
    _robaudit("evaluate", "--config", "audit.yaml", "--out", "killed")  # the convergence check, once every part is done
    _robaudit("report", "killed")
    assert _outputs(workdir / "killed") == reference
