"""robaudit against the tools a user would pick instead, on the same models and images, measured in one run.

    python bench/peers.py [--quick] [--n 200] [--models digits-vit,xray-vit,cifar-resnet] [--json out.json]

Three models, each trained once by robaudit's own training and cached (outside the timings): the quickstart ViT on
scikit-learn's digits, a ViT on the chest X-rays and a small ResNet on the CIFAR-10 images of ``../shared/data``.
On a seeded random ``--n`` of each model's test images (the X-ray test split is sorted by label), at the model's
budget (Linf; chosen so some samples survive):

- PGD-20: robaudit's engine (clean scoring, attack, scoring, records: ``PartExecutor`` on one part; with and
  without early exit) against a hand-written loop over torchattacks' PGD, the loop a user would write, both from the
  clean image (no random start, so the iterates are the same). Time ratio (target <= 1.03 without early exit) and
  robust accuracy (equal, or lower: robaudit keeps each sample's best iterate, torchattacks its last).
- AutoAttack: the reference implementation (``pyautoattack``, Croce & Hein's code) against robaudit's ``standard``,
  ``standard`` followed by the headline convergence check as ``evaluate`` runs it (its rung: the ``plus`` restarts
  of the APGD components, on the flagged and a sized seeded draw of the standing samples, delta 2 points), and
  ``fast`` followed by the check as ``evaluate`` runs it (fast defers its Square to the check, whose rung is that
  Square on the same sized draw, and on every standing sample if one falls): robust accuracy, model passes
  (forward + backward, counted at the classifier by hooks, the same way for every tool) and seconds. Targets:
  standard equal to the reference within one sample; standard + check at most 1.3x the reference's passes at its
  verdict; fast + check >= 10x fewer passes than the reference, robust accuracy within one sample of it.
- PGD-20 in fp32 against bf16 (``--precision bf16``) and ``--compile``: time ratios and the verdicts where bf16 and
  float32 disagree on the final images.

``--quick`` (run by the test suite) trains each model for one epoch and runs every row on 8 images with 10-step
APGD/FAB and 100 Square queries: it checks the bench runs end to end, not its numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torchattacks
from tables import markdown_table  # bench/tables.py

from robaudit.attacks import build_attack, predict, resolve_attack, run_attack
from robaudit.attacks.methods.autoattack import escalate_autoattack
from robaudit.attacks.precision import disagreements
from robaudit.data import load_dataset
from robaudit.engine.config import EvaluateConfig
from robaudit.engine.convergence import checked
from robaudit.engine.execute import PartExecutor
from robaudit.engine.passes import PassCount, PassCounter
from robaudit.engine.plan import Part, Shard
from robaudit.engine.prepare import prepare_run
from robaudit.headline.check_bound import allowed_fallers, certified_fallers, subset_size
from robaudit.headline.headline_check import seeded_draw
from robaudit.models.compiled import compile_classifier
from robaudit.models.spec import ModelSpec, TrainSpec, obtain_classifier
from robaudit.rng.sample_rng import SampleRNG

ROOT = Path(__file__).resolve().parents[1]
CHECK_DELTA = 0.02  # the headline check certifies a fall of at most 2 points, as evaluate's default
REPEATS = 3  # PGD-20 timings: the fastest of three runs, for the loop and for the engine
DATA = ROOT.parent / "shared" / "data"


@dataclass
class Bench:
    """One benchmark model: how robaudit trains it, the data it is audited on, its Linf budget."""

    name: str
    train: TrainSpec
    data: str
    eps: float


def benches(quick: bool) -> dict[str, Bench]:
    """The three models (one training epoch each with ``quick``)."""
    epochs = {"epochs": 1} if quick else {}
    xray, cifar = str(DATA / "pneumoniamnist.npz"), str(DATA / "cifar10_head.npz")
    return {
        "digits-vit": Bench("digits-vit", TrainSpec(data="digits", seed=0, recipe=epochs), "digits", 8 / 255),
        "xray-vit": Bench("xray-vit", TrainSpec(data=xray, seed=0, recipe=epochs), xray, 1 / 255),
        "cifar-resnet": Bench(
            "cifar-resnet",
            TrainSpec(data=cifar, seed=0, recipe={"arch": "resnet", "epochs": 1 if quick else 15}),
            cifar,
            1 / 255,
        ),
    }


def measured(model: torch.nn.Module, work: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float, PassCount]:
    """(what ``work`` returns, its seconds, the classifier passes it spent)."""
    counter = PassCounter(model, [])
    tic = time.perf_counter()
    with counter.charge("bench"):
        out = work()
    return out, time.perf_counter() - tic, counter.take("bench")


def robust(model: torch.nn.Module, adversarial: torch.Tensor, labels: torch.Tensor) -> int:
    """Samples ``model`` still classifies correctly."""
    with torch.no_grad():
        return int((predict(model, adversarial) == labels).sum())


def torchattacks_pgd_loop(model, images, labels, *, eps: float, batch_size: int) -> int:
    """What a user writes instead of robaudit: torchattacks' PGD-20 (robaudit's step size), batch by batch, scored.
    Both sides start at the clean image (no random start), so their robust accuracy can be compared exactly."""
    attack = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / 20, steps=20, random_start=False)
    correct = 0
    for start in range(0, len(labels), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        correct += int((model(attack(x, y)).argmax(1) == y).sum())
    return correct


def engine_pgd(bench: Bench, model_path: Path, n: int, *, early_exit: bool, work: Path) -> tuple[int, float, PassCount]:
    """(robust samples, seconds, passes) of robaudit's engine running PGD-20 on one part of ``n`` samples."""
    config = EvaluateConfig.parse(
        {
            "model": str(model_path),
            "data": {"name": bench.data, "limit": n, "subset_seed": 0},
            "attacks": [{"name": "pgd", "steps": 20, "early_exit": early_exit, "random_start": False}],
            "eps": bench.eps,
            "part_size": n,
            "device": "cpu",
            "convergence": "off",  # PGD-20 against PGD-20: no escalated rung in the comparison
            "out": str(work / f"{bench.name}-pgd-{early_exit}"),
        }
    )
    prepared = prepare_run(config, overwrite=True, trust_checkpoint=False, shard=Shard(0, 1))
    executor = PartExecutor(prepared.plan, prepared.model, device=prepared.device, batch_size=128)
    seconds = []
    for _ in range(REPEATS):  # the fastest of REPEATS runs (the loop is timed the same way)
        tic = time.perf_counter()
        out = executor(prepared.dataset, Part(0, 0, n), lambda _: None)
        seconds.append(time.perf_counter() - tic)
    seconds = min(seconds)
    kinds = ("forward", "backward")
    passes = PassCount(**{kind: sum(int(t.get(kind, 0)) for t in out.timings.values()) for kind in kinds})
    return sum(r["correct"] for r in out.records if r["condition"] == "pgd|none|none"), seconds, passes


