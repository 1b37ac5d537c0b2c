"""The per-attack convergence ladders (``convergence: {scope: attack}``): a toy where the configured budget
provably does not converge (PGD-5 with a tiny step can
travel only an eighth of eps; 4x and 16x the steps reach the boundary) fails its check, names the gap, and under
``escalate`` makes the headline the strongest rung's, with both verdicts kept in the records; a converged toy passes
with its headline unchanged; escalation never raises a robust accuracy, sample by sample; only survivors are attacked
again, and the check runs through the CLI (report, summary, terminal)."""

from __future__ import annotations

import json

import pytest
import torch

from robaudit.attacks import resolve_attack
from robaudit.engine.convergence import ConvergenceSpec, reattacked, rungs_for
from robaudit.engine.execute import PartExecutor
from robaudit.engine.pipeline import Pipeline
from robaudit.engine.plan import AuditPlan, Defense, Part
from robaudit.errors import ConfigError
from robaudit.reporting.convergence import convergence_checks, convergence_findings, ladder_verdict
from robaudit.reporting.results import rate, records_frame, summarize
from robaudit.runs.rundir import RunDir
from toys import NearestMean, WithCard, toy_data, toy_imageset

LADDER = {"scope": "attack", "factor": 4}  # the per-attack research ladders these tests measure
EPS = 0.2  # measured on this toy: PGD-20 breaks every sample; 5 steps of eps/40 leave 199 of 200, x4 163, x16 0


def audit(params: dict, spec: ConvergenceSpec, *, n: int = 200, eps: float = EPS):
    """Records and summary of PGD (``params``) with ``spec``'s rungs on the undefended nearest-mean toy."""
    images, labels, means = toy_data(n, seed=3, spread=0.12)
    classifier = WithCard(NearestMean(means, scale=10.0)).eval()
    attack = resolve_attack("pgd", params, eps=eps, eps_l2=0.5)
    attacks = [attack, *rungs_for(attack, spec)]
    defenses = [Defense("none", None, 1, ["none"], Pipeline(classifier))]
    plan = AuditPlan(
        attacks, defenses, seed=0, eot=1, draws=1, num_samples=n, part_size=n, convergence_fraction=spec.fraction
    )
    output = PartExecutor(plan, classifier, device=torch.device("cpu"), batch_size=64)(
        toy_imageset(images, labels), Part(0, 0, n), lambda status: None
    )
    frame = records_frame(output.records)
    summary = summarize(
        frame, attacks=[a.to_dict() for a in attacks], defenses=[{"label": "none", "threats": ["none"]}]
    )
    summary["model"] = {"randomized": {"randomized": False}}
    summary["costs"] = output.timings  # per condition: seconds, passes, and a rung's standing / reattacked counts
    return frame, summary


def robust_ids(frame, label: str) -> set[str]:
    rows = frame[(frame["condition"] == f"{label}|none|none") & frame["correct"]]
    return set(rows["sample_id"])


TINY_STEP = {"steps": 5, "alpha": EPS / 40}  # travels 5/40 = 1/8 of eps; x4 reaches 1/2, x16 twice eps


def test_a_budget_that_does_not_converge_fails_the_check_and_names_the_gap():
    spec = ConvergenceSpec(**LADDER, mode="check")
    frame, summary = audit(TINY_STEP, spec)
    [check] = convergence_checks(summary, {"convergence": spec.to_dict()}, {})
    base, rung = check["ladder"]
    assert not check["converged"] and rung["newly_broken"] >= 5, check
    [flag] = convergence_findings([check])
    assert flag.severity == "warning" and f"broke {rung['newly_broken']} more sample(s)" in flag.explanation
    headline = summary["worst_case"]["robust_accuracy"]["successes"]
    assert headline == rung["robust_accuracy_worst_of_n"]["successes"], "every rung is part of the worst case"
    assert robust_ids(frame, "pgd+x4") < robust_ids(frame, "pgd"), "the records keep both verdicts"


