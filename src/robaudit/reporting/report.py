"""Rebuild summary.json, results.csv and report.md from a run directory alone (records, config, manifest)."""

from __future__ import annotations

import base64
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from robaudit.attacks.base import format_eps
from robaudit.errors import RobauditError
from robaudit.fileio import atomic_write, atomic_write_json, atomic_write_text
from robaudit.headline.headline_check import plan_check
from robaudit.reporting.certified import certified_section, consistency_findings
from robaudit.reporting.convergence import convergence_checks, convergence_findings
from robaudit.reporting.results import (
    CLEAN,
    SUMMARY_SCHEMA,
    SUMMARY_SCHEMA_VERSION,
    records_frame,
    results_table,
    summarize,
)
from robaudit.reporting.sanity import postrun
from robaudit.runs.findings import CHECKS_AFTER, CHECKS_BEFORE, Finding
from robaudit.runs.records import Condition
from robaudit.runs.rundir import RunDir
from robaudit.threats import THREAT_DESCRIPTIONS

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def escape_markdown(value: object) -> str:
    """Escape text from files (names, ids, paths) so it renders literally in markdown (no injection)."""
    text = str(value).replace("\r", " ").replace("\n", " ")
    text = text.replace("&", "&amp;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def code_span(value: object) -> str:
    """Text safe inside a markdown code span: no backticks, no line breaks (nothing else is interpreted there)."""
    return str(value).replace("`", "'").replace("\r", " ").replace("\n", " ")


def percent(value: float | None) -> str:
    """0.1234 -> '12.3%'; None -> 'n/a'."""
    return "n/a" if value is None else f"{100 * value:.1f}%"


def with_ci(rate: dict[str, Any]) -> str:
    """'12.3% [9.8, 15.2]' for a rate dict."""
    if rate["value"] is None:
        return "n/a"
    return f"{percent(rate['value'])} [{100 * rate['ci_low']:.1f}, {100 * rate['ci_high']:.1f}]"


def default_templates() -> Path:
    """The folder of robaudit's default jinja2 templates: ``reports/templates/`` at the top of a source checkout
    (editable installs, tests), packaged into a wheel as ``robaudit/templates``."""
    packaged = Path(str(resources.files("robaudit"))) / "templates"
    if (packaged / "report.md.j2").is_file():
        return packaged
    return Path(__file__).resolve().parents[3] / "reports" / "templates"


def template_environment(folder: Path, *, autoescape: bool = False) -> SandboxedEnvironment:
    """A sandboxed jinja2 environment over ``folder`` with robaudit's filters (autoescaping for HTML)."""
    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(folder)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=autoescape,
    )
    env.filters.update(code=code_span, md=escape_markdown, pct=percent, ci=with_ci, eps=format_eps)
    return env


def with_randomized(details: dict[str, Any]) -> dict[str, Any]:
    """``details`` with ``randomized`` for ``stochastic``, the key run directories written before summary schema 3
    use (rebuilding their reports gives the current schema)."""
    if "stochastic" not in details:
        return dict(details)
    return {**{k: v for k, v in details.items() if k != "stochastic"}, "randomized": details["stochastic"]}


