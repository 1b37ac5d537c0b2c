"""The CLI through typer's CliRunner: train -> attack -> evaluate -> report, and bad inputs (exit code 2)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from robaudit.attacks import ATTACKS
from robaudit.cli import app
from robaudit.purifiers import PURIFIERS

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_train_attack_evaluate_report_chain(workdir):
    recipe = workdir / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"arch_kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 2}, "epochs": 2}))
    result = invoke("train", "--data", "digits", "--out", "vit.pt", "--config", recipe)
    assert result.exit_code == 0, result.output
    result = invoke("attack", "--model", "vit.pt", "--data", "digits", "--attack", "pgd", "--out", "adv", "--limit", 24)
    assert result.exit_code == 0, result.output
    manifest = json.loads((workdir / "adv" / "manifest.json").read_text())
    assert manifest["provenance"]["attack"]["name"] == "pgd" and manifest["num_samples"] == 24
    result = invoke("evaluate", "--model", "vit.pt", "--data", "adv", "--out", "run-adv")
    assert result.exit_code == 0, result.output
    summary = json.loads((workdir / "run-adv" / "summary.json").read_text())
    assert summary["attacks"] == [] and summary["n_samples"] == 24
    assert "robaudit attack" in (workdir / "run-adv" / "report.md").read_text()

    result = invoke(
        "evaluate", "--model", "vit.pt", "--data", "digits", "--attacks", "fgsm,pgd", "--limit", 24, "--out", "run"
    )
    assert result.exit_code == 0, result.output
    run = workdir / "run"
    for name in ("config.yaml", "manifest.json", "summary.json", "results.csv", "report.md"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["schema"] == "robaudit.summary" and summary["schema_version"] == 5 and summary["complete"]
    pgd = summary["attacks"][1]
    assert pgd["label"] == "pgd" and pgd["max_linf"] <= 8 / 255 + 1e-6
    assert summary["worst_case"]["robust_accuracy"]["value"] <= min(
        a["robust_accuracy"]["value"] for a in summary["attacks"]
    )
    report, results = (run / "report.md").read_text(), (run / "results.csv").read_text()
    (run / "report.md").unlink()
    (run / "results.csv").unlink()
    result = invoke("report", run)
    assert result.exit_code == 0, result.output
    assert (run / "report.md").read_text() == report and (run / "results.csv").read_text() == results

    template = workdir / "short.md.j2"
    template.write_text("clean={{ summary.clean_accuracy.value }}\n")
    assert invoke("report", run, "--template", template).exit_code == 0
    assert (run / "short.md").read_text().startswith("clean=")

    # The same command resumes (nothing to redo) and gives the same records.
    records = sorted((run / "records").glob("*.jsonl"))
    before = [p.read_text() for p in records]
    result = invoke(
        "evaluate", "--model", "vit.pt", "--data", "digits", "--attacks", "fgsm,pgd", "--limit", 24, "--out", "run"
    )
    assert result.exit_code == 0 and [p.read_text() for p in records] == before


def test_ls():
    result = invoke("ls", "attacks")
    assert result.exit_code == 0 and "autoattack" in result.output and "square" in result.output
    assert "digits" in invoke("ls", "datasets").output
    assert "vit" in invoke("ls", "architectures").output
    assert "hf-hub:" in invoke("ls", "models").output
    listing = invoke("ls", "purifiers").output
    assert all(name in listing for name in ("ddpm", "cold", "ebm", "mae"))


def _bad(*args):
    result = invoke(*args)
    output = result.output.strip()
    assert result.exit_code == 2, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.fixture()
def model(digits_model_path, workdir):
    shutil.copy(digits_model_path, workdir / "m.pt")
    return "m.pt"


def test_bad_inputs(model, workdir, binary_model_path):
    assert "does not exist" in _bad("evaluate", "--model", "missing.pt", "--data", "digits")
    assert "neither a registered dataset" in _bad("evaluate", "--model", model, "--data", "nowhere/")
    line = _bad("evaluate", "--model", model, "--data", "digits", "--attacks", "pdg")
    assert f"valid: {', '.join(ATTACKS.names())}" in line and "did you mean 'pgd'" in line
    assert "unknown dataset" not in _bad("evaluate", "--model", model, "--data", "digitz")
    (workdir / "bad.yaml").write_text("model: m.pt\ndata: digits\nattack: [pgd]\n")
    assert "unknown key 'attack'" in _bad("evaluate", "--config", "bad.yaml")
    (workdir / "broken.yaml").write_text("model: [m.pt\n")
    assert "broken.yaml" in _bad("evaluate", "--config", "broken.yaml")
    assert "does not parse" in _bad("evaluate", "--model", model, "--data", "digits", "--eps", "8/2x5")
    assert "must be finite and > 0" in _bad("evaluate", "--model", model, "--data", "digits", "--eps", "-1")
    assert "pass --image-size 32" in _bad("evaluate", "--model", model, "--data", "digits", "--image-size", "16")
    assert "pass --channels 1" in _bad("evaluate", "--model", model, "--data", "digits", "--channels", "3")
    shutil.copy(binary_model_path, workdir / "binary.pt")
    line = _bad("evaluate", "--model", "binary.pt", "--data", "digits", "--limit", "20")
    assert "outside the model's 2 classes" in line
    (workdir / "taken.txt").write_text("keep me")
    assert "existing file" in _bad("evaluate", "--model", model, "--data", "digits", "--limit", 4, "--out", "taken.txt")
    assert (workdir / "taken.txt").read_text() == "keep me"
    np.savez(workdir / "labels.npz", test_images=np.zeros((3, 32, 32), np.uint8), test_labels=np.array([0, 11, 2]))
    assert "label 11" in _bad("evaluate", "--model", model, "--data", "labels.npz")
    assert f"valid: classifier, {', '.join(PURIFIERS.names())}" in _bad("train", "gan")
    assert "unknown purifier 'ddmp'" in _bad("evaluate", "--model", model, "--data", "digits", "--purifier", "ddmp")
    line = _bad("evaluate", "--model", model, "--data", "digits", "--purifier", "ddpm", "--threat", "adaptiv")
    assert "unknown threat model 'adaptiv'" in line and "did you mean 'adaptive'" in line
    line = _bad(
        "evaluate", "--model", model, "--data", "digits", "--purifier", "ddpm,ebm", "--purifier-checkpoint", "x"
    )
    assert "exactly one purifier" in line
    assert "does not exist" in _bad(
        "evaluate",
        "--model",
        model,
        "--data",
        "digits",
        "--purifier",
        "ddpm",
        "--purifier-checkpoint",
        "missing.pt",
        "--limit",
        2,
    )


def test_debug_shows_traceback(model):
    result = runner.invoke(app, ["--debug", "evaluate", "--model", "missing.pt", "--data", "digits"])
    assert result.exit_code != 0 and result.exception is not None


def test_reports_escape_names_from_files(workdir, digits_model_path):
    import torch

    payload = torch.load(digits_model_path, weights_only=True)
    payload["card"]["class_names"][0] = "<script>alert(1)</script>|**x**"
    torch.save(payload, workdir / "crafted.pt")
    result = invoke(
        "evaluate", "--model", "crafted.pt", "--data", "digits", "--limit", 6, "--attacks", "fgsm", "--out", "run"
    )
    assert result.exit_code == 0, result.output
    markdown = (workdir / "run" / "report.md").read_text()
    html = (workdir / "run" / "report.html").read_text()
    assert "<script>" not in markdown and "\\<script\\>" in markdown and "\\|" in markdown
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # plots embedded (accuracy bars, per class, example gallery): the page is self-contained
    assert html.count("data:image/png;base64,") == 3
    assert (workdir / "run" / "plots" / "4-gallery.png").is_file()


def test_eps_sweep(model, workdir):
    result = invoke(
        "evaluate",
        "--model",
        model,
        "--data",
        "digits",
        "--limit",
        16,
        "--attacks",
        "fgsm,pgd",
        "--eps",
        "2/255,8/255,4/255",
        "--out",
        "sweep",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((workdir / "sweep" / "summary.json").read_text())
    labels = [a["label"] for a in summary["attacks"]]
    assert [label for label in labels if "+x" not in label] == [
        "fgsm",
        "fgsm@0.007843",
        "fgsm@0.01569",
        "pgd",
        "pgd@0.007843",
        "pgd@0.01569",
    ]
    # the headline budget is the largest, 8/255; its convergence check escalates PGD (sweep budgets have none), and
    # its rung has a row only when samples stood for it to re-attack
    [check] = summary["convergence"]
    rung = ["pgd+x2"] if check["stages"] else []
    assert summary["worst_case"]["over"] == ["fgsm", "pgd", *rung] and labels[4:5] == (rung or ["pgd@0.007843"])
    assert {a["eps"] for a in summary["attacks"] if not a.get("sweep")} == {8 / 255}
    assert (workdir / "sweep" / "plots" / "3-robust-vs-eps.png").is_file()
    assert "](plots/3-robust-vs-eps.png)" in (workdir / "sweep" / "report.md").read_text()
