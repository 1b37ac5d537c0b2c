"""Certification inside ``robaudit evaluate``: a bad ``certify:`` is one line with exit 2 before any work, a run
writes the certified side of the bracket (records, summary, report, gate), and its records do not depend on the batch
size or on how the run is sharded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from robaudit.cli import app
from tiny import TINY_RECIPES

runner = CliRunner()
TINY_CERTIFY = {"sigma": [0.25, 0.5], "n0": 10, "n": 120, "alpha": 0.01, "batch": 64, "steps": 3, "eot": 2}


@pytest.mark.parametrize(
    ("certify", "message"),
    [
        ({"sigma": [0.0]}, "certify.sigma must be positive"),
        ({"n0": 500, "n": 100}, "1 <= n0 <= n"),
        ({"alpha": 1.5}, r"certify.alpha must lie in \(0, 1\)"),
        ({"sigmas": [0.5]}, "unknown key 'sigmas' in certify"),
        ({"mode": "adaptive"}, "certify.mode must be one of sequential, fixed"),
        ({"stop": "soon"}, "certify.stop must be one of decisions, radius"),
        ({"n0": 0}, "certify.n0 must be a positive integer"),
        ({"steps": -1}, "certify.steps must be at least 0"),
        ({"radius_tolerance": 0}, "radius_tolerance is a fraction of sigma"),
    ],
)
def test_a_bad_certify_section_is_one_line_with_exit_2(tmp_path, certify, message):
    config = tmp_path / "audit.yaml"
    config.write_text(yaml.safe_dump({"model": str(tmp_path / "m.pt"), "data": "digits", "certify": certify}))
    result = runner.invoke(app, ["evaluate", "--config", str(config)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert re.search(message, result.output), result.output


def test_a_purifier_that_cannot_certify_is_refused(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"never read")
    args = ["evaluate", "--model", str(tmp_path / "m.pt"), "--data", "digits", "--purifier", "cold", "--certify"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "purifier 'cold' cannot certify" in result.output and "ddpm" in result.output


def certified_run(model: Path, out: Path, *extra: str, certify: dict | None = None) -> dict:
    """Run a tiny certified evaluate into ``out``; its summary."""
    config = out.parent / f"{out.name}.yaml"
    config.write_text(yaml.safe_dump({"certify": certify or TINY_CERTIFY}))
    args = ["evaluate", "--config", str(config), "--model", str(model), "--data", "digits", "--limit", "6"]
    result = runner.invoke(app, [*args, "--attacks", "fgsm", "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / "summary.json").read_text())


def assert_bracketed(result: dict, *, alpha: float) -> None:
    """Certified accuracy does not exceed the empirical robust accuracy of the same smoothed classifier beyond the
    samples whose certificate the attack broke (at most about an alpha share of the certified ones)."""
    certified, empirical = result["certified_accuracy"]["successes"], result["empirical_accuracy"]["successes"]
    assert certified <= empirical + len(result["inconsistent"])
    assert len(result["inconsistent"]) <= max(1, round(10 * alpha * result["certified_samples"]))


def records_of(out: Path) -> list[str]:
    """The certification records of a run, one JSON line each, in part order."""
    return [line for part in sorted((out / "certified").glob("part-*.jsonl")) for line in part.read_text().splitlines()]


def test_a_run_without_purifier_certifies_the_noisy_classifier(tmp_path, digits_model_path):
    summary = certified_run(digits_model_path, tmp_path / "run")
    certified = summary["certified"]
    assert [r["smoothed"] for r in certified["results"]] == ["none@0.25", "none@0.5"]
    for result in certified["results"]:
        fixed = {"forward": 10 + 120 + 3 * 2 + 120, "backward": 6, "purifier": 0, "purifier_backward": 0}
        assert result["n_samples"] == 6 and result["fixed_passes_per_sample"] == fixed
        passes = result["passes_per_sample"]
        assert passes == pytest.approx(result["counted_passes_per_sample"]), "the hooks count what the records say"
        assert 10 + 3 * 2 < passes["forward"] <= fixed["forward"] and passes["backward"] == 6
        assert result["passes_max"]["forward"] >= passes["forward"] and 0 <= result["decided_early"] <= 1
        assert sum(result["stopped"].values()) == 6 and set(result["stopped"]) <= {
            "decided",
            "n_max",
            "wrong class",
            "not certifiable within n",
        }
        assert result["certified_accuracy"]["value"] <= result["smoothed_clean_accuracy"]["value"]
        assert_bracketed(result, alpha=TINY_CERTIFY["alpha"])
        assert result["curve"][0]["radius"] == 0.0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Certified robustness (randomized smoothing)" in report and "none@0.5" in report
    assert "What the certification cost (sequential mode)" in report and "decided before 120 draws" in report
    assert "each certificate holding with probability at least 0.99" in certified["statement"]
    assert "until it was decided at 0.5" in certified["statement"]
    assert "betting confidence sequence" in certified["statement"]
    assert (tmp_path / "run" / "plots" / "6-certified.png").is_file()
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Certified robustness (randomized smoothing)" in html and 'alt="6-certified"' in html
    gate = runner.invoke(app, ["report", str(tmp_path / "run"), "--gate", "certified_accuracy[none@0.5] >= 0"])
    assert gate.exit_code == 0, gate.output
    missing = runner.invoke(app, ["report", str(tmp_path / "run"), "--gate", "certified_accuracy[ddpm@0.5] >= 0"])
    assert missing.exit_code == 2 and "certified no 'ddpm@0.5'" in missing.output


def test_certified_records_do_not_depend_on_the_batch_size_or_the_shards(tmp_path, digits_model_path):
    certified_run(digits_model_path, tmp_path / "one", "--part-size", "4")
    certified_run(digits_model_path, tmp_path / "batch", "--part-size", "4", certify={**TINY_CERTIFY, "batch": 7})
    for shard in ("0/2", "1/2"):
        config = tmp_path / "sharded.yaml"
        config.write_text(yaml.safe_dump({"certify": TINY_CERTIFY}))
        args = ["evaluate", "--config", str(config), "--model", str(digits_model_path), "--data", "digits"]
        args += ["--limit", "6", "--attacks", "fgsm", "--part-size", "4", "--out", str(tmp_path / "sharded")]
        result = runner.invoke(app, [*args, "--shard", shard])
        assert result.exit_code == 0, result.output
    assert records_of(tmp_path / "one") == records_of(tmp_path / "batch") == records_of(tmp_path / "sharded")
    assert len(records_of(tmp_path / "one")) == 12
    stops = {json.loads(line)["estimation_draws"] for line in records_of(tmp_path / "one")}
    assert len(stops) > 1, f"the samples should stop at different draws: {stops}"


def test_a_ddpm_purifier_certifies_through_its_one_shot_denoiser(tmp_path, digits_model_path):
    config = tmp_path / "audit.yaml"
    purifier = {"name": "ddpm", "recipe": {**TINY_RECIPES["ddpm"], "epochs": 1}, "steps": 2}
    config.write_text(yaml.safe_dump({"purifiers": [purifier], "threats": ["non-adaptive"], "certify": TINY_CERTIFY}))
    args = ["evaluate", "--config", str(config), "--model", str(digits_model_path), "--data", "digits"]
    result = runner.invoke(app, [*args, "--limit", "4", "--attacks", "fgsm", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "run" / "summary.json").read_text())["certified"]["results"]
    assert [r["smoothed"] for r in results] == ["ddpm@0.25", "ddpm@0.5"]  # through the purifier, not noise alone
    passes = {"forward": 256, "backward": 6, "purifier": 256, "purifier_backward": 6}
    assert all(r["fixed_passes_per_sample"] == passes for r in results)
    assert all(r["passes_per_sample"] == pytest.approx(r["counted_passes_per_sample"]) for r in results)
    for smoothed in results:
        assert_bracketed(smoothed, alpha=TINY_CERTIFY["alpha"])
    shown = " ".join(result.output.split())
    assert "certified ddpm@0.5 at L2 0.5" in shown and "attacked (upper bound)" in shown


def test_fixed_mode_draws_n_for_every_sample_and_the_hooks_count_them(tmp_path, digits_model_path):
    summary = certified_run(digits_model_path, tmp_path / "fixed", certify={**TINY_CERTIFY, "mode": "fixed"})
    for result in summary["certified"]["results"]:
        fixed = {"forward": 10 + 120 + 3 * 2 + 120, "backward": 6, "purifier": 0, "purifier_backward": 0}
        assert (
            result["passes_per_sample"]
            == fixed
            == result["counted_passes_per_sample"]
            == result["fixed_passes_per_sample"]
        )
        assert result["stopped"] == {"fixed n": 6} and result["decided_early"] == 0
    assert {json.loads(line)["estimation_draws"] for line in records_of(tmp_path / "fixed")} == {120}
    assert "Every sample drew 120 estimation draws (fixed n)" in summary["certified"]["statement"]