def build_summary(run_dir: RunDir) -> dict[str, Any]:
    """The versioned summary of a run, computed from its records (schema documented in docs/run-directory.md)."""
    config = run_dir.read_config()
    manifest = run_dir.read_manifest()
    if manifest is None:
        raise RobauditError(f"{str(run_dir.path)!r} has no readable manifest.json; pass a robaudit run directory")
    records = run_dir.read_records()
    frame = records_frame(records)
    attacks = [{**attack, **attack_metadata(attack)} for attack in config.get("attacks", [])]
    defenses = [{"label": "none", "kind": "none", "threats": ["none"]}]
    for purifier in config.get("purifiers", []):
        details = with_randomized(manifest.get("purifier_details", {}).get(purifier["label"], {}))
        defenses.append(
            {
                "label": purifier["label"],
                "kind": purifier["name"],
                "params": purifier["params"],
                "threats": list(config.get("threats", [])),
                **details,
            }
        )
    numbers = summarize(frame, attacks=attacks, defenses=defenses)
    attach_attack_details(numbers, manifest.get("attack_details", {}))
    expected = manifest["data"]["num_samples"]
    done = samples_with_records(frame)
    complete = manifest.get("status") == "complete" and done == expected
    card = manifest["model"]["card"]
    summary = {
        "schema": SUMMARY_SCHEMA,
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "complete": complete,
        "samples_done": done,
        "samples_expected": expected,
        "model": {
            "path": manifest["model"]["path"],
            "sha256": manifest["model"]["sha256"],
            "arch": card["arch"],
            "num_classes": card["num_classes"],
            "class_names": card["class_names"],
            "input_size": card.get("input_size", []),
            "randomized": with_randomized(manifest["model"].get("randomized", {"randomized": False})),
            "origin": card.get("origin", {}),
        },
        "data": {
            "description": manifest["data"]["description"],
            "sha256": manifest["data"]["sha256_tensors"],
            "provenance": manifest["data"].get("provenance", {}),
        },
        "threat_model": threat_model(config, defended=len(defenses) > 1),
        "findings": [],
        "seed": config.get("seed"),
        **numbers,
    }
    outcomes = headline_outcomes(run_dir, config, records)
    add_checks(summary, frame, manifest, config, run_dir.read_passes(), run_dir.read_rung_samples(), outcomes)
    add_certified(summary, run_dir, config)
    return summary


def add_certified(summary: dict[str, Any], run_dir: RunDir, config: dict[str, Any]) -> None:
    """The certified side of the bracket (``certify:`` runs): the ``certified`` section and its consistency
    findings."""
    certified = run_dir.read_certified()
    if certified and config.get("certify"):
        seconds = run_dir.read_certified_seconds()
        summary["certified"] = certified_section(
            certified, eps_l2=config["eps_l2"], config=config["certify"], seconds=seconds
        )
        summary["findings"] += [f.to_dict() for f in consistency_findings(summary["certified"])]


def headline_outcomes(run_dir: RunDir, config: dict[str, Any], records: list[dict[str, Any]]) -> list[Any]:
    """The headline convergence check's outcome per defense and threat model, read from the records
    (``headline_check.plan_check``; empty for runs without it)."""
    size = int(config.get("part_size", 1))
    has_part = lambda stage: all(run_dir.has_part(name) for name, _ in stage.parts(size))  # noqa: E731
    return plan_check(config, records, has_part)[1]


def add_checks(
    summary: dict[str, Any],
    frame: pd.DataFrame,
    manifest: dict[str, Any],
    config: dict[str, Any],
    passes: dict,
    rung_samples: dict | None = None,
    outcomes: list[Any] | None = None,
) -> None:
    """The convergence checks, the sanity flags (pre-flight, post-run, memory, convergence) and the warnings."""
    summary["convergence"] = convergence_checks(summary, config, passes or {}, rung_samples or {}, outcomes)
    flags = [Finding(**f) for f in manifest.get("preflight", [])] + postrun(frame, summary) + memory_findings(manifest)
    flags += convergence_findings(summary["convergence"])
    summary["findings"] = [f.to_dict() for f in flags]
    summary["preflight_checked"] = "preflight" in manifest
    summary["checks"] = list(CHECKS_BEFORE if "preflight" in manifest else ()) + list(CHECKS_AFTER)
    summary["warnings"] = [f"{f.title}: {f.explanation}" for f in flags if f.severity != "info"]


def samples_with_records(frame: pd.DataFrame) -> int:
    """Samples (not records) that have their clean prediction recorded: a randomized classifier's clean condition
    has one record per scoring draw, so records are counted once per sample id."""
    return int(frame.loc[frame["condition"] == CLEAN, "sample_id"].nunique())


