"""The convergence check that certifies the headline (``convergence: {scope: headline}``, the default).

The sizing rule against scipy's hypergeometric distribution; the loss-trace indicator on toys; a toy whose PGD-5 does
not converge (the check's draw breaks a sample, the rung extends to every standing sample, the headline reads it);
a converged toy (the check passes on at most the sized subset); the first law (the headline never rises with the
check, sample by sample)."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import hypergeom

from robaudit.attacks import build_attack, resolve_attack
from robaudit.attacks.loss_trace import incomplete_optimization, rising_beyond_noise
from robaudit.engine.check import run_check_phase
from robaudit.engine.convergence import ConvergenceSpec, with_rungs
from robaudit.engine.execute import PartExecutor
from robaudit.engine.pipeline import Pipeline
from robaudit.engine.plan import AuditPlan, Defense
from robaudit.headline.check_bound import allowed_fallers, certified_fallers, none_drawn, subset_size
from robaudit.headline.headline_check import plan_check
from robaudit.reporting.convergence import convergence_checks
from robaudit.reporting.results import records_frame, summarize
from robaudit.runs.rundir import RunDir
from toys import NearestMean, WithCard, toy_data, toy_imageset

EPS = 0.2
TINY_STEP = {"steps": 5, "alpha": EPS / 16}  # travels under a third of eps: PGD-10 reaches further, PGD-50 breaks all


@pytest.mark.parametrize("population", [1, 7, 34, 150, 400])
def test_the_sizing_rule_is_the_exact_hypergeometric_bound(population):
    for drawn in range(population + 1):
        expected = max(k for k in range(population - drawn + 1) if hypergeom(population, k, drawn).pmf(0) > 0.05)
        assert certified_fallers(population, drawn) == expected
        for bad in (0, population // 3, population - drawn):
            assert none_drawn(population, bad, drawn) == pytest.approx(hypergeom(population, bad, drawn).pmf(0))
    for allowed in (0, 1, 4, 10):
        m = subset_size(population, allowed)
        assert certified_fallers(population, m) <= allowed
        assert m == 0 or certified_fallers(population, m - 1) > allowed, "the smallest such subset"


def test_known_cases_of_the_sizing_rule():
    assert subset_size(150, 4) == 67  # none of 67 fell: at 95%, at most 4 of 150 would (5 is rejected)
    assert certified_fallers(150, 79) == 3  # the 79 of 150 rejects 4
    assert subset_size(34, 4) == 15 and subset_size(3, 4) == 0
    assert allowed_fallers(0.02, 200) == 4 and allowed_fallers(0.05, 128) == 6


def test_the_loss_trace_flags_a_descent_still_moving_and_not_a_converged_one():
    still = torch.linspace(0, 1, 40).unsqueeze(0)  # the attack's loss still rising at the last step
    converged = torch.cat([torch.linspace(0, 1, 25), torch.ones(15)]).unsqueeze(0)
    noisy_flat = torch.cat([torch.linspace(0, 1, 25), 0.99 + 0.01 * torch.rand(15)]).unsqueeze(0)
    flat = torch.full((1, 40), 3.0)
    flags = incomplete_optimization(torch.cat([still, converged, noisy_flat, flat]))
    assert flags.tolist() == [True, False, False, False]


def test_on_a_randomized_pipeline_the_trace_is_flagged_when_it_rises_beyond_its_noise():
    """EOT losses are noisy: noise alone keeps lifting a running best, so a noisy trace is flagged only when its
    loss rises beyond its own noise over the last 10 steps (on Gaussian noise: 4% flagged; the running best: 37%)."""
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(20000, 20, generator=g)
    rising = torch.linspace(0, 10, 20) + torch.randn(20000, 20, generator=g)
    assert rising_beyond_noise(noise).float().mean() < 0.06 < 0.3 < incomplete_optimization(noise).float().mean()
    assert rising_beyond_noise(rising).float().mean() > 0.9  # a rise of 2.6 noise deviations over the window


class GradientMasked(torch.nn.Module):
    """The nearest-mean toy behind a stop-gradient: the input gets no gradient, so white-box attacks only move a
    sample by their random start; a black-box search (Square) still breaks it."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.detach()) + 0 * x.sum()