def reference_autoattack(model, images, labels, *, eps: float, num_classes: int, quick: bool) -> torch.Tensor:
    """The reference AutoAttack (standard; below 4 classes APGD-T is undefined, so APGD-CE, FAB-T, Square)."""
    from pyautoattack import AutoAttack

    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    if num_classes >= 4:
        adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0)
    else:
        components = ["apgd-ce", "fab-t", "square"]
        adversary = AutoAttack(model, norm="Linf", eps=eps, version="custom", seed=0, attacks=components)
        adversary.fab.n_target_classes = num_classes - 1
    if quick:
        adversary.apgd.n_iter = adversary.apgd_targeted.n_iter = adversary.fab.n_iter = 10
        adversary.square.n_queries = 100
    return adversary.run_standard_evaluation(images, labels, batch_size=len(labels))[0]


def robaudit_attack(model, images, labels, name: str, params: dict, *, eps: float, **context) -> torch.Tensor:
    """robaudit's attack ``name`` on (images, labels), each sample's stream seeded from its index."""
    resolved = resolve_attack(name, params, eps=eps, eps_l2=0.5)
    attack = build_attack(resolved, model, num_classes=model.card.num_classes, seed=0)
    rng = SampleRNG.from_seeds(range(len(labels)))
    return run_attack(attack, resolved, images, labels, rng=rng, seed=0, **context)


