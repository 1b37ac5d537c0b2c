"""A fixed run directory (six samples, clean + FGSM + PGD) written the way runs were before parts had a fixed
size: the golden report test and the template tests render it."""

from __future__ import annotations

from pathlib import Path

from robaudit.runs.rundir import RunDir


def _records() -> list[dict]:
    """Six samples, clean + fgsm + pgd: a, b survive everything; c falls to pgd; d falls to both; e to fgsm only;
    f is wrong when clean."""
    outcomes = {"a": (1, 1, 1), "b": (1, 1, 1), "c": (1, 1, 0), "d": (1, 0, 0), "e": (1, 0, 1), "f": (0, 0, 0)}
    records = []
    for index, (sample, (clean, fgsm, pgd)) in enumerate(outcomes.items()):
        label = index % 2
        for attack, ok in (("none", clean), ("fgsm", fgsm), ("pgd", pgd)):
            attacked = attack != "none" and bool(clean)
            records.append(
                {
                    "sample_id": sample,
                    "index": index,
                    "label": label,
                    "condition": f"{attack}|none|none",
                    "attack": attack,
                    "norm": "none" if attack == "none" else "Linf",
                    "eps": 0.0 if attack == "none" else 8 / 255,
                    "purifier": "none",
                    "threat": "none",
                    "repeat": 0,
                    "clean_pred": label if clean else 1 - label,
                    "pred": label if ok else 1 - label,
                    "correct": bool(ok),
                    "attacked": attacked,
                    "linf": 8 / 255 if attacked else 0.0,
                    "l2": 0.5 if attacked else 0.0,
                }
            )
    return records


def _run_dir(path: Path) -> RunDir:
    run = RunDir(path)
    run.records_dir.mkdir(parents=True)
    seconds = {"none|none|none": {"seconds": 0.006, "samples": 6}}
    seconds.update({f"{a}|none|none": {"seconds": 0.05, "samples": 5} for a in ("fgsm", "pgd")})
    run.write_timings("part-000000-000006.jsonl", seconds)
    run.write_part("part-000000-000006.jsonl", _records())
    attack = {"norm": "Linf", "eps": 8 / 255}
    run.write_config(
        {
            "model": {"path": "model.pt"},
            "data": {"name": "digits", "split": "test"},
            "attacks": [
                {**attack, "name": "fgsm", "label": "fgsm", "params": {"eps": 8 / 255}},
                {
                    **attack,
                    "name": "pgd",
                    "label": "pgd",
                    "params": {"alpha": 0.0039, "eps": 8 / 255, "restarts": 1, "steps": 20},
                },
            ],
            "eps": 8 / 255,
            "eps_l2": 0.5,
            "seed": 0,
            "batch_size": 128,
            "device": "cpu",
        }
    )
    card = {"arch": "vit_tiny_patch16_224", "num_classes": 2, "class_names": ["normal", "pneumonia"]}
    run.write_manifest(
        {
            "kind": "robaudit.run",
            "status": "complete",
            "fingerprint": "f",
            "started": "2026-01-01T00:00:00+00:00",
            "finished": "2026-01-01T00:01:00+00:00",
            "seed": 0,
            "device": {"type": "cpu", "name": "test"},
            "versions": {"robaudit": "0.1.0", "torch": "2.x"},
            "preflight": [],
            "model": {"path": "model.pt", "sha256": "ab" * 32, "card": card},
            "data": {"description": "digits (test)", "sha256_tensors": "cd" * 32, "num_samples": 6, "provenance": {}},
            "attack_details": {},
            "purifier_details": {},
        }
    )
    return run
