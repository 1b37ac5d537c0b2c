"""The benchmarks' ``--quick`` variants run end to end (their numbers are measured by running them in full)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import REPO, SHARED_DATA

pytestmark = pytest.mark.slow


def bench(name: str):
    """The module of ``bench/NAME.py``, importing its siblings as ``python bench/NAME.py`` does."""
    if str(REPO / "bench") not in sys.path:
        sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_peers_quick_prints_every_row_for_every_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROBAUDIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "rows.json"
    if not (SHARED_DATA / "pneumoniamnist.npz").exists():
        pytest.skip("../shared/data is not beside the project")
    args = ["--quick", "--models", "digits-vit,xray-vit", "--json", str(out), "--work", str(tmp_path / "runs")]
    assert bench("peers").main(args) == 0  # the CIFAR ResNet row is the same code on a third model, left to the bench
    import json

    rows = json.loads(out.read_text())
    assert {r["model"] for r in rows} == {"digits-vit", "xray-vit"}
    assert len(rows) == 2 * 10
    checked = [r for r in rows if r["run"] == "robaudit autoattack standard + check"]
    assert len(checked) == 2 and all("standing" in r["check"] and r["cost vs reference"] > 0 for r in checked)
    for r in rows:
        assert 0 <= r["robust"] <= r["n"] == 8
        assert r["passes"] > 0 and r["seconds"] > 0
    table = capsys.readouterr().out
    assert table.count(" | robaudit autoattack fast + check |") == 4  # each model's table, then the whole one


def test_purifier_nfe_quick_prints_each_setting(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROBAUDIT_CACHE", str(tmp_path / "cache"))
    assert bench("purifier_nfe").main(["--quick"]) == 0
    table = capsys.readouterr().out
    for setting in ("ddpm full chain", "ddim 10", "ddim 5", "ddim 2"):
        assert f"| {setting}" in table
    lines = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0]]
    column = header.index("purifier evals / image (clean)")
    evals = {row[0].strip(): float(row[column]) for row in lines[1:] if row[0].strip() != "setting"}
    ddim = [value for setting, value in evals.items() if setting.startswith("ddim")]
    assert all(value > 0 for value in evals.values()), "the purifier's network evaluations must be counted"
    assert ddim == sorted(ddim, reverse=True), f"fewer DDIM steps, fewer evaluations: {evals}"


def test_purifier_attack_cost_quick_prints_every_recipe_and_the_targets(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROBAUDIT_CACHE", str(tmp_path / "cache"))
    assert bench("purifier_attack_cost").main(["--quick"]) == 0
    table = capsys.readouterr().out
    for purifier, recipe in [("ddpm", "reference"), ("ddpm", "both"), ("ebm", "grafting"), ("ebm", "selective")]:
        assert f"| {purifier} | {recipe} |" in table
    assert "| ebm | surrogate |" not in table, "the DDIM surrogate is DDPM's"
    lines = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0]]
    backward = header.index("purifier backward / sample")
    rows = {(r[0].strip(), r[1].strip()): float(r[backward]) for r in lines[1:] if r[0].strip() != "purifier"}
    assert rows[("ddpm", "default")] > 0, "the quick audit attacked something"
    check = header.index("check")
    verdicts = {(r[0].strip(), r[1].strip()): r[check].strip() for r in lines[1:] if r[0].strip() != "purifier"}
    assert verdicts[("ebm", "default")] == "-" and "certified" in verdicts[("ebm", "default + check")], verdicts
    assert rows[("ddpm", "grafting")] < rows[("ddpm", "default")], "grafting runs the purifier backward less often"
    assert "default + check vs reference" in table and "grafting:" in table and "selective EOT vs" in table
    assert "| ddpm | default (looped draws) |" in table, "the default's twin with its draws one at a time"
    assert "ddpm: draws in the batch dimension:" in table and "counts identical: yes; verdicts identical: yes" in table


def test_throughput_quick_prints_each_cpu_case_with_its_efficiency(tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.setenv("ROBAUDIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "rows.json"
    assert bench("throughput").main(["--quick", "--certify", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    certify = rows.pop()
    assert [r["case"] for r in rows] == ["vit", "vit+ddpm", "vit+ddpm-ancestral", "vit+ebm"]
    for r in rows:
        assert r["device"].startswith("cpu") and r["efficiency"] > 0 and r["audit s"] > 0
        assert r["rng"] == "generator" and 0 <= r["streams s"] <= r["audit s"]
    assert all("purifier evals (fwd/bwd)" in r for r in rows[1:]), "the purifier's evaluations are counted"
    assert certify["case"].startswith("certify") and certify["efficiency"] > 0
    assert certify["seconds_per_certified_sample"] > 0
    assert "| vit+ddpm |" in capsys.readouterr().out


def test_purifier_gradient_memory_measures_less_with_checkpointing(capsys):
    """Both fresh processes run (the bench forces checkpointing on the purifier's evaluated network, on and off)
    and the checkpointed gradient through an 8-step chain grows the peak RSS less than the plain one."""
    assert bench("purifier_gradient_memory").main(["--steps", "8", "--batch", "16"]) == 0
    out = capsys.readouterr().out
    ratio = float(out.split("ratio checkpointed / baseline:")[1].split()[0])
    assert 0 < ratio < 1, out


def test_randomized_peers_quick_prints_every_run_for_every_model(tmp_path, capsys):
    import json

    out = tmp_path / "rows.json"
    assert bench("randomized_peers").main(["--quick", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    runs = ["reference autoattack-rand", "robaudit autoattack", "robaudit autoattack + check", "robaudit pgd + check"]
    assert [(r["model"], r["run"]) for r in rows] == [(m, run) for m in ("noise", "resize", "sap") for run in runs]
    for r in rows:
        assert set(r) >= {"model", "run", "passes", "seconds", "robust_single_draw", "robust_worst_of_n"}
        assert r["passes"] == r["eot"] + r["selection"] + r["scoring"] + r["rung"] > 0
        assert 0 <= r["robust_worst_of_n"] <= r["robust_single_draw"] <= 1, "the worst of 10 includes the first draw"
    assert all(r["rung"] == 0 for r in rows if "check" not in r["run"]), "the rung's passes only where a check ran"
    assert capsys.readouterr().out.count("| robaudit autoattack + check |") == 6  # each model's table, then the whole


def test_certify_cost_quick_prints_every_mode_and_the_targets(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROBAUDIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "rows.json"
    assert bench("certify_cost").main(["--quick", "--json", str(out)]) == 0
    import json

    rows = json.loads(out.read_text())
    assert {(r["mode"], r["sigma"]) for r in rows} == {
        (mode, sigma) for mode in ("fixed", "sequential", "sequential radius") for sigma in (0.25, 0.5)
    }
    keys = {"mode", "sigma", "n_samples", "draws_per_sample", "passes_per_sample", "seconds", "certified_accuracy"}
    assert all(keys <= set(r) and r["n_samples"] == 4 for r in rows)
    fixed = [r for r in rows if r["mode"] == "fixed"]
    assert all(r["draws_per_sample"] == 200 for r in fixed), "fixed n draws n for every sample"
    sequential = {r["sigma"]: r for r in rows if r["mode"] == "sequential"}
    assert all(sequential[r["sigma"]]["passes_per_sample"] <= r["passes_per_sample"] for r in fixed)
    table = capsys.readouterr().out
    assert "decision at eps_l2 0.5" in table and "whole bracket" in table and "radius curve at tolerance" in table


def test_cli_latency_prints_each_mistake_with_its_verdict(capsys):
    """Its target (exit 2, one line, at most 0.5 s) is measured by running it; here every row prints."""
    bench("cli_latency").main(["--repeats", "1"])
    out = capsys.readouterr().out
    assert "robaudit --help:" in out and "(baseline)" in out
    assert "a bad value (eps: 8/O):" in out and "unknown key 'stepz' in attack 'pgd'" in out
    assert out.count("exit 2, 1 line(s)") == 2
