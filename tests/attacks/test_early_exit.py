"""Early exit and ``autoattack`` version ``fast`` never raise robust accuracy: tiny deterministic models, the same
images, with and without them; their passes are counted at the classifier."""

from __future__ import annotations

import pytest
import torch

from robaudit.attacks import build_attack, predict, resolve_attack, run_attack
from robaudit.attacks.methods.apgd import targets_by_linear_estimate
from robaudit.attacks.selection import BestSoFar, EarlyExit, Judged, Verdict
from robaudit.engine.passes import PassCount, PassCounter
from toys import NearestMean, WithCard, streams, toy_data

EPS = 0.12  # on these toy images: about half the samples fall


@pytest.fixture(scope="module")
def toy() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    images, labels, means = toy_data(60, spread=0.15)
    return WithCard(NearestMean(means)).eval(), images, labels


def attacked(model, images, labels, name: str, params: dict) -> tuple[torch.Tensor, PassCount]:
    """(per-sample still-correct mask (N,), the passes the attack spent)."""
    resolved = resolve_attack(name, params, eps=EPS, eps_l2=0.5)
    attack = build_attack(resolved, model, num_classes=10, seed=0)
    counter = PassCounter(model, [])
    with counter.charge("attack"):
        adversarial = run_attack(attack, resolved, images, labels, rng=streams(len(labels)), seed=0)
    assert (adversarial - images).abs().max() <= EPS + 1e-6
    return predict(model, adversarial) == labels, counter.take("attack")


CASES = {
    "pgd": ("pgd", {"steps": 30}),
    "pgd-restarts": ("pgd", {"steps": 10, "restarts": 3}),
    "autoattack": ("autoattack", {"version": "standard", "steps": 20, "n_queries": 300}),
    "autoattack-fast": ("autoattack", {"version": "fast", "steps": 20, "n_queries": 300}),
}


@pytest.mark.parametrize("case", CASES)
def test_early_exit_never_raises_robust_accuracy_and_saves_passes(toy, case):
    model, images, labels = toy
    name, params = CASES[case]
    robust_full, passes_full = attacked(model, images, labels, name, {**params, "early_exit": False})
    robust_exit, passes_exit = attacked(model, images, labels, name, params)
    assert 0 < int(robust_full.sum()) < len(labels), "the budget must leave something to measure"
    assert not (robust_exit & ~robust_full).any(), "a sample early exit left standing fell without it"
    assert robust_exit.sum() <= robust_full.sum()
    assert passes_exit.backward < passes_full.backward
    assert passes_exit.forward < passes_full.forward


def test_fast_autoattack_reaches_the_standard_verdict_with_five_times_fewer_passes(toy):
    model, images, labels = toy
    robust_standard, passes_standard = attacked(model, images, labels, "autoattack", {"version": "standard"})
    robust_fast, passes_fast = attacked(model, images, labels, "autoattack", {"version": "fast"})
    assert int(robust_fast.sum()) <= int(robust_standard.sum()) + 1
    total = lambda p: p.forward + p.backward  # noqa: E731
    assert total(passes_standard) >= 5 * total(passes_fast), (passes_standard, passes_fast)


def test_fast_autoattack_states_its_budget():
    resolved = resolve_attack("autoattack", {"version": "fast"}, eps=EPS, eps_l2=0.5)
    budget = lambda a: tuple(a.params[k] for k in ("n_target_classes", "n_queries", "steps"))  # noqa: E731
    assert budget(resolved) == (3, 1000, 50)
    assert budget(resolve_attack("autoattack", {"version": "standard"}, eps=EPS, eps_l2=0.5)) == (9, 5000, 100)


class FoolsStepDrawsOnly(torch.nn.Module):
    """A randomized model whose verdicts alternate draw by draw: wrong on a sample's even draws, right on its odd
    ones. Its draws run as rows (``draw_layout``: sample-major, a sample's draws together), so the row's parity is
    the draw's."""

    randomized = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 3)
        wrong = torch.arange(x.shape[0]) % 2 == 0
        logits[wrong, 1] = 1.0
        logits[~wrong, 0] = 1.0
        return logits


