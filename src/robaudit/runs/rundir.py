"""Run directories: resolved config, manifest, per-sample record parts keyed by sample range, reports.

Layout::

    config.yaml        the resolved configuration
    manifest.json      versions, hashes, device, seed, times, status ("running" | "complete")
    records/part-000000-000128.jsonl   one JSON record per (sample, condition), one file per part (sample range)
    timings/part-000000-000128.json    wall-clock seconds per condition of that part (kept out of the records)
    shards/shard-000-of-002.json       each shard's manifest: host, device, times, parts done, out-of-memory splits
    certified/part-000000-000128.jsonl  certification records (``certify:``), one per (sample, defense, sigma)
    gallery.safetensors                the first samples' clean, adversarial and purified images
    summary.json  timings.json  results.csv  report.md  report.html  plots/

A run is the union of its parts; a resumed run, a torchrun rank or a job-array task writes its own parts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from robaudit.errors import RobauditError
from robaudit.fileio import atomic_write_json, atomic_write_text

# classifier forward / backward passes, purifier network evaluations and gradients through the purifier network
PASS_KINDS = ("forward", "backward", "purifier", "purifier_backward", "scoring")


def add_timing(timings: dict[str, dict[str, float]], condition: str, seconds: float, samples: float) -> None:
    """Add ``seconds`` spent on ``samples`` samples to ``timings[condition]`` (``{"seconds", "samples"}``)."""
    entry = timings.setdefault(condition, {"seconds": 0.0, "samples": 0})
    entry["seconds"] += seconds
    entry["samples"] += samples


def add_counts(timings: dict[str, dict[str, float]], condition: str, counts: dict[str, int]) -> None:
    """Add integer ``counts`` by name to ``timings[condition]`` (passes, rung samples, precision disagreements)."""
    entry = timings.setdefault(condition, {"seconds": 0.0, "samples": 0})
    for name, count in counts.items():
        entry[name] = entry.get(name, 0) + count


def add_passes(timings: dict[str, dict[str, float]], condition: str, passes: dict[str, int], evaluated: int) -> None:
    """Add ``passes`` (sample-passes by kind) spent evaluating ``condition`` on ``evaluated`` samples."""
    add_counts(timings, condition, {**passes, "evaluated": evaluated})


def add_rung_samples(timings: dict[str, dict[str, float]], condition: str, standing: int, reattacked: int) -> None:
    """Add the samples a convergence rung found standing below it and the ones it attacked again (a seeded fraction
    of them may leave some out): the check is judged on what was attacked."""
    add_counts(timings, condition, {"standing": standing, "reattacked": reattacked})


def add_disagreements(timings: dict[str, dict[str, float]], condition: str, disagreed: int, compared: int) -> None:
    """Add the final verdicts that differed between reduced precision and float32 (``--precision``), of
    ``compared``; nothing is written when nothing was compared (float32 runs)."""
    if compared:
        add_counts(timings, condition, {"disagreed": disagreed, "compared": compared})


class RunDir:
    """A run directory on disk."""

    OWN_ENTRIES = ("records", "timings", "shards", "certified", "config.yaml", "manifest.json")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records_dir = self.path / "records"
        self.timings_dir = self.path / "timings"
        self.shards_dir = self.path / "shards"
        self.manifest_path = self.path / "manifest.json"
        self.config_path = self.path / "config.yaml"

    def prepare(self, *, fingerprint: str, overwrite: bool, alone: bool = True) -> set[str]:
        """Create or reopen the directory; return the names of record parts already complete.

        A directory holding a different run (another fingerprint) is refused unless ``overwrite``. A directory that
        another shard is just creating (only robaudit's own entries, no manifest yet) is joined. Temporary files of
        a killed process are removed only when this process runs ``alone`` (not one shard among others).
        """
        if self.path.exists() and not self.path.is_dir():
            raise RobauditError(f"output path {str(self.path)!r} is an existing file; pass another --out")
        if overwrite and self.path.exists():
            if not (self.manifest_path.exists() or not any(self.path.iterdir())):
                raise RobauditError(
                    f"--overwrite refused: {str(self.path)!r} is not a robaudit run directory; pass another --out"
                )
            shutil.rmtree(self.path)
        if self.path.exists() and any(self.path.iterdir()):
            manifest = self.read_manifest()
            if manifest is None and {p.name for p in self.path.iterdir()} <= set(self.OWN_ENTRIES):
                self.records_dir.mkdir(parents=True, exist_ok=True)
                return self.part_names()
            if manifest is None:
                raise RobauditError(
                    f"output directory {str(self.path)!r} exists and is not a robaudit run; pass another --out"
                )
            if manifest.get("fingerprint") != fingerprint:
                raise RobauditError(
                    f"run directory {str(self.path)!r} holds a different run (other config, model or data); "
                    "pass --overwrite to replace it or another --out"
                )
            for stale in self.path.rglob(".*.tmp") if alone else ():  # left by a process killed mid-write
                stale.unlink(missing_ok=True)
            return self.part_names()
        self.records_dir.mkdir(parents=True, exist_ok=True)
        return set()

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, or None when absent/unreadable."""
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Atomically write the manifest."""
        atomic_write_json(self.manifest_path, manifest)

    def write_config(self, config: dict[str, Any]) -> None:
        """Atomically write the resolved config."""
        atomic_write_text(self.config_path, yaml.safe_dump(config, sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        """The resolved config saved with the run."""
        try:
            config = yaml.safe_load(self.config_path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise RobauditError(
                f"{str(self.path)!r} is not a readable robaudit run ({self.config_path.name}: {reason}); "
                "pass a directory evaluate wrote"
            ) from None
        if not isinstance(config, dict):
            raise RobauditError(f"{str(self.config_path)!r} is not a robaudit run config; pass a run directory")
        return config

    def write_part(self, name: str, records: list[dict[str, Any]]) -> None:
        """Atomically write the records part ``name`` (e.g. ``part-000000-000128.jsonl``)."""
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        atomic_write_text(self.records_dir / name, lines)

    def part_names(self) -> set[str]:
        """The names of the records parts written so far."""
        return {p.name for p in self.records_dir.glob("part-*.jsonl")}

    def read_layout(self) -> dict[str, int] | None:
        """Where the run's parts begin and end (``engine.plan.PartLayout``), or None for a run that has not settled
        it (or was written before layouts)."""
        try:
            return json.loads((self.records_dir / "layout.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write_layout(self, layout: dict[str, int]) -> None:
        """Atomically write the run's part layout (before any part written in it)."""
        atomic_write_json(self.records_dir / "layout.json", layout)

    def has_part(self, name: str) -> bool:
        """Whether the records part ``name`` exists (its samples are done)."""
        return (self.records_dir / name).is_file()

    def write_timings(self, name: str, timings: dict[str, dict[str, float]]) -> None:
        """Atomically write the wall-clock timings ``{condition: {seconds, samples}}`` of records part ``name``."""
        atomic_write_json(self.timings_dir / name.replace(".jsonl", ".json"), timings)

    def write_shard_manifest(self, name: str, manifest: dict[str, Any]) -> None:
        """Atomically write shard ``name``'s manifest (``shards/<name>.json``)."""
        atomic_write_json(self.shards_dir / f"{name}.json", manifest)

    def read_shard_manifests(self) -> dict[str, dict[str, Any]]:
        """Every shard manifest, keyed by shard name (unreadable ones are skipped: they are informative only)."""
        shards = {}
        for path in sorted(self.shards_dir.glob("shard-*.json")):
            try:
                shards[path.stem] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
        return shards

    def read_costs(self) -> dict[str, dict[str, float]]:
        """Each condition's totals over the parts whose records exist: seconds, samples and (runs that counted them)
        sample-passes by kind."""
        totals: dict[str, dict[str, float]] = {}
        for part in sorted(self.records_dir.glob("part-*.jsonl")):
            try:
                timings = json.loads((self.timings_dir / part.name.replace(".jsonl", ".json")).read_text("utf-8"))
            except (OSError, ValueError):
                continue  # timings are informative only; a missing file costs no number
            for condition, entry in timings.items():
                add_timing(totals, condition, float(entry.get("seconds", 0.0)), float(entry.get("samples", 0)))
                if "evaluated" in entry:
                    passes = {kind: int(entry.get(kind, 0)) for kind in PASS_KINDS}
                    add_passes(totals, condition, passes, int(entry["evaluated"]))
                add_disagreements(totals, condition, int(entry.get("disagreed", 0)), int(entry.get("compared", 0)))
                if "standing" in entry:
                    add_rung_samples(totals, condition, int(entry["standing"]), int(entry["reattacked"]))
        return totals

    def read_timings(self) -> dict[str, float]:
        """Seconds per sample of each condition, over the parts whose records exist."""
        return {c: t["seconds"] / t["samples"] for c, t in self.read_costs().items() if t["samples"]}

    def read_passes(self) -> dict[str, dict[str, float]]:
        """Passes per evaluated sample of each condition, by kind: everything the condition cost (its attack, also
        when shared with other conditions, and its scoring draws) over the samples it was evaluated on. Exact sums
        of integer counts: the same for every batch size, shard layout and machine (runs that counted them)."""
        return {
            condition: {kind: round(t.get(kind, 0) / t["evaluated"], 3) for kind in PASS_KINDS}
            for condition, t in self.read_costs().items()
            if t.get("evaluated")
        }

    def read_rung_samples(self) -> dict[str, dict[str, int]]:
        """``{rung condition: {"standing", "reattacked"}}``: survivors of the rung below, and those attacked again."""
        return {
            condition: {"standing": int(t["standing"]), "reattacked": int(t["reattacked"])}
            for condition, t in self.read_costs().items()
            if "standing" in t
        }

    def read_disagreements(self) -> dict[str, dict[str, int]]:
        """``{condition: {"disagreed", "compared"}}``: final verdicts where reduced precision and float32 differed
        (float32 stood), for runs with ``--precision`` other than fp32."""
        return {
            condition: {"disagreed": int(t["disagreed"]), "compared": int(t["compared"])}
            for condition, t in self.read_costs().items()
            if t.get("compared")
        }

    def write_gallery(self, images: dict[str, Any], ids: list[str]) -> None:
        """Atomically write the first samples' clean / adversarial / purified images (float32) for reports."""
        from safetensors.torch import save_file

        from robaudit.fileio import atomic_write

        tensors = {k: v.float().contiguous() for k, v in images.items()}
        metadata = {"ids": json.dumps(ids)}
        atomic_write(self.path / "gallery.safetensors", lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    def read_gallery(self) -> tuple[dict[str, Any], list[str]] | None:
        """(images by key, sample ids) of the gallery, or None when the run has none."""
        from safetensors import safe_open

        path = self.path / "gallery.safetensors"
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as handle:
            ids = json.loads((handle.metadata() or {}).get("ids", "[]"))
            return {k: handle.get_tensor(k) for k in handle.keys()}, ids  # noqa: SIM118 (not a mapping)

    def write_certified(self, name: str, records: list[dict[str, Any]], seconds: dict[str, Any]) -> None:
        """Atomically write the certification records of part ``name`` (``certified/part-*.jsonl``), after their
        wall-clock seconds (``certified/seconds-*.json``, kept out of the records)."""
        folder = self.path / "certified"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / f"seconds-{name.removesuffix('.jsonl')}.json", seconds)
        atomic_write_text(folder / name, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))

    def read_certified_seconds(self) -> dict[str, dict[str, Any]]:
        """``{smoothed classifier: {seconds, samples, passes: {forward, backward, purifier, purifier_backward}}}``
        summed over the certified parts."""
        total: dict[str, dict[str, Any]] = {}
        for path in sorted((self.path / "certified").glob("seconds-*.json")):
            for key, spent in json.loads(path.read_text(encoding="utf-8")).items():
                row = total.setdefault(key, {"seconds": 0.0, "samples": 0, "passes": {}})
                row["seconds"] += spent["seconds"]
                row["samples"] += spent["samples"]
                for kind, count in spent.get("passes", {}).items():
                    row["passes"][kind] = row["passes"].get(kind, 0) + count
        return total

    def has_certified(self, name: str) -> bool:
        """Whether part ``name`` has its certification records."""
        return (self.path / "certified" / name).is_file()

    def read_certified(self) -> list[dict[str, Any]]:
        """Every certification record of the run, in part order (none when the run certified nothing)."""
        folder = self.path / "certified"
        records: list[dict[str, Any]] = []
        for part in sorted(folder.glob("part-*.jsonl")) if folder.is_dir() else ():
            records.extend(json.loads(line) for line in part.read_text(encoding="utf-8").splitlines() if line)
        return records

    def read_records(self) -> list[dict[str, Any]]:
        """All records of all parts, in part order."""
        if not self.records_dir.is_dir():
            raise RobauditError(f"{str(self.path)!r} is not a robaudit run directory (no records/); pass a run")
        records = []
        for part in sorted(self.records_dir.glob("part-*.jsonl")):
            try:
                records.extend(json.loads(line) for line in part.read_text(encoding="utf-8").splitlines() if line)
            except (OSError, ValueError) as exc:
                raise RobauditError(
                    f"records part {str(part)!r} is unreadable ({type(exc).__name__}); delete it and re-run the "
                    "same evaluate command to recompute that batch"
                ) from None
        return records