def attack_metadata(attack: dict[str, Any]) -> dict[str, Any]:
    """An attack's ``access`` and ``tier`` as saved in the run's config. Runs saved before robaudit stored them fall
    back to the registry when the name is still registered, else to an unordered white-box attack."""
    if "access" in attack:
        return {"access": attack["access"], "tier": attack.get("tier")}
    from robaudit.attacks.base import ATTACKS

    meta = ATTACKS.get(attack["name"]).meta if attack.get("name") in ATTACKS else {}
    return {"access": meta.get("access", "white-box"), "tier": meta.get("tier")}


def threat_model(config: dict[str, Any], *, defended: bool) -> dict[str, Any]:
    """The summary's statement of the threat models, budgets and draws of a run."""
    return {
        "summary": "white-box attacks against the undefended classifier (gradients of its logits)"
        + ("; against each purifier under the threat models listed" if defended else ""),
        "threats": {t: THREAT_DESCRIPTIONS[t] for t in ["none", *config.get("threats", [])]},
        "eps_linf": config.get("eps"),
        "eps_l2": config.get("eps_l2"),
        "eot": config.get("eot"),
        "repeats": config.get("repeats"),
        "selection_draws": config.get("selection_draws"),
    }


def attach_attack_details(numbers: dict[str, Any], details: dict[str, Any]) -> None:
    """Copy what each built attack reported (AutoAttack's version, components run and dropped) into its results.

    Details are keyed by condition (``attack|defense|threat``), or by attack label for the attack made against the
    classifier alone (the undefended and non-adaptive conditions).
    """
    for defense in numbers["defenses"]:
        for result in defense["results"]:
            key = Condition(result["label"], defense["label"], result["threat"]).key()
            shared = result["threat"] in ("none", "non-adaptive")
            result.update(details.get(key) or (details.get(result["label"], {}) if shared else {}))


def with_timings(summary: dict[str, Any], timings: dict[str, float]) -> dict[str, Any]:
    """A copy of ``summary`` for the reports, with seconds per sample from ``timings`` (``RunDir.read_timings``).

    Adds ``seconds_per_image`` to each defense and ``seconds_per_attacked_sample`` to each result (0.0 when the
    timing is unknown). summary.json itself holds no wall-clock values, so that it is reproducible byte for byte.
    """
    view = json.loads(json.dumps(summary))
    for defense in view["defenses"]:
        label = defense["label"]
        defense["seconds_per_image"] = timings.get(Condition.clean(label).key(), 0.0)
        for result in defense["results"]:
            key = Condition(result["label"], label, result["threat"]).key()
            result["seconds_per_attacked_sample"] = timings.get(key, 0.0)
    view["attacks"] = view["defenses"][0]["results"]
    return view


def memory_findings(manifest: dict[str, Any]) -> list[Finding]:
    """An info flag when batches ran in smaller chunks after the device ran out of memory."""
    splits = manifest.get("batch_splits") or []
    if not splits:
        return []
    evidence = "; ".join(f"samples {s['start']}-{s['stop']} in chunks of {s['chunk']}" for s in splits[:5])
    return [
        Finding(
            check="out-of-memory",
            severity="info",
            title=f"{len(splits)} batch(es) were split after the device ran out of memory",
            explanation="those samples ran in smaller chunks; random starts are seeded per chunk, so their "
            "records can differ (not in meaning) from a run with room for the whole batch",
            evidence=evidence + ("; ..." if len(splits) > 5 else ""),
        )
    ]


