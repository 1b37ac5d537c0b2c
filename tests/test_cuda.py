"""The CUDA path, where a GPU is present: the same audit on the GPU as on the CPU, reproducible from its seed whatever
the batch size, bf16 verdicts judged in float32, compiled models changing no record, and the measured default batch
size. Skipped (with the reason) on machines without CUDA: the rest of the suite covers the same code on the CPU."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.engine.batching import CEILING, default_batch_size
from robaudit.models.classifiers import load_classifier

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run it on a GPU machine)")
runner = CliRunner()


def evaluate(model, out, *extra):
    args = ["evaluate", "--model", model, "--data", "digits", "--attacks", "fgsm,pgd", "--limit", 32, "--eps", "2/255"]
    args += ["--out", out]
    result = runner.invoke(app, [str(a) for a in [*args, *extra]], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def records(run) -> list[dict]:
    lines = [line for p in sorted((run / "records").glob("part-*.jsonl")) for line in p.read_text().splitlines()]
    return sorted((json.loads(line) for line in lines), key=lambda r: (r["condition"], r["sample_id"], r["repeat"]))


def verdicts(run) -> dict:
    return {(r["condition"], r["sample_id"], r["repeat"]): r["correct"] for r in records(run)}


def test_same_seed_same_records_on_cuda_whatever_the_batch_size(digits_model_path, tmp_path):
    first = evaluate(digits_model_path, tmp_path / "a", "--device", "cuda", "--batch-size", 32)
    again = evaluate(digits_model_path, tmp_path / "b", "--device", "cuda", "--batch-size", 32)
    smaller = evaluate(digits_model_path, tmp_path / "c", "--device", "cuda", "--batch-size", 8)
    assert records(first) == records(again), "the same seed on the same GPU gives the same records"
    assert verdicts(first) == verdicts(smaller), "the batch size changes no verdict on CUDA"


def test_cuda_agrees_with_the_cpu(digits_model_path, tmp_path):
    gpu = evaluate(digits_model_path, tmp_path / "gpu", "--device", "cuda")
    cpu = evaluate(digits_model_path, tmp_path / "cpu", "--device", "cpu")
    clean = {key: value for key, value in verdicts(gpu).items() if key[0] == "none|none|none"}
    assert clean and clean == {key: verdicts(cpu)[key] for key in clean}, "clean verdicts are the same on both"
    robust = [json.loads((run / "summary.json").read_text())["worst_case"]["robust_accuracy"] for run in (gpu, cpu)]
    assert abs(robust[0]["successes"] - robust[1]["successes"]) <= 1, robust
    device = json.loads((gpu / "manifest.json").read_text())["device"]
    assert device["type"] == "cuda" and device["name"], device


@pytest.mark.parametrize("flag", [("--precision", "bf16"), ("--compile",)])
def test_bf16_and_compile_on_cuda(digits_model_path, tmp_path, flag):
    plain = evaluate(digits_model_path, tmp_path / "fp32", "--device", "cuda")
    other = evaluate(digits_model_path, tmp_path / "other", "--device", "cuda", *flag)
    summary = json.loads((other / "summary.json").read_text())
    if flag == ("--compile",):
        assert records(other) == records(plain), "compiling changes no record"
    else:
        for counts in summary["precision_disagreements"].values():
            assert 0 <= counts["disagreed"] <= counts["compared"] <= 32


def test_the_default_batch_size_is_measured_on_cuda(digits_model_path):
    model = load_classifier(digits_model_path).cuda().eval()
    images = torch.rand(4, 1, 32, 32, device="cuda")
    size = default_batch_size([model], images)
    assert 1 <= size <= CEILING and size & (size - 1) == 0, size


def test_philox_streams_draw_the_cpus_numbers_on_cuda():
    """Counter-based streams compute the same bits on both devices: uniforms equal, normals within float rounding
    (log, sin and cos kernels), after subsets, splits and a stream drawn twice."""
    from robaudit.rng.sample_rng import SampleRNG

    draws = {}
    for device in ("cpu", "cuda"):
        rng = SampleRNG.for_samples(0, [str(i) for i in range(300)], "x", device=device, engine="philox")
        uniform = rng[[5, 5, 7]].rand(3, 8, 8)
        normal = rng.split(4)[torch.arange(1200, device=device)].randn(3, 32, 32)
        draws[device] = (uniform.cpu(), normal.cpu(), rng.seeds())
    assert torch.equal(draws["cpu"][0], draws["cuda"][0]) and draws["cpu"][2] == draws["cuda"][2]
    torch.testing.assert_close(draws["cuda"][1], draws["cpu"][1], rtol=1e-5, atol=1e-5)


def test_a_randomized_classifier_with_row_draws_on_cuda_gives_the_cpu_verdicts_within_one_sample():
    """A classifier with noise inside, batched with its draws given to rows (``row_draws``) on CUDA with philox
    streams: per condition, the samples robust in every scoring draw are the CPU's within one; and the batch size
    changes no record on CUDA."""
    from robaudit.rng.draw_layout import DrawLayout
    from toys import randomized_part

    def standing(records: list[dict]) -> dict[str, int]:
        robust: dict[tuple[str, str], bool] = {}
        for r in records:
            robust[(r["condition"], r["sample_id"])] = (
                robust.get((r["condition"], r["sample_id"]), True) and r["correct"]
            )
        return {c: sum(v for (k, _), v in robust.items() if k == c) for c in {k for k, _ in robust}}

    cpu = standing(randomized_part(DrawLayout(), n=24, rng="philox", row_draws=True)[0])
    gpu_records = randomized_part(DrawLayout(), n=24, device="cuda", rng="philox", row_draws=True)[0]
    gpu = standing(gpu_records)
    assert cpu.keys() == gpu.keys() and all(abs(cpu[c] - gpu[c]) <= 1 for c in cpu), (cpu, gpu)
    small = randomized_part(DrawLayout(), n=24, batch_size=5, device="cuda", rng="philox", row_draws=True)[0]
    assert small == gpu_records


def test_batched_draws_on_cuda_give_the_cpu_verdicts_within_one_sample():
    """A randomized pipeline's draws in the batch dimension on CUDA (noise inside the classifier, a Gaussian-noise
    ensemble, the tiny DDPM), with philox streams (the CPU's draws): per condition, the samples robust in every
    scoring draw are the CPU's within one, and the looped layout on CUDA gives the batched one's verdicts within one
    (under either engine)."""
    from robaudit.rng.draw_layout import DrawLayout
    from toys import randomized_part

    def robust(records: list[dict]) -> dict[str, int]:
        standing: dict[tuple[str, str], bool] = {}
        for r in records:
            key = (r["condition"], r["sample_id"])
            standing[key] = standing.get(key, True) and r["correct"]
        conditions = {condition for condition, _ in standing}
        return {c: sum(v for (k, _), v in standing.items() if k == c) for c in conditions}

    cpu = robust(randomized_part(DrawLayout(), n=24, rng="philox")[0])
    gpu = robust(randomized_part(DrawLayout(), n=24, device="cuda", rng="philox")[0])
    assert cpu.keys() == gpu.keys() and all(abs(cpu[c] - gpu[c]) <= 1 for c in cpu), (cpu, gpu)
    for engine in ("generator", "philox"):
        batched = robust(randomized_part(DrawLayout(), n=24, device="cuda", rng=engine)[0])
        looped = robust(randomized_part(DrawLayout(batched=False), n=24, device="cuda", rng=engine)[0])
        assert looped.keys() == batched.keys() and all(abs(looped[c] - batched[c]) <= 1 for c in looped), engine


def test_a_compiled_purifier_chain_gives_the_eager_records_on_cuda(digits_model_path, tmp_path):
    """--compile covers the purifier's network too: a randomized purifier audited compiled and eager on CUDA."""
    import yaml

    config = tmp_path / "ddpm.yaml"
    purifier = {"name": "ddpm", "steps": 2, "recipe": {"epochs": 1}}
    draws = {"repeats": 2, "selection_draws": 2, "eot": 2}
    config.write_text(yaml.safe_dump({"purifiers": [purifier], "threats": ["adaptive"], **draws}))
    eager = evaluate(digits_model_path, tmp_path / "eager", "--device", "cuda", "--config", config)
    compiled = evaluate(digits_model_path, tmp_path / "compiled", "--device", "cuda", "--compile", "--config", config)
    assert verdicts(compiled) == verdicts(eager), "compiling the purifier changes no verdict"


def test_a_cuda_generator_stream_fills_its_row_with_what_torch_draws_from_it():
    """``GeneratorRNG`` on CUDA fills row i in place from CUDA generator i (``Tensor.normal_``/``uniform_``): the
    values ``torch.randn``/``torch.rand`` give that generator (the CPU's equality: tests/test_row_draws.py)."""
    from robaudit.rng.sample_rng import GeneratorRNG

    seeds = list(range(7, 19))
    drawn = GeneratorRNG._from_seeds(seeds, torch.device("cuda"))
    generators = [torch.Generator(device="cuda").manual_seed(s) for s in seeds]
    for kind, reference in (("normal", torch.randn), ("uniform", torch.rand)):
        for shape in ((7,), (1, 28, 28), (3, 32, 32)):
            expected = torch.cat([reference((1, *shape), generator=g, device="cuda") for g in generators])
            assert torch.equal(drawn._draw(kind, shape, torch.float32, None), expected), (kind, shape)