def autoattack_with_check(model, images, labels, *, version: str, eps: float, small: dict, delta: float = CHECK_DELTA):
    """robaudit's AutoAttack ``version`` followed by the headline convergence check, as ``evaluate`` runs it
    (``robaudit.headline.headline_check``): the attack as it runs before the check (``fast`` defers its Square to
    it), then the rung (``standard``: the ``plus`` restarts of APGD-CE and APGD-DLR from new random starts;
    ``fast``: the Square it deferred) on the standing samples the loss trace flags and a seeded draw of the rest
    sized to certify ``delta``; on every standing sample if one falls. Returns (adversarial images, what the check
    did)."""
    resolved = checked(resolve_attack("autoattack", {"version": version, **small}, eps=eps, eps_l2=0.5))
    attack = build_attack(resolved, model, num_classes=model.card.num_classes, seed=0)
    adversarial = run_attack(attack, resolved, images, labels, rng=SampleRNG.from_seeds(range(len(labels))), seed=0)
    standing = (predict(model, adversarial) == labels).nonzero().flatten().tolist()
    flagged = [i for i in standing if bool(attack.incomplete[i])]
    rest = [i for i in standing if i not in flagged]
    count = subset_size(len(rest), allowed_fallers(delta, len(labels)))
    drawn = [int(i) for i in seeded_draw(0, "peers", [str(i) for i in rest], count)]
    rung = replace(resolved, params=escalate_autoattack(dict(resolved.params), 2), label="autoattack+x2")
    fallen = rung_fallen(model, images, labels, rung, sorted(flagged + drawn), adversarial)
    stages = (
        f"{rung.params['version']} rung on {len(flagged) + len(drawn)} of {len(standing)} standing "
        f"({len(flagged)} flagged): {len(fallen)} fell"
    )
    if fallen:
        others = sorted(set(rest) - set(drawn))
        fallen += rung_fallen(model, images, labels, rung, others, adversarial)
        stages += f"; on the other {len(others)}: {len(fallen)} fell in all"
    else:
        bound = certified_fallers(len(rest), count)
        stages += f"; at 95% at most {bound} of {len(labels)} more would fall ({100 * bound / len(labels):.1f} points)"
    return adversarial, stages


def rung_fallen(model, images, labels, rung, chosen: list[int], adversarial: torch.Tensor) -> list[int]:
    """Run ``rung`` on the samples ``chosen`` (their streams new: seeded apart from the attack's); write the
    adversarial images of those it breaks into ``adversarial``; return them."""
    if not chosen:
        return []
    index = torch.tensor(chosen)
    attack = build_attack(rung, model, num_classes=model.card.num_classes, seed=1)
    rng = SampleRNG.from_seeds([len(labels) + i for i in chosen])
    made = run_attack(attack, rung, images[index], labels[index], rng=rng, seed=1)
    broke = predict(model, made) != labels[index]
    adversarial[index[broke]] = made[broke]
    return index[broke].tolist()


def autoattack_rows(bench: Bench, model, images, labels, *, quick: bool) -> list[dict]:
    """Reference, robaudit standard, standard with the convergence check, and fast AutoAttack with the check (its
    Square on the check's sized draw): robust samples, passes, seconds."""
    small = {"steps": 10, "n_queries": 100} if quick else {}
    rows = []
    checked_runs = {}

    def with_check(version: str) -> Callable[[], torch.Tensor]:
        def work() -> torch.Tensor:
            adversarial, checked_runs[version] = autoattack_with_check(
                model, images, labels, version=version, eps=bench.eps, small=small
            )
            return adversarial

        return work

    runs = {
        "reference AutoAttack": lambda: reference_autoattack(
            model, images, labels, eps=bench.eps, num_classes=model.card.num_classes, quick=quick
        ),
        "robaudit autoattack standard": lambda: robaudit_attack(
            model, images, labels, "autoattack", {"version": "standard", **small}, eps=bench.eps
        ),
        "robaudit autoattack standard + check": with_check("standard"),
        "robaudit autoattack fast + check": with_check("fast"),
    }
    for label, work in runs.items():
        adversarial, seconds, passes = measured(model, work)
        rows.append(row(bench, label, robust(model, adversarial, labels), seconds, passes, len(labels)))
        if "check" in label:
            rows[-1]["check"] = checked_runs[label.split()[2]]
    return rows


