"""Crashes and resumption: evaluate killed with SIGKILL (or stopped with Ctrl-C) resumes to the same records and
summary, byte for byte, as an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import audit_workdir
from robaudit.cli import app

pytestmark = pytest.mark.slow  # end-to-end runs; `pytest -m "not slow"` skips them

CONFIG = {
    "model": "m.pt",
    "data": {"name": "digits", "limit": 40},
    "attacks": ["fgsm", {"name": "pgd", "steps": 30}],
    "batch_size": 5,
    "part_size": 5,
    "device": "cpu",
    "seed": 3,
}
BATCHES = 8


def run_files(run: Path) -> dict[str, bytes]:
    """What must be reproducible: every records part and the summary."""
    files = {p.name: p.read_bytes() for p in sorted((run / "records").glob("part-*.jsonl"))}
    files["summary.json"] = (run / "summary.json").read_bytes()
    return files


def evaluate_command(out: str) -> list[str]:
    return [sys.executable, "-m", "robaudit", "evaluate", "--config", "audit.yaml", "--out", out]


def start_and_kill(workdir: Path, out: str, *, parts: int, sig: int) -> int:
    """Start evaluate in a subprocess, send ``sig`` once ``parts`` record parts exist; the process's exit code."""
    process = subprocess.Popen(
        evaluate_command(out), cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    records = workdir / out / "records"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        done = len(list(records.glob("part-*.jsonl"))) if records.is_dir() else -1
        if done >= parts and (workdir / out / "manifest.json").exists():
            process.send_signal(sig)
            break
        time.sleep(0.002)
    _, stderr = process.communicate(timeout=180)
    assert process.returncode != 0, f"the run finished before it could be stopped; stderr: {stderr[-2000:]}"
    return process.returncode


@pytest.fixture()
def workdir(tmp_path, digits_model_path, monkeypatch):
    return audit_workdir(tmp_path, digits_model_path, CONFIG, monkeypatch)


def resume(out: str) -> None:
    result = CliRunner().invoke(app, ["evaluate", "--config", "audit.yaml", "--out", out], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_sigkill_at_three_points_then_resume_gives_identical_records(workdir):
    resume("reference")
    reference = run_files(workdir / "reference")
    assert len(reference) == BATCHES + 1
    for parts in (0, 3, BATCHES - 1):
        out = f"killed-{parts}"
        assert start_and_kill(workdir, out, parts=parts, sig=signal.SIGKILL) == -signal.SIGKILL
        manifest = yaml.safe_load((workdir / out / "manifest.json").read_text())
        assert manifest["status"] == "running"  # an interrupted run never looks complete
        assert not (workdir / out / "summary.json").exists()
        assert len(list((workdir / out / "records").glob("part-*.jsonl"))) < BATCHES
        resume(out)
        assert run_files(workdir / out) == reference, f"killed after {parts} part(s): resumed records differ"
        assert not list((workdir / out).rglob(".*.tmp"))


def test_ctrl_c_stops_after_the_current_batch_and_marks_the_run_incomplete(workdir):
    code = start_and_kill(workdir, "stopped", parts=1, sig=signal.SIGINT)
    run = workdir / "stopped"
    assert code == 130
    manifest = yaml.safe_load((run / "manifest.json").read_text())
    summary = yaml.safe_load((run / "summary.json").read_text())
    assert manifest["status"] == "interrupted" and not summary["complete"]
    assert summary["samples_done"] < summary["samples_expected"]
    assert "INCOMPLETE RUN" in (run / "report.md").read_text()
    resume("stopped")
    assert yaml.safe_load((run / "summary.json").read_text())["complete"]


def test_out_of_memory_splits_the_batch_and_the_report_says_so(workdir, monkeypatch):
    import torch

    from robaudit.engine.execute import PartExecutor

    evaluate_batch = PartExecutor.batch

    def small_device(self, dataset, start, stop, *args):
        if stop - start > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return evaluate_batch(self, dataset, start, stop, *args)

    monkeypatch.setattr(PartExecutor, "batch", small_device)
    resume("split")
    run = workdir / "split"
    assert len(list((run / "records").glob("part-*.jsonl"))) == BATCHES  # parts follow part_size, not chunks
    summary = yaml.safe_load((run / "summary.json").read_text())
    assert summary["complete"] and summary["n_samples"] == CONFIG["data"]["limit"]
    flag = next(f for f in summary["findings"] if f["check"] == "out-of-memory")
    assert f"{BATCHES} batch(es) were split" in flag["title"] and "chunks of 2" in flag["evidence"]
    assert "ran out of memory" in (run / "report.md").read_text()
    manifest = yaml.safe_load((run / "manifest.json").read_text())
    assert [s["chunk"] for s in manifest["batch_splits"]] == [2] * BATCHES


def test_clean_and_fgsm_records_do_not_depend_on_the_batch_size(workdir):
    """Where no random start or batch-level logic is involved, the batch size changes no record."""
    from robaudit.engine.config import EvaluateConfig
    from robaudit.engine.evaluate import run_evaluation
    from robaudit.runs.rundir import RunDir

    def records(batch_size: int) -> dict:
        mapping = {**CONFIG, "attacks": ["fgsm"], "batch_size": batch_size, "out": f"bs{batch_size}"}
        rows = RunDir(run_evaluation(EvaluateConfig.parse(mapping))).read_records()
        return {(r["sample_id"], r["condition"]): r for r in rows}

    assert records(4) == records(40)