def test_on_a_randomized_model_a_sample_leaves_only_when_fresh_selection_draws_confirm():
    images, labels = torch.rand(2, 3, 4, 4), torch.zeros(2, dtype=torch.long)
    model = FoolsStepDrawsOnly()
    best = BestSoFar(images)
    index = torch.arange(2)
    kept = best.update(index, images + 0.01, Verdict(torch.zeros(2), torch.ones(2)))  # fooled in its step's draws
    done = EarlyExit(model, labels, streams(2), draws=2, enabled=True)
    assert torch.equal(done.active(best, index, kept), index), "one fresh draw is still correct: not settled"
    deterministic = EarlyExit(torch.nn.Identity(), labels, streams(2), draws=1, enabled=True)
    assert deterministic.active(best, index, kept).numel() == 0


def test_linear_targeting_ranks_classes_by_their_exact_distance_on_a_linear_model(toy):
    """A linear model makes the estimate exact: the Linf distance to the y/j boundary, (z_y - z_j) / |w_y - w_j|_1."""
    model, images, labels = toy
    ranking = targets_by_linear_estimate(model, images, labels, streams(len(labels)), norm="Linf")
    with torch.no_grad():
        weight, logits = model.inner.fc.weight, model(images)
    by_logits = 0
    for i in range(len(labels)):
        y = int(labels[i])
        distance = {
            j: float((logits[i, y] - logits[i, j]) / (weight[y] - weight[j]).abs().sum()) for j in range(10) if j != y
        }
        assert ranking[i, 0] == y
        assert int(ranking[i, 1]) == min(distance, key=distance.get)
        by_logits += int(ranking[i, 1]) != int(logits[i].scatter(0, labels[i : i + 1], -torch.inf).argmax())
    assert by_logits > 0, "the toy must hold samples where the nearest class is not the runner-up"


@pytest.mark.parametrize("run", ["ce", "targeted-logits", "targeted-linear"])
def test_apgd_early_exit_keeps_every_success_of_the_full_run(toy, run):
    """An APGD run, untargeted and targeted, where samples fall mid-run: the ones that fall without early exit fall
    with it (the targeted runs keep each sample's own target as the active set shrinks)."""
    from robaudit.attacks.methods.apgd import APGDRun

    model, images, labels = toy
    kwargs = {"ce": {}, "targeted-logits": {"target_rank": 2}, "targeted-linear": {"target_rank": 2}}[run]
    targeting = "linear" if run.endswith("linear") else "logits"
    fooled = {}
    for early_exit in (False, True):
        apgd = APGDRun(model, norm="Linf", eps=EPS, steps=20, eot=1, early_exit=early_exit, targeting=targeting)
        for key, value in kwargs.items():
            setattr(apgd, key, value)
        counter = PassCounter(model, [])
        with counter.charge("run"):
            best = apgd(images, labels, streams(len(labels)))[0]
        best = best.images if isinstance(best, Judged) else best
        fooled[early_exit] = (predict(model, best) != labels, counter.take("run").backward)
    assert 0 < int(fooled[False][0].sum()) < len(labels)
    assert not (fooled[False][0] & ~fooled[True][0]).any()
    assert fooled[True][1] < fooled[False][1], "no sample settled mid-run: the test would not see a shrinking set"


@pytest.mark.parametrize("name", ["pgd", "autoattack"])
def test_verdicts_taken_during_a_run_are_reused_on_a_deterministic_model(toy, name, monkeypatch):
    """The cascade keeps the verdicts a run's own float32 passes gave its candidates instead of judging them again:
    the same adversarial images, fewer forward passes."""
    import robaudit.attacks.methods.apgd as apgd_module
    import robaudit.attacks.methods.pgd as pgd_module
    import robaudit.attacks.selection as selection_module

    model, images, labels = toy
    params = {"steps": 10} if name == "pgd" else {"version": "fast", "steps": 10, "n_queries": 50}
    results = {}
    for reuse in (True, False):
        if not reuse:
            for module in (pgd_module, apgd_module, selection_module):
                monkeypatch.setattr(module, "reusable_verdicts", lambda *_: False)
        resolved = resolve_attack(name, {**params, "early_exit": False}, eps=EPS, eps_l2=0.5)
        attack = build_attack(resolved, model, num_classes=10, seed=0)
        counter = PassCounter(model, [])
        with counter.charge("run"):
            adversarial = run_attack(attack, resolved, images, labels, rng=streams(len(labels)), seed=0)
        results[reuse] = (adversarial, counter.take("run").forward)
    assert torch.equal(results[True][0], results[False][0])
    assert results[True][1] < results[False][1]