def run_audit(
    tmp_path,
    params: dict,
    spec: ConvergenceSpec | None,
    *,
    eps: float = EPS,
    n: int = 120,
    batch: int = 64,
    name: str = "pgd",
    masked: bool = False,
):
    """A run directory of attack ``name`` (PGD; ``params``) on the nearest-mean toy (behind a stop-gradient with
    ``masked``) with the headline check ``spec`` (None: off): base parts by the executor, then the check's phase;
    returns (records, summary, outcomes)."""
    images, labels, means = toy_data(n, seed=3, spread=0.12)
    inner = NearestMean(means, scale=10.0)
    classifier = WithCard(GradientMasked(inner) if masked else inner).eval()
    attack = resolve_attack(name, params, eps=eps, eps_l2=0.5)
    spec = spec or ConvergenceSpec(mode="off")
    attacks = with_rungs([attack], spec)
    plan = AuditPlan(attacks, [Defense("none", None, 1, ["none"], Pipeline(classifier))], 0, 1, 1, n, 40)
    executor = PartExecutor(plan, classifier, device=torch.device("cpu"), batch_size=batch)
    dataset, run_dir = toy_imageset(images, labels), RunDir(tmp_path)
    run_dir.prepare(fingerprint="toy", overwrite=False)
    config = {"attacks": [a.to_dict() for a in attacks], "convergence": spec.to_dict(), "seed": 0, "part_size": 40}
    run_dir.write_config(config)
    for part in plan.parts():
        output = executor(dataset, part, lambda status: None)
        run_dir.write_timings(part.name, output.timings)
        run_dir.write_part(part.name, output.records)
    assert run_check_phase(executor, dataset, run_dir=run_dir, claim=lambda parts, key: parts, wait=lambda: None)
    records = run_dir.read_records()
    summary = summarize(records_frame(records), attacks=config["attacks"])
    has_part = lambda stage: all(run_dir.has_part(name) for name, _ in stage.parts(40))  # noqa: E731
    outcomes = plan_check(config, records, has_part)[1]
    return records, summary, outcomes, convergence_checks(summary, config, run_dir.read_passes(), {}, outcomes)


def robust(records: list[dict], label: str) -> set[str]:
    return {r["sample_id"] for r in records if r["condition"] == f"{label}|none|none" and r["correct"]}


def test_a_budget_that_does_not_converge_is_flagged_by_its_loss_trace_and_the_headline_reads_the_rung(tmp_path):
    """PGD-5 with a tiny step is still climbing at its last step on every sample: every standing sample is
    flagged and re-attacked, the rung breaks some, and the headline is the rung's."""
    records, summary, [outcome], [check] = run_audit(tmp_path, TINY_STEP, ConvergenceSpec(mode="check"))
    standing = robust(records, "pgd")
    [(stage, pair, fallen)] = outcome.stages
    assert pair.flagged == len(standing) == len(pair.chosen) and fallen
    assert not outcome.certified and not check["certified"] and "fell in all" in check["statement"]
    headline = summary["worst_case"]["robust_accuracy"]["successes"]
    assert headline == len(standing & robust(records, "pgd+x2")) < len(standing), "the headline reads the rung"


def synthetic(n: int, standing: int, fallen_in_rung: set[str]) -> tuple[dict, list[dict]]:
    """A saved config and records: ``n`` samples, the first ``standing`` robust under pgd (none flagged); a rung
    record for each sample named in ``fallen_in_rung`` (fallen) or ``robust_in_rung``."""
    config = {
        "seed": 0,
        "part_size": 10,
        "convergence": ConvergenceSpec(mode="check").to_dict(),
        "attacks": [
            {"label": "pgd", "name": "pgd"},
            {"label": "pgd+x2", "name": "pgd", "convergence_of": "pgd", "rung": 1, "check_scope": "headline"},
        ],
    }
    rows = []
    for i in range(n):
        base = {"sample_id": f"s{i:03d}", "index": i, "repeat": 0, "incomplete": False}
        rows.append({**base, "condition": "none|none|none", "correct": True})
        rows.append({**base, "condition": "pgd|none|none", "correct": i < standing})
    return config, rows


def test_a_fall_in_the_draw_extends_the_rung_to_every_other_standing_sample():
    config, rows = synthetic(200, 40, set())
    [draw], _ = plan_check(config, rows, lambda stage: False)
    chosen = draw.pairs[0].chosen
    assert len(chosen) == subset_size(40, 4) and set(chosen) <= {f"s{i:03d}" for i in range(40)}
    done = [
        {"sample_id": s, "index": int(s[1:]), "repeat": 0, "condition": "pgd+x2|none|none", "correct": True}
        for s in chosen
    ]
    _, [outcome] = plan_check(config, rows + done, lambda stage: True)
    assert outcome.certified and outcome.bound == certified_fallers(40, len(chosen)) <= 4
    done[0]["correct"] = False  # one sample of the draw falls
    stages, [outcome] = plan_check(config, rows + done, lambda stage: stage.kind == "draw")
    assert [s.kind for s in stages] == ["draw", "all"] and outcome.pending and not outcome.certified
    assert set(stages[1].pairs[0].chosen) == {f"s{i:03d}" for i in range(40)} - set(chosen)


def test_escalate_climbs_a_rung_after_a_fall_and_the_headline_is_the_strongest(tmp_path):
    records, summary, [outcome], [check] = run_audit(tmp_path, TINY_STEP, ConvergenceSpec(mode="escalate", rungs=3))
    labels = [stage.label for stage, _, _ in outcome.stages]
    assert labels == ["pgd+x2", "pgd+x4", "pgd+x8"] and all(fallen for _, _, fallen in outcome.stages[:2])
    broken = {r["sample_id"] for r in records if not r["correct"]}
    everyone = {r["sample_id"] for r in records}
    assert summary["worst_case"]["robust_accuracy"]["successes"] == len(everyone - broken)
    assert [row["label"] for row in check["ladder"]] == ["pgd", *labels]