def test_escalate_climbs_until_the_check_passes_and_the_headline_is_the_strongest():
    spec = ConvergenceSpec(**LADDER, mode="escalate", rungs=3)
    frame, summary = audit(TINY_STEP, spec)
    [check] = convergence_checks(summary, {"convergence": spec.to_dict()}, {})
    labels = [row["label"] for row in check["ladder"]]
    assert labels == ["pgd", "pgd+x4", "pgd+x16", "pgd+x64"] and check["ceiling"] == "x64"
    x4, x16, x64 = check["ladder"][1:]
    assert x4["newly_broken"] > 1 and x16["newly_broken"] > 1 and x64["newly_broken"] <= 1
    assert check["converged"] and check["converged_at"] == 3
    strongest = x64["robust_accuracy_worst_of_n"]["successes"]
    assert summary["worst_case"]["robust_accuracy"]["successes"] == strongest
    assert robust_ids(frame, "pgd+x64") <= robust_ids(frame, "pgd+x16") <= robust_ids(frame, "pgd+x4")
    assert robust_ids(frame, "pgd+x4") <= robust_ids(frame, "pgd"), "escalation never raises robustness"


def test_a_converged_attack_passes_and_its_headline_does_not_move():
    """PGD-50 with two restarts at eps 0.1 (measured: 166 of 200 robust, and 166 after 4x the steps and a restart)."""
    spec = ConvergenceSpec(**LADDER, mode="check")
    frame, summary = audit({"steps": 50, "restarts": 2}, spec, eps=0.1)
    [check] = convergence_checks(summary, {"convergence": spec.to_dict()}, {})
    base, rung = check["ladder"]
    assert check["converged"] and rung["newly_broken"] == 0 and base["robust_accuracy_worst_of_n"]["successes"] > 100
    assert summary["worst_case"]["robust_accuracy"]["successes"] == base["robust_accuracy_worst_of_n"]["successes"]
    assert not convergence_findings([check])


def test_a_rung_attacks_only_the_survivors_and_a_fraction_samples_them_by_id():
    frame, _ = audit(TINY_STEP, ConvergenceSpec(**LADDER, mode="check", fraction=0.5))
    base, rung = (
        frame[frame["condition"] == f"{label}|none|none"].set_index("sample_id") for label in ("pgd", "pgd+x4")
    )
    broken_below = base.index[~base["correct"]]
    assert (rung.loc[broken_below, "pred"] == base.loc[broken_below, "pred"]).all(), "broken samples keep the verdict"
    survivors = base.index[base["correct"] & base["attacked"]]
    chosen = [s for s in survivors if reattacked(0, "pgd+x4|none|none", s, 0.5)]
    skipped = [s for s in survivors if s not in chosen]
    assert 0 < len(chosen) < len(survivors)
    assert (rung.loc[skipped, "correct"]).all(), "survivors left out of the sample keep their verdict"
    assert not rung.loc[chosen, "correct"].all(), "the sampled survivors were attacked again"


def test_rungs_escalate_steps_eot_and_restarts_and_fgsm_has_none():
    pgd = resolve_attack("pgd", {"steps": 10}, eps=EPS, eps_l2=0.5)
    [x4, x16] = rungs_for(pgd, ConvergenceSpec(**LADDER, mode="escalate", rungs=2))
    assert (x4.params["steps"], x4.params["restarts"], x4.label) == (40, 1, "pgd+x4")
    assert (x16.params["steps"], x16.params["restarts"]) == (160, 1)
    # on a randomized pipeline: the base EOT, growing where the signs are unresolved (attacks.eot_growth)
    assert (x4.eot_scale, x4.params["eot_growth"], x16.eot_scale, x16.params["eot_growth"]) == (1, 4, 1, 16)
    fgsm = resolve_attack("fgsm", {}, eps=EPS, eps_l2=0.5)
    assert (
        rungs_for(fgsm, ConvergenceSpec(**LADDER)) == [] and rungs_for(pgd, ConvergenceSpec(**LADDER, mode="off")) == []
    )
    with pytest.raises(ConfigError, match="convergence.mode must be one of"):
        ConvergenceSpec.parse({"mode": "sometimes"})


