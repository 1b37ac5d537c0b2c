"""Pass accounting: classifier forward/backward passes and purifier network evaluations, counted where they happen,
per condition, the same for every batch size."""

from __future__ import annotations

import torch
from torch import nn

from robaudit.attacks import resolve_attack
from robaudit.engine.passes import PassCounter
from toys import toy_part_output


def test_the_counter_counts_samples_through_the_classifier_only_while_charged():
    classifier = nn.Linear(4, 3)
    purifier = nn.Identity()
    counter = PassCounter(classifier, [purifier])
    x = torch.randn(5, 4, requires_grad=True)
    classifier(x)  # not charged: not counted
    with counter.charge("a"):
        classifier(purifier(x)).sum().backward()
        with torch.no_grad():
            classifier(x[:2])
    assert counter.take("a").to_dict() == {
        "forward": 7,
        "backward": 5,
        "purifier": 5,
        "purifier_backward": 0,
        "scoring": 0,
    }
    assert counter.take("a").to_dict() == {
        "forward": 0,
        "backward": 0,
        "purifier": 0,
        "purifier_backward": 0,
        "scoring": 0,
    }
    PassCounter(classifier, [purifier])  # a new counter replaces the old hooks: nothing is counted twice
    with counter.charge("b"):
        classifier(x)
    assert counter.take("b").forward == 0


def _timings(batch_size: int, *, steps: int = 4, n: int = 12) -> dict[str, dict[str, float]]:
    attack = resolve_attack("pgd", {"steps": steps, "restarts": 2}, eps=0.05, eps_l2=0.5)
    timings = toy_part_output([attack], batch_size, n=n).timings
    return {key: {k: v for k, v in entry.items() if k not in ("seconds", "samples")} for key, entry in timings.items()}


def test_passes_are_exact_counts_that_do_not_depend_on_the_batch_size():
    small, large = _timings(4), _timings(12)
    assert small == large
    clean = large["none|none|none"]
    assert clean == {
        "forward": 12,
        "backward": 0,
        "purifier": 0,
        "purifier_backward": 0,
        "scoring": 12,
        "evaluated": 12,
    }
    assert large["none|noise|none"]["forward"] == 3 * 12 == large["none|noise|none"]["purifier"]  # 3 draws
    undefended, adaptive = large["pgd|none|none"], large["pgd|noise|adaptive"]
    assert undefended["backward"] > 0 and undefended["purifier"] == 0
    assert adaptive["purifier"] > 0 and adaptive["backward"] > 0  # gradients flow through the purifier
    shared = large["pgd|noise|non-adaptive"]  # the undefended attack's examples, scored through the purifier
    assert shared["backward"] == undefended["backward"]


def test_more_steps_cost_more_passes():
    assert _timings(12, steps=8)["pgd|none|none"]["backward"] > _timings(12, steps=4)["pgd|none|none"]["backward"]


def test_scoring_draws_only_the_attacked_samples():
    """A sample wrong in every clean draw is not attacked and keeps its clean predictions: no scoring draw is spent
    on it (scoring the others draws the same values: every sample has its own stream). Through a noise purifier
    (3 repeats), each condition's scoring draws are 1 per attacked sample, and 2 more for those the first found
    correct (``score_chosen``)."""
    from robaudit.engine.execute import PartExecutor
    from robaudit.engine.pipeline import Pipeline
    from robaudit.engine.plan import AuditPlan, Defense, Part
    from toys import GaussianNoise, NearestMean, WithCard, toy_data, toy_imageset

    images, labels, means = toy_data(12, seed=4)
    labels[:3] = (labels[:3] + 1) % 10  # three samples the classifier gets wrong whatever the noise
    classifier = WithCard(NearestMean(means)).eval()
    noise = GaussianNoise(0.05)
    defenses = [Defense("noise", noise, 3, ["adaptive"], Pipeline(classifier, noise))]
    defenses.insert(0, Defense("none", None, 1, ["none"], Pipeline(classifier)))
    attacks = [resolve_attack("pgd", {"steps": 3}, eps=0.1, eps_l2=0.5)]
    plan = AuditPlan(attacks, defenses, seed=1, eot=2, draws=2, num_samples=12, part_size=12)
    executor = PartExecutor(plan, classifier, device=torch.device("cpu"), batch_size=12)
    spent = {}
    original = executor.score_repeats

    def counting(defense, scored, batch, key, index=None, repeats=None):
        spent[key] = spent.get(key, 0) + len(scored) * len(repeats or range(defense.repeats))
        return original(defense, scored, batch, key, index, repeats)

    executor.score_repeats = counting
    records = executor(toy_imageset(images, labels), Part(0, 0, 12), lambda status: None).records
    for key, repeats in (("pgd|none|none", 1), ("pgd|noise|adaptive", 3)):
        attacked = {r["sample_id"] for r in records if r["condition"] == key and r["attacked"]}
        assert len(attacked) == 9, "the three mislabelled samples are not attacked"
        first_right = {r["sample_id"] for r in records if r["condition"] == key and r["repeat"] == 0 and r["correct"]}
        assert spent[key] == len(attacked) + (repeats - 1) * len(first_right & attacked), key
        assert all(r["pred"] == r["clean_pred"] for r in records if r["condition"] == key and not r["attacked"])
