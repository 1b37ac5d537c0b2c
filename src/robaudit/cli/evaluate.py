"""`robaudit evaluate`: one classifier, one dataset, a list of attacks; writes a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from robaudit.cli.common import TrustCodeOption, TrustOption, handle_errors, show_gates
from robaudit.cli.flags import DATA_FLAGS, GATE_FLAGS, FlagGroup, GateFlags, given, with_flags
from robaudit.config import load_yaml
from robaudit.engine.config import flag_table
from robaudit.progress import console

app = typer.Typer()

SETTING_FLAGS = FlagGroup.overrides("overrides", flag_table())  # declared on the config's fields


MODEL_FLAGS = FlagGroup(  # how --model is read: {key: value} of the ones given
    "model_flags",
    given,
    {
        "arch": (str, typer.Option(None, "--arch", help="timm architecture of a bare state-dict checkpoint.")),
        "num_classes": (
            int,
            typer.Option(
                None, "--num-classes", help="Classes of a card-less checkpoint, or of a new head on a pretrained model."
            ),
        ),
        "weights": (
            str,
            typer.Option(
                None,
                "--weights",
                help="Fine-tuned state dict (whole network or head) over a pretrained model's weights.",
            ),
        ),
        "model_dir": (
            str,
            typer.Option(None, "--model-dir", help="robustbench: the folder with DATASET/THREAT/NAME.pt."),
        ),
        "mean": (str, typer.Option(None, "--mean", help="Normalization mean of a bare state dict, e.g. 0.5,0.5,0.5.")),
        "std": (str, typer.Option(None, "--std", help="Normalization std of a bare state dict, e.g. 0.5,0.5,0.5.")),
        "model_dataset": (
            str,
            typer.Option(None, "--model-dataset", help="robustbench: cifar10 (default), cifar100 or imagenet."),
        ),
    },
)


PurifierOption = typer.Option(
    None,
    "--purifier",
    help="Comma list of purifiers (robaudit ls purifiers); "
    "trained on the data's train split and cached when no checkpoint is given.",
)
PurifierCheckpointOption = typer.Option(
    None,
    "--purifier-checkpoint",
    help="The one purifier's checkpoint file, or a diffusers model: hf-hub:ORG/NAME or local-dir:PATH.",
)
ThreatOption = typer.Option(
    None,
    "--threat",
    help="Comma list of threat models for purifiers: non-adaptive, bpda, adaptive (default all three).",
)
RbThreatOption = typer.Option(
    None, "--rb-threat", help="A robustbench: model's RobustBench threat: Linf (default), L2 or corruptions."
)


@app.command("evaluate")
@handle_errors
@with_flags(MODEL_FLAGS)
@with_flags(GATE_FLAGS)
@with_flags(SETTING_FLAGS)
@with_flags(DATA_FLAGS)
def evaluate(
    config: Path = typer.Option(None, "--config", help="YAML config; flags override its values."),
    model: str = typer.Option(
        None, "--model", help="Classifier: a checkpoint, or timm:NAME, hf-hub:REPO, local-dir:PATH, robustbench:NAME."
    ),
    data: str = typer.Option(None, "--data", help="Dataset name or path (.npz, image folder, CIFAR, artifact)."),
    attacks: str = typer.Option(
        None, "--attacks", help="Comma list of attacks (default pgd; none on a stored adversarial dataset)."
    ),
    purifier: str = PurifierOption,
    purifier_checkpoint: str = PurifierCheckpointOption,
    threat: str = ThreatOption,
    rb_threat: str = RbThreatOption,
    randomized: bool = typer.Option(
        False,
        "--randomized",
        "--stochastic",
        help="Declare the classifier randomized (noise inside); it is also detected. --stochastic: the earlier name.",
    ),
    shard: str = typer.Option(
        None, "--shard", help="Run only shard K/N of the parts (job arrays); merge with: robaudit report RUN_DIR."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run directory when it exists."),
    no_convergence: bool = typer.Option(False, "--no-convergence", help="Skip the convergence check."),
    trust_checkpoint: bool = TrustOption,
    trust_code: bool = TrustCodeOption,
    overrides: dict[str, Any] = None,  # type: ignore[assignment]  (filled by with_flags)
    data_flags: dict[str, Any] = None,  # type: ignore[assignment]
    model_flags: dict[str, Any] = None,  # type: ignore[assignment]
    gate_flags: GateFlags = None,  # type: ignore[assignment]
) -> None:
    """Evaluate a classifier's clean and robust accuracy; write records, summary, results.csv and report.md."""
    from robaudit.cli.overrides import with_overrides

    threat, rb_threat = split_deprecated_threat(threat, rb_threat)
    mapping = with_overrides(
        load_yaml(config) if config else {},
        model=model,
        **{key: model_flags.get(key) for key in MODEL_FLAGS.options},
        data=data,
        data_flags=data_flags,
        attacks=attacks,
        purifier=purifier,
        purifier_checkpoint=purifier_checkpoint,
        threat=threat,
        rb_threat=rb_threat,
        randomized=randomized,
    )
    mapping.update(overrides, **({"convergence": "off"} if no_convergence else {}))
    trust = {"trust_checkpoint": trust_checkpoint, "trust_code": trust_code}
    audit_and_show(mapping, gate_flags, shard=shard, overwrite=overwrite, **trust)