def test_the_cli_reports_the_check_in_the_summary_report_and_terminal(tmp_path, digits_model_path):
    from typer.testing import CliRunner

    from robaudit.cli import app

    args = ["evaluate", "--model", str(digits_model_path), "--data", "digits", "--limit", "16"]
    args += ["--attacks", "pgd", "--eps", "2/255", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, [*args, "--gate", "worst_case >= 0"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    [check] = summary["convergence"]
    assert check["mode"] == "escalate", "a gated run escalates"
    assert check["scope"] == "headline" and check["ladder"][0]["label"] == "pgd"
    assert check["ladder"][1]["label"] == "pgd+x2" and (check["certified"] or len(check["ladder"]) == 3)
    assert "## Convergence" in (tmp_path / "run" / "report.md").read_text()
    assert check["statement"] in (tmp_path / "run" / "report.md").read_text().replace("\\", "")
    assert check["statement"] in (tmp_path / "run" / "report.html").read_text()
    assert "convergence check, none / none:" in result.output.replace("\n", "")
    off = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "off"), "--no-convergence"])
    assert off.exit_code == 0 and json.loads((tmp_path / "off" / "summary.json").read_text())["convergence"] == []


def test_a_check_on_a_fraction_of_the_survivors_is_judged_on_its_estimate_over_all_of_them():
    """One more sample broken on a 5% subsample stands for about 20 over all survivors: the whole check would fail,
    so the subsample's must too; the same single sample over all survivors passes."""
    rows = [
        {"rung": 0, "robust_accuracy_worst_of_n": rate(50, 100)},
        {"rung": 1, "robust_accuracy_worst_of_n": rate(49, 100)},
    ]
    assert ladder_verdict(rows, tolerance=1) == (1, [1], [1.0])
    assert ladder_verdict(rows, tolerance=1, fraction=0.05) == (None, [1], [20.0])
    spec = ConvergenceSpec(**LADDER, mode="check", fraction=0.05)
    summary = {"model": {"randomized": {}}, "defenses": [{"label": "none", "results": []}]}
    base = {"label": "pgd", "threat": "none", "params": {"steps": 5}, "robust_accuracy": {"value": 0.5}}
    rung = {**base, "label": "pgd+x4", "convergence_of": "pgd", "rung": 1, "params": {"steps": 20}}
    base["robust_accuracy_worst_of_n"], rung["robust_accuracy_worst_of_n"] = rate(50, 100), rate(49, 100)
    summary["defenses"][0]["results"] = [base, rung]
    [check] = convergence_checks(summary, {"convergence": spec.to_dict()}, {})
    assert not check["converged"] and check["ladder"][1]["estimated_broken"] == 20.0
    [flag] = convergence_findings([check])
    assert "1 more sample(s) on a seeded 5% of the survivors (about 20 over all)" in flag.explanation