def rebuild_reports(path: str | Path, *, template: str | Path | None = None) -> dict[str, Path]:
    """Write summary.json, timings.json, results.csv and report.md (or ``template``'s output) for the run."""
    run_dir = RunDir(path)
    if not run_dir.path.is_dir():
        raise RobauditError(f"run directory {str(run_dir.path)!r} does not exist; pass a directory evaluate wrote")
    summary = build_summary(run_dir)
    passes = run_dir.read_passes()
    if passes:  # runs that counted passes: exact, so they belong in summary.json
        summary["passes"] = passes
    disagreements = run_dir.read_disagreements()
    if disagreements:  # --precision bf16: final verdicts where bf16 and float32 differed (float32 stood)
        summary["precision_disagreements"] = disagreements
    manifest = run_dir.read_manifest()
    table = results_table(summary)
    timings = run_dir.read_timings()
    written = {
        "summary": atomic_write_json(run_dir.path / "summary.json", summary),
        "timings": atomic_write_json(
            run_dir.path / "timings.json", {"seconds_per_sample": timings, "passes_per_sample": passes}
        ),
        "results": atomic_write_text(run_dir.path / "results.csv", table.to_csv(index=False, float_format="%.6g")),
    }
    summary = with_timings(summary, timings)
    pngs = figures(summary, run_dir)
    for name, png in pngs.items():
        atomic_write(run_dir.path / "plots" / f"{name}.png", lambda tmp, data=png: tmp.write_bytes(data))
    if template is None:
        env, name, target = template_environment(default_templates()), "report.md.j2", "report.md"
    else:
        template = Path(template)
        if not template.is_file():
            raise RobauditError(f"template {str(template)!r} does not exist; pass a jinja2 template file")
        env, name = template_environment(template.parent), template.name
        target = template.name.removesuffix(".j2") if template.name.endswith(".j2") else f"{template.name}.out"
    text = env.get_template(name).render(
        summary=summary, manifest=manifest, config=run_dir.read_config(), figures=sorted(pngs)
    )
    written["report"] = atomic_write_text(run_dir.path / target, text)
    if template is None:
        written["html"] = write_html(run_dir, summary, manifest, pngs)
    return written


def figures(summary: dict[str, Any], run_dir: RunDir | None = None) -> dict[str, bytes]:
    """The report's plots as PNG bytes, keyed by name (also written to RUN/plots/)."""
    from robaudit.reporting.plots import (
        certified_vs_radius,
        convergence_ladders,
        gallery,
        per_class_bars,
        robust_accuracy_bars,
        robust_vs_eps,
    )

    pngs = {"1-robust-accuracy": robust_accuracy_bars(summary)}
    if summary["defenses"][0].get("per_class"):
        pngs["2-per-class"] = per_class_bars(summary, summary["model"]["class_names"])
    sweep = robust_vs_eps(summary)
    if sweep is not None:
        pngs["3-robust-vs-eps"] = sweep
    ladders = convergence_ladders(summary)
    if ladders is not None:
        pngs["5-convergence"] = ladders
    certified = certified_vs_radius(summary)
    if certified is not None:
        pngs["6-certified"] = certified
    stored = run_dir.read_gallery() if run_dir is not None else None
    if stored is not None and any(k.startswith("adversarial|") for k in stored[0]):
        images, ids = stored
        wanted = set(ids)
        records = [r for r in run_dir.read_records() if r["sample_id"] in wanted and r["repeat"] == 0]
        preds = {(r["sample_id"], r["condition"]): r["pred"] for r in records}
        labels = {r["sample_id"]: r["label"] for r in records}
        pngs["4-gallery"] = gallery(images, ids, preds, labels, summary["model"]["class_names"])
    return pngs


def write_html(run_dir: RunDir, summary: dict[str, Any], manifest: dict[str, Any], pngs: dict[str, bytes]) -> Path:
    """A self-contained HTML report (plots embedded as data URIs), rendered with autoescaping."""
    env = template_environment(default_templates(), autoescape=True)
    encoded = {name: base64.b64encode(png).decode("ascii") for name, png in pngs.items()}
    html = env.get_template("report.html.j2").render(summary=summary, manifest=manifest, figures=encoded)
    return atomic_write_text(run_dir.path / "report.html", html)


def load_summary(path: str | Path) -> dict[str, Any]:
    """Read a run's summary.json; a summary of schema 4 or earlier has its ``flags`` read as ``findings``."""
    summary = json.loads((Path(path) / "summary.json").read_text(encoding="utf-8"))
    if "flags" in summary and "findings" not in summary:
        summary["findings"] = summary.pop("flags")
    return summary
