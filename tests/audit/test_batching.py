"""The default batch size: 128 on a CPU; on CUDA, the largest power of two that fits the measured memory."""

from __future__ import annotations

import pytest

from robaudit.engine.batching import CEILING, CPU_DEFAULT, batch_size_for_memory, default_batch_size
from robaudit.engine.config import EvaluateConfig
from toys import NearestMean, toy_data

GIB = 2**30


@pytest.mark.parametrize(
    ("free", "per_sample", "expected"),
    [
        (10 * GIB, 100 * 2**20, 32),  # 60% of 10 GiB holds 61 samples of 100 MiB: 32
        (10 * GIB, 2**20, CEILING),  # thousands fit: capped
        (GIB, 2 * GIB, 1),  # not even one fits: one (out-of-memory halving has nothing left to halve)
        (GIB, 0, CEILING),
        (64 * 2**20, 2**20, 32),  # 38 fit
    ],
)
def test_batch_size_for_memory(free, per_sample, expected):
    assert batch_size_for_memory(free_bytes=free, per_sample_bytes=per_sample) == expected


def test_a_cpu_batch_defaults_to_128_without_measuring():
    images, _, means = toy_data(4)
    assert default_batch_size([NearestMean(means)], images) == CPU_DEFAULT == 128


def test_the_config_leaves_an_unset_batch_size_out_of_its_dict(checkpoint_here):
    mapping = {"model": "m.pt", "data": "digits", "attacks": ["fgsm"]}
    config = EvaluateConfig.parse(mapping)
    assert config.batch_size is None and "batch_size" not in config.resolve().to_dict()
    config = EvaluateConfig.parse({**mapping, "batch_size": 16})
    assert config.resolve().to_dict()["batch_size"] == 16
    with pytest.raises(Exception, match="batch_size must be a positive integer"):
        EvaluateConfig.parse({**mapping, "batch_size": 0})


def test_a_randomized_pipeline_with_batched_draws_counts_its_eot_rows_per_sample():
    from robaudit.engine.batching import gradient_rows
    from robaudit.engine.pipeline import Pipeline
    from robaudit.rng.draw_layout import DrawLayout
    from toys import GaussianNoise, WithCard

    classifier = WithCard(NearestMean(toy_data(4)[2])).eval()
    noisy = lambda layout: Pipeline(classifier, GaussianNoise(0.2), layout=layout)  # noqa: E731
    assert gradient_rows(noisy(DrawLayout()), eot=4)(64) == 4, "a sample's 4 EOT draws sit in one graph"
    assert gradient_rows(noisy(DrawLayout(batched=False)), eot=4)(64) == 1, "looped: one draw at a time"
    assert gradient_rows(noisy(DrawLayout(chunk=128)), eot=4)(64) == 2, "a chunk of 128 rows over 64 samples"
    assert gradient_rows(Pipeline(classifier), eot=4)(64) == 1, "a deterministic pipeline draws once"