def test_a_converged_attack_passes_on_at_most_the_sized_subset_and_its_headline_does_not_move(tmp_path):
    spec = ConvergenceSpec(mode="check")
    records, summary, [outcome], [check] = run_audit(tmp_path, {"steps": 50, "restarts": 2}, spec, eps=0.1)
    [(stage, pair, fallen)] = outcome.stages
    standing = robust(records, "pgd")
    allowed = allowed_fallers(spec.delta, 120)
    assert not fallen and outcome.certified and check["certified"]
    assert len(pair.chosen) <= pair.flagged + subset_size(len(standing) - pair.flagged, allowed) < len(standing)
    assert outcome.bound <= allowed and "none fell" in check["statement"]
    assert summary["worst_case"]["robust_accuracy"]["successes"] == len(standing)


def test_the_headline_never_rises_with_the_check_sample_by_sample(tmp_path):
    for params in (TINY_STEP, {"steps": 50, "restarts": 2}):
        with_check, summary, _, _ = run_audit(tmp_path / "on", params, ConvergenceSpec(mode="escalate"))
        without, plain, _, _ = run_audit(tmp_path / "off", params, None)
        assert robust(with_check, "pgd") == robust(without, "pgd")
        assert (
            summary["worst_case"]["robust_accuracy"]["successes"] <= plain["worst_case"]["robust_accuracy"]["successes"]
        )
        for path in ("on", "off"):
            for leftover in (tmp_path / path).rglob("*"):
                leftover.unlink() if leftover.is_file() else None


def test_the_check_gives_the_same_records_for_every_batch_size(tmp_path):
    small = run_audit(tmp_path / "small", TINY_STEP, ConvergenceSpec(mode="escalate"), batch=7)[0]
    large = run_audit(tmp_path / "large", TINY_STEP, ConvergenceSpec(mode="escalate"), batch=64)[0]
    assert sorted(small, key=str) == sorted(large, key=str)
    assert any(r["condition"].startswith("pgd+x2") for r in small)


FAST = {"version": "fast", "steps": 5, "n_queries": 100}


def test_fast_defers_its_square_to_the_check_and_runs_it_itself_when_the_check_is_off():
    fast = resolve_attack("autoattack", FAST, eps=EPS, eps_l2=0.5)
    base, rung = with_rungs([fast], ConvergenceSpec(mode="check"))
    assert base.params["square_in_check"] and rung.params["version"] == "square"
    assert rung.params["n_queries"] == 100 and "Square (100 queries" in rung.rung_text
    [alone] = with_rungs([fast], ConvergenceSpec(mode="off"))
    assert not alone.params["square_in_check"]
    _, _, x4 = with_rungs([fast], ConvergenceSpec(mode="escalate", rungs=2))
    assert x4.params["version"] == "restarts" and x4.params["restarts"] == 5, "then the plus restarts"
    model = WithCard(NearestMean(toy_data(10)[2])).eval()
    components = lambda a: build_attack(a, model, num_classes=10, seed=0).details["components"]  # noqa: E731
    assert components(base) == ["apgd-ce", "apgd-t"] and components(alone) == ["apgd-ce", "apgd-t", "square"]
    assert components(rung) == ["square"]
    [ladder] = with_rungs([fast], ConvergenceSpec(mode="check", scope="attack"))[1:]
    assert ladder.params["version"] == "restarts", "a per-attack ladder escalates fast as it ran: with its Square"


def test_a_square_the_check_samples_that_breaks_a_sample_runs_on_every_standing_one(tmp_path):
    """Behind a stop-gradient only random starts move APGD; the check's Square draw breaks some of the samples
    fast's gradient components left standing, so Square runs on all of them and the headline reads it -- never
    above fast running Square on every standing sample itself (the check off)."""
    on = run_audit(tmp_path / "on", FAST, ConvergenceSpec(mode="check"), name="autoattack", masked=True)
    records, summary, [outcome], [check] = on
    standing = robust(records, "autoattack")
    assert [stage.kind for stage, _, _ in outcome.stages] == ["draw", "all"] and outcome.stages[0][2]
    assert sum(len(pair.chosen) for _, pair, _ in outcome.stages) == len(standing)
    assert not outcome.certified and "autoattack's Square (100 queries" in check["statement"]
    headline = summary["worst_case"]["robust_accuracy"]["successes"]
    assert headline == len(standing & robust(records, "autoattack+x2")) < len(standing)
    off_records, off_summary, _, _ = run_audit(tmp_path / "off", FAST, None, name="autoattack", masked=True)
    assert off_summary["worst_case"]["robust_accuracy"]["successes"] < len(standing), "Square breaks the same way"
    assert robust(off_records, "autoattack") <= standing