def precision_rows(bench: Bench, model, images, labels) -> list[dict]:
    """PGD-20 in fp32, bf16 and compiled: robust samples, seconds, bf16/fp32 disagreements."""
    rows, pgd = [], {"steps": 20}
    for label, precision in (("robaudit pgd-20 fp32", "fp32"), ("robaudit pgd-20 bf16", "bf16")):
        work = lambda p=precision: robaudit_attack(model, images, labels, "pgd", pgd, eps=bench.eps, precision=p)  # noqa: E731
        adversarial, seconds, passes = measured(model, work)
        r = row(bench, label, robust(model, adversarial, labels), seconds, passes, len(labels))
        r["disagreed"] = disagreements(model, adversarial, labels, precision=precision)[0]
        rows.append(r)
    compile_classifier(model)  # in place
    work = lambda: robaudit_attack(model, images, labels, "pgd", {"steps": 20}, eps=bench.eps)  # noqa: E731
    measured(model, work)  # compiles (not timed)
    adversarial, seconds, passes = measured(model, work)
    correct = robust(model, adversarial, labels)
    rows.append(row(bench, "robaudit pgd-20 fp32 compiled", correct, seconds, passes, len(labels)))
    return rows


def row(bench: Bench, label: str, robust_count: int, seconds: float, passes: PassCount | None, n: int) -> dict:
    """One table row."""
    total = None if passes is None else passes.forward + passes.backward
    return {
        "model": bench.name,
        "eps": round(bench.eps * 255, 2),
        "run": label,
        "robust": robust_count,
        "n": n,
        "passes": total,
        "seconds": round(seconds, 2),
    }


def run_bench(bench: Bench, *, n: int, quick: bool, work: Path) -> list[dict]:
    """Every row of one model."""
    model, model_path = obtain_classifier(ModelSpec(train=bench.train), device="cpu")
    model.eval()
    data = load_dataset(bench.data, split="test", limit=n, subset_seed=0)  # seeded: the X-ray split is sorted
    images, labels = data.images.float(), data.labels
    rows, seconds = [], {}
    loop = [
        measured(model, lambda: torchattacks_pgd_loop(model, images, labels, eps=bench.eps, batch_size=128))
        for _ in range(REPEATS)
    ]
    correct, loop_seconds, loop_passes = min(loop, key=lambda result: result[1])
    rows.append(row(bench, "torchattacks pgd-20 loop", correct, loop_seconds, loop_passes, n))
    for early_exit in (False, True):
        correct, seconds[early_exit], passes = engine_pgd(bench, model_path, n, early_exit=early_exit, work=work)
        label = "robaudit engine pgd-20" + (" (early exit)" if early_exit else " (no early exit)")
        rows.append(row(bench, label, correct, seconds[early_exit], passes, n))
        rows[-1]["time vs loop"] = round(seconds[early_exit] / loop_seconds, 3)
    rows += autoattack_rows(bench, model, images, labels, quick=quick)
    reference, standard, checked, fast = rows[-4:]
    for r in (standard, checked, fast):
        r["passes vs reference"] = round(reference["passes"] / max(1, r["passes"]), 2)
        r["time vs reference"] = round(r["seconds"] / reference["seconds"], 3)
    checked["cost vs reference"] = round(checked["passes"] / max(1, reference["passes"]), 3)
    fast["passes vs standard"] = round(standard["passes"] / max(1, fast["passes"]), 2)
    rows += precision_rows(bench, model, images, labels)
    fp32 = rows[-3]
    for r in rows[-2:]:
        r["time vs fp32"] = round(r["seconds"] / fp32["seconds"], 3)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one-epoch models, 8 images, short attacks (CI)")
    parser.add_argument("--n", type=int, default=None, help="test images per model (default 200; 8 with --quick)")
    parser.add_argument("--models", default="digits-vit,xray-vit,cifar-resnet")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--work", type=Path, default=Path("bench-peers"), help="run directories of the engine rows")
    args = parser.parse_args(argv)
    n = args.n or (8 if args.quick else 200)
    torch.manual_seed(0)
    available = benches(args.quick)
    rows = []
    for name in args.models.split(","):
        rows += run_bench(available[name], n=n, quick=args.quick, work=args.work)
        print(markdown_table([r for r in rows if r["model"] == name]))
        print(flush=True)
    print(markdown_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