def audit_and_show(mapping: dict[str, Any], gate_flags: GateFlags, *, shard: str | None, **options: Any) -> None:
    """``robaudit.audit`` on the flags' config ``mapping``; show the summary and the gates (exit 1 when one failed).
    ``options``: overwrite and the trust flags."""
    from robaudit.api import audit
    from robaudit.engine.plan import Shard

    chosen = Shard.parse(shard) if shard is not None else None
    result = audit(mapping, gates=gate_flags.gate or [], gate_options=gate_flags.options(), shard=chosen, **options)
    if result.complete:  # a shard's gates are judged by `robaudit report` once the shards are merged
        print_summary(result.run_dir)
        show_gates(list(result.gates), gate_flags)


def split_deprecated_threat(threat: str | None, rb_threat: str | None) -> tuple[str | None, str | None]:
    """``--threat Linf`` (a RobustBench threat where threat models go): the old spelling of ``--rb-threat``, kept
    for one release with a warning. Returns (threat models, RobustBench threat)."""
    from robaudit.components.catalog import catalog

    robustbench_threats = catalog("model source").get("robustbench").meta["choices"]["rb_threat"]
    names = [t.strip() for t in (threat or "").split(",") if t.strip()]
    old = [t for t in names if t in robustbench_threats]
    if old:
        console.print(
            f"[yellow]--threat {','.join(old)} names a RobustBench threat: use --rb-threat {old[0]} (--threat "
            "takes threat models only from the next release)[/yellow]"
        )
    rest = ",".join(t for t in names if t not in robustbench_threats) or None
    return rest, rb_threat or (",".join(old) or None)


def print_summary(run_dir: Path) -> None:
    """Show the headline numbers of a finished run."""
    from robaudit.reporting.report import load_summary, with_ci

    summary = load_summary(run_dir)
    table = Table(title=escape(str(run_dir)))
    for column in ("condition", "threat model", "accuracy [95% CI]"):
        table.add_column(column)
    table.add_row("clean", "-", with_ci(summary["clean_accuracy"]))
    for attack in summary["attacks"]:
        table.add_row(
            escape(attack["label"]), f"{attack['norm']} eps={attack['eps']:.4g}", with_ci(attack["robust_accuracy"])
        )
    if summary["attacks"]:
        table.add_row("[bold]worst case", "per-sample", f"[bold]{with_ci(summary['worst_case']['robust_accuracy'])}")
    for defense in summary.get("defenses", [])[1:]:
        label = defense["label"]
        table.add_row(f"clean + {escape(label)}", "-", with_ci(defense["clean_accuracy_worst_of_n"]))
        for result in defense["results"]:
            shown = result["robust_accuracy_worst_of_n"]
            table.add_row(f"{escape(result['label'])} + {escape(label)}", result["threat"], with_ci(shown))
        if defense["results"]:
            table.add_row(
                f"[bold]worst case + {label}",
                ", ".join(defense["worst_case"].get("threats", [])) + f" (worst of {defense['worst_case']['repeats']})",
                f"[bold]{with_ci(defense['worst_case']['robust_accuracy'])}",
            )
    console.print(table)
    for check in summary.get("convergence", []):
        if check.get("scope") == "headline":
            where = f"{escape(check['defense'])} / {check['threat']}"
            console.print(f"convergence check, {where}: {escape(check['statement'])}")
            continue
        verdict = (
            f"converged at {check['ladder'][check['converged_at']]['label']}"
            if check["converged"]
            else f"[yellow]not converged[/yellow] (ceiling {check['ceiling']})"
        )
        rungs = " -> ".join(f"{escape(r['label'])} {with_ci(r['robust_accuracy_worst_of_n'])}" for r in check["ladder"])
        where = f"{escape(check['attack'])} / {escape(check['defense'])} / {check['threat']}"
        console.print(f"convergence {where}: {rungs}: {verdict}")
    print_certified(summary.get("certified") or {})
    for warning in summary.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    console.print(f"report: {escape(str(run_dir / 'report.md'))}")


def print_certified(certified: dict[str, Any]) -> None:
    """The certified side of the bracket on the terminal: each smoothed classifier's certified accuracy (lower bound)
    and attacked accuracy (upper bound), its estimation draws per sample, and the confidence of each certificate."""
    from robaudit.reporting.report import with_ci

    for result in certified.get("results", []):
        attacked = result.get("empirical_accuracy")
        upper = f" <= {with_ci(attacked)} attacked (upper bound)" if attacked else ""
        draws = result.get("draws") or {}
        cost = f"; {draws['estimation_mean']:.0f} estimation draws per sample (of {certified['n']})" if draws else ""
        console.print(
            f"certified {escape(result['smoothed'])} at L2 {certified['eps_l2']:g}: "
            f"{with_ci(result['certified_accuracy'])} (lower bound){upper}; abstained on {result['abstained']} of "
            f"{result['n_samples']}{cost}"
        )
    if certified.get("alpha") is not None:
        console.print(
            f"each certificate holds with probability at least {1 - certified['alpha']:g} ({certified['mode']})"
        )
