"""``--precision bf16`` and ``--compile`` through the CLI: verdicts stay float32, disagreements are counted, compile
changes no record, and a bad precision is a one-line error."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from robaudit.attacks.precision import attack_precision
from robaudit.attacks.selection import judge
from robaudit.cli import app
from toys import NearestMean, streams, toy_data

runner = CliRunner()


def evaluate(model, out, *extra):
    args = ["evaluate", "--model", model, "--data", "digits", "--attacks", "fgsm,pgd", "--limit", 16, "--out", out]
    return runner.invoke(app, [str(a) for a in [*args, *extra]], catch_exceptions=False)


def records(run) -> list[str]:
    return [p.read_text() for p in sorted((run / "records").glob("part-*.jsonl"))]


@pytest.mark.slow
def test_bf16_counts_disagreements_and_compile_changes_no_record(digits_model_path, tmp_path):
    assert evaluate(digits_model_path, tmp_path / "fp32").exit_code == 0
    result = evaluate(digits_model_path, tmp_path / "bf16", "--precision", "bf16")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "bf16" / "summary.json").read_text())
    assert set(summary["precision_disagreements"]) == {"fgsm|none|none", "pgd|none|none"}
    for counts in summary["precision_disagreements"].values():
        assert 0 <= counts["disagreed"] <= counts["compared"] <= 16
    assert "## Reduced precision" in (tmp_path / "bf16" / "report.md").read_text()
    assert "precision_disagreements" not in json.loads((tmp_path / "fp32" / "summary.json").read_text())
    result = evaluate(digits_model_path, tmp_path / "compiled", "--compile")
    assert result.exit_code == 0, result.output
    assert records(tmp_path / "compiled") == records(tmp_path / "fp32")


def test_an_unknown_precision_is_a_one_line_error(digits_model_path, tmp_path):
    result = evaluate(digits_model_path, tmp_path / "run", "--precision", "fp8")
    assert result.exit_code == 2
    assert "precision must be one of fp32, bf16; got 'fp8'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_judge_is_float32_under_autocast():
    images, labels, means = toy_data(40)
    model = NearestMean(means).eval()
    outside = judge(model, images, labels, draws=1, rng=streams(40))
    with attack_precision("bf16", images.device):
        inside = judge(model, images, labels, draws=1, rng=streams(40))
        assert model(images).dtype == torch.bfloat16, "autocast must be on for the test to mean anything"
    assert torch.equal(inside.correct_fraction, outside.correct_fraction) and torch.equal(inside.loss, outside.loss)


def test_bf16_covers_the_purifier_network_and_counts_a_randomized_pipelines_disagreements():
    """Under ``--precision bf16`` a purifier's network runs in bfloat16 too; a randomized pipeline's final verdicts
    are compared with float32 on one shared draw (the same streams), not skipped."""
    from robaudit.attacks.precision import disagreements
    from robaudit.engine.passes import purifier_network
    from robaudit.engine.pipeline import Pipeline
    from toys import DdpmOnToys, WithCard

    images, labels, means = toy_data(12)
    purifier = DdpmOnToys().eval()
    pipeline = Pipeline(WithCard(NearestMean(means)), purifier).eval()
    seen = []
    purifier_network(purifier.ddpm).register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    with attack_precision("bf16", images.device):
        pipeline(images, rng=streams(12))
    assert torch.bfloat16 in seen, "the purifier's network ran under autocast"
    disagreed, compared = disagreements(pipeline, images, labels, precision="bf16")
    assert compared == 12 and 0 <= disagreed <= 12
    assert disagreements(pipeline, images, labels, precision="fp32") == (0, 0)