def test_a_rung_whose_fraction_chose_none_of_the_survivors_checked_nothing_and_does_not_pass():
    """A seeded fraction can leave out every survivor (a quarter of 6: 18% of the time); a rung that attacked none
    of them broke none, and must not read as converged."""
    spec = ConvergenceSpec(**LADDER, mode="check", fraction=0.25)
    frame, summary = audit(TINY_STEP, spec, n=40)
    survivors = robust_ids(frame, "pgd")
    counted = summary["costs"]["pgd+x4|none|none"]
    chosen = [s for s in survivors if reattacked(0, "pgd+x4|none|none", s, 0.25)]
    assert (counted["standing"], counted["reattacked"]) == (len(survivors), len(chosen)) and len(chosen) > 0
    base = {"label": "pgd", "threat": "none", "params": {"steps": 5}, "robust_accuracy": {"value": 0.75}}
    rung = {**base, "label": "pgd+x4", "convergence_of": "pgd", "rung": 1, "params": {"steps": 20}}
    base["robust_accuracy_worst_of_n"] = rung["robust_accuracy_worst_of_n"] = rate(6, 8)
    unchecked = {"model": {"randomized": {}}, "defenses": [{"label": "none", "results": [base, rung]}]}
    samples = {"pgd+x4|none|none": {"standing": 6, "reattacked": 0}}
    [check] = convergence_checks(unchecked, {"convergence": spec.to_dict()}, {}, samples)
    assert not check["converged"] and check["ladder"][1]["estimated_broken"] is None
    [flag] = convergence_findings([check])
    assert "re-attacked none of the 6 survivor(s), so it checked nothing" in flag.explanation


def test_a_run_directory_sums_each_rungs_standing_and_reattacked_counts_over_its_parts(tmp_path):
    run = RunDir(tmp_path)
    for part, (standing, chosen) in {"part-000000-000004": (3, 1), "part-000004-000008": (2, 0)}.items():
        (tmp_path / "records").mkdir(exist_ok=True)
        (tmp_path / "timings").mkdir(exist_ok=True)
        (tmp_path / "records" / f"{part}.jsonl").write_text("")
        entry = {"seconds": 0.1, "samples": chosen, "standing": standing, "reattacked": chosen}
        (tmp_path / "timings" / f"{part}.json").write_text(json.dumps({"pgd+x4|none|none": entry}))
    assert run.read_rung_samples() == {"pgd+x4|none|none": {"standing": 5, "reattacked": 1}}


@pytest.mark.parametrize(
    ("name", "params"),
    [("pgd", {"steps": 6, "early_exit": False}), ("autoattack", {"steps": 6, "eot_iter": 2, "early_exit": False})],
)
def test_a_rung_on_a_randomized_pipeline_costs_at_most_3x_the_attack_per_reattacked_sample(name, params):
    """The headline check's first rung, built as the engine builds it (its params, its EOT scale), against the
    attack below on the same samples of a randomized pipeline (noise inside the classifier), every sample worked to
    the end (early exit off, so the counts are the whole budget): at most 3x the model passes (measured 2x: one new
    run at twice the EOT). On a deterministic pipeline the rung keeps its escalation (PGD: 2x steps; AutoAttack:
    ``plus``'s 5 restarts)."""
    from robaudit.attacks import build_attack, run_attack
    from robaudit.engine.convergence import checked
    from robaudit.engine.passes import PassCounter
    from toys import streams

    images, labels, means = toy_data(12, seed=2, spread=0.12)
    classifier = WithCard(NearestMean(means, sigma=0.3)).eval()
    pipeline = Pipeline(classifier, randomized_classifier=True, row_draws=True)
    base = checked(resolve_attack(name, params, eps=0.3, eps_l2=0.5))
    (rung,) = rungs_for(base, ConvergenceSpec(mode="check"))
    spent = {}
    for attack in (base, rung):
        built = build_attack(attack, pipeline, num_classes=10, seed=0, eot=4 * attack.eot_scale, draws=4)
        counter = PassCounter(classifier, [])
        with counter.charge("attack"):
            run_attack(built, attack, images, labels, rng=streams(12), seed=0)
        count = counter.take("attack")
        spent[attack.label] = count.forward + count.backward
    ratio = spent[rung.label] / spent[base.label]
    assert 1.5 <= ratio <= 3.0, f"{name}: the rung costs {ratio:.2f}x the attack below"
    deterministic = {"pgd": ("steps", 12), "autoattack": ("restarts", 5)}[name]
    assert rung.params[deterministic[0]] == deterministic[1], "the deterministic escalation is unchanged"
