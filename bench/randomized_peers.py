"""Randomized classifiers: where robaudit's draws go, against the reference AutoAttack-rand, measured in one run.

    python bench/randomized_peers.py [--n 128] [--models noise,resize,sap] [--eps 16/255] [--json out.json] [--quick]

Three randomized classifiers on scikit-learn's digits (1 x 32 x 32), each trained here (seconds) and saved as a
TorchScript file robaudit did not make, so robaudit meets them as a user's model (detected randomized):

- ``noise``: Gaussian noise injection at the input (sigma 0.3), trained with it;
- ``resize``: random resize-and-pad, every row its own scale in [0.7, 1] and position (an affine resampling);
- ``sap``: stochastic activation pruning (Dhillon et al. 2018) after each ReLU of a plainly trained CNN.

On the first ``--n`` test digits, at Linf ``--eps``, each model is attacked by:

- ``reference autoattack-rand``: Croce & Hein's AutoAttack (``pyautoattack``), ``version='rand'`` (APGD-CE and
  APGD-DLR, 100 steps, 20 EOT draws), judged as it judges: one forward pass;
- ``robaudit autoattack``: ``robaudit.audit`` with autoattack (rand), the convergence check off;
- ``robaudit autoattack + check``: the same with its convergence check (the default);
- ``robaudit pgd + check``: the default audit (PGD-20, EOT 4) with its check.

Per row: model passes (forward + backward, counted by hooks at the classifier: the same unit for every tool) split by
purpose -- EOT gradient draws (their forward and backward passes), selection and judging draws (forward passes
without a backward), scoring draws, the check's rung (all of its passes) -- seconds (wall, the
whole audit for robaudit's rows: loading, checks, reports), and robust accuracy on the final images as the reference
judges it (one draw) and as robaudit does (worst of 10 draws, and their mean). Targets: robaudit autoattack + check
uses at most 1.3x the reference's passes and seconds, and its worst-of-10 is at or below the reference's one-draw
robust accuracy. ``--quick`` (the test suite): 8 digits, one epoch, short attacks -- it checks the bench runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tables import markdown_table  # bench/tables.py
from torch import nn

import robaudit
from robaudit.config import parse_eps
from robaudit.data import load_dataset
from robaudit.engine.passes import PassCounter
from robaudit.models.spec import ModelSpec, obtain_classifier
from robaudit.rng.seeding import isolated_global_rng

JUDGE_DRAWS = 10  # robaudit's worst of N and mean, applied to every row's final images alike


class SmallCNN(nn.Module):
    """Two strided convolutions and a linear layer; ``activate`` is where SAP prunes."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 16, 3, 2, 1), nn.Conv2d(16, 32, 3, 2, 1)
        self.fc = nn.Linear(32 * 8 * 8, 10)

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(h)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.activate(self.c1(self.prepare(x)))
        return self.fc(self.activate(self.c2(h)).flatten(1))


class NoiseInjection(SmallCNN):
    """Gaussian noise on the input, every call."""

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.3 * torch.randn_like(x)


class RandomResizePad(SmallCNN):
    """Each row shrunk to a random scale in [0.7, 1] and placed at a random position, zero-padded."""

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        scale = 0.7 + 0.3 * torch.rand(n, device=x.device)
        shift = (2 * torch.rand(n, 2, device=x.device) - 1) * (1 - scale)[:, None]
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0] = 1 / scale
        theta[:, 1, 1] = 1 / scale
        theta[:, :, 2] = -shift / scale[:, None]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


class StochasticActivationPruning(SmallCNN):
    """SAP (Dhillon et al. 2018): per row, draw as many units as the layer has, with replacement, each with
    probability proportional to its activation; keep the units drawn, rescaled by 1 / P(drawn)."""

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        h = F.relu(h)
        if self.training:
            return h
        flat = h.flatten(1)
        total = flat.sum(1, keepdim=True)
        p = flat / total.clamp_min(1e-12)
        draws = flat.shape[1]
        safe = torch.where(total > 0, p, torch.full_like(p, 1.0 / draws))
        picked = torch.multinomial(safe, draws, replacement=True)
        kept = torch.zeros_like(flat).scatter_(1, picked, 1.0)
        keep_probability = 1 - (1 - p).pow(draws)
        return (flat * kept / keep_probability.clamp_min(1e-12)).view_as(h)


MODELS = {"noise": NoiseInjection, "resize": RandomResizePad, "sap": StochasticActivationPruning}


def train_model(name: str, *, epochs: int, folder: Path) -> Path:
    """Train ``name`` on the digits' train split (seeded), script it and save it; the file's path."""
    data = load_dataset("digits", split="train")
    images, labels = data.images.float(), data.labels
    with isolated_global_rng(0):
        model = MODELS[name]()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(labels))
            for start in range(0, len(labels), 64):
                batch = order[start : start + 64]
                optimizer.zero_grad()
                F.cross_entropy(model(images[batch]), labels[batch]).backward()
                optimizer.step()
    path = folder / f"{name}.ts"
    torch.jit.script(model.eval()).save(str(path))
    return path


def judged(model: nn.Module, adversarial: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Robust accuracy of ``adversarial`` images: one draw (as the reference judges), worst of 10 and mean of 10."""
    with torch.no_grad(), isolated_global_rng(12345):
        correct = torch.stack([model(adversarial).argmax(1) == labels for _ in range(JUDGE_DRAWS)]).float()
    return {
        "robust_single_draw": round(float(correct[0].mean()), 4),
        "robust_worst_of_n": round(float(correct.min(0).values.mean()), 4),
        "robust_mean": round(float(correct.mean()), 4),
    }


def reference_row(path: Path, images: torch.Tensor, labels: torch.Tensor, *, eps: float, quick: bool) -> dict:
    """The reference AutoAttack-rand on the model robaudit loads (the same wrapper, so the same pass hooks)."""
    from pyautoattack import AutoAttack

    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    model, _ = obtain_classifier(ModelSpec(path=str(path)), device="cpu")
    model.eval()
    counter = PassCounter(model, [])
    adversary = AutoAttack(model, norm="Linf", eps=eps, version="rand", seed=0)
    if quick:
        adversary.apgd.n_iter, adversary.apgd.eot_iter = 5, 2
    tic = time.perf_counter()
    with counter.charge("reference"), isolated_global_rng(0):
        adversarial = adversary.run_standard_evaluation(images, labels, batch_size=len(labels))[0]
    seconds = time.perf_counter() - tic
    passes = counter.take("reference")
    row = {"run": "reference autoattack-rand", "passes": passes.forward + passes.backward, "seconds": seconds}
    row.update(eot=2 * passes.backward, selection=passes.forward - passes.backward, scoring=0, rung=0)
    return {**row, **judged(model, adversarial, labels)}


def robaudit_row(path: Path, run: str, attack: dict, *, check: bool, n: int, eps: float, work: Path) -> dict:
    """``robaudit.audit`` of ``attack`` on the model file, check on or off; passes by purpose from its summary."""
    config = {
        "model": str(path),
        "data": {"name": "digits", "limit": n},
        "attacks": [attack],
        "eps": eps,
        "out": str(work / run.replace(" ", "-").replace("+", "plus")),
        "convergence": "check" if check else "off",
    }
    tic = time.perf_counter()
    result = robaudit.audit(config, overwrite=True)
    seconds = time.perf_counter() - tic
    summary = result.summary
    defense = summary["defenses"][0]
    passes = summary["passes"]
    label = attack["name"]
    base = passes[f"{label}|none|none"]
    clean = passes["none|none|none"]["scoring"]
    ladders = [c["ladder"] for c in summary.get("convergence", [])]
    rung = sum(step["passes_per_sample"] for ladder in ladders for step in ladder[1:])  # per sample of the run
    row = {"run": run, "seconds": seconds, "eot": round(2 * base["backward"] * n), "rung": round(rung * n)}
    row["scoring"] = round((clean + base["scoring"]) * n)  # the clean and attack conditions' (the rung's: in its count)
    row["selection"] = round((base["forward"] - base["backward"] - base["scoring"]) * n)
    row["passes"] = row["eot"] + row["selection"] + row["scoring"] + row["rung"]
    worst = defense["worst_case"]["robust_accuracy"]["value"]
    means = [r["robust_accuracy"]["value"] for r in defense["results"] if r["label"] == label]
    single = single_draw(result.run_dir, label)
    return {
        **row,
        "robust_single_draw": single,
        "robust_worst_of_n": round(worst, 4),
        "robust_mean": round(means[0], 4),
    }


def single_draw(run_dir: Path, label: str) -> float:
    """Robust accuracy of the first scoring draw under ``label`` and its rungs (a sample must survive both)."""
    correct: dict[str, bool] = {}
    for part in sorted((Path(run_dir) / "records").glob("part-*.jsonl")):
        for record in map(json.loads, part.read_text().splitlines()):
            attack = record["condition"].split("|")[0].split("+")[0]
            if record["repeat"] == 0 and attack == label:
                correct[record["sample_id"]] = correct.get(record["sample_id"], True) and record["correct"]
    return round(sum(correct.values()) / max(1, len(correct)), 4)


def model_rows(name: str, path: Path, *, n: int, eps: float, quick: bool, work: Path) -> list[dict]:
    """Every row of one model."""
    data = load_dataset("digits", split="test", limit=n)
    images, labels = data.images.float(), data.labels
    small = {"steps": 5, "eot_iter": 2} if quick else {}
    rows = [reference_row(path, images, labels, eps=eps, quick=quick)]
    autoattack = {"name": "autoattack", **small}
    rows.append(robaudit_row(path, "robaudit autoattack", autoattack, check=False, n=n, eps=eps, work=work))
    rows.append(robaudit_row(path, "robaudit autoattack + check", autoattack, check=True, n=n, eps=eps, work=work))
    pgd = {"name": "pgd", **({"steps": 5} if quick else {})}
    rows.append(robaudit_row(path, "robaudit pgd + check", pgd, check=True, n=n, eps=eps, work=work))
    reference = rows[0]
    for row in rows:
        row["model"] = name
        row["seconds"] = round(row["seconds"], 2)
        row["passes vs reference"] = round(row["passes"] / max(1, reference["passes"]), 3)
        row["seconds vs reference"] = round(row["seconds"] / max(1e-9, reference["seconds"]), 3)
    checked = rows[2]
    checked["target met"] = (
        checked["passes vs reference"] <= 1.3
        and checked["seconds vs reference"] <= 1.3
        and checked["robust_worst_of_n"] <= reference["robust_single_draw"]
    )
    return rows


COLUMNS = ["model", "run", "passes", "eot", "selection", "scoring", "rung", "seconds", "passes vs reference"]
COLUMNS += ["seconds vs reference", "robust_single_draw", "robust_worst_of_n", "robust_mean", "target met"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=None, help="test digits per model (default 128; 8 with --quick)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--eps", default="16/255", help="Linf budget (default 16/255)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--quick", action="store_true", help="8 digits, one epoch, short attacks (the test suite)")
    args = parser.parse_args(argv)
    n, eps = args.n or (8 if args.quick else 128), parse_eps(args.eps, name="--eps")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for name in args.models.split(","):
            path = train_model(name, epochs=1 if args.quick else 8, folder=work)
            rows += model_rows(name, path, n=n, eps=eps, quick=args.quick, work=work)
            print(markdown_table([{k: r.get(k, "") for k in COLUMNS} for r in rows if r["model"] == name]), flush=True)
    print(markdown_table([{k: r.get(k, "") for k in COLUMNS} for r in rows]))
    if args.json:
        keys = ("model", "run", "passes", "seconds", "robust_single_draw", "robust_worst_of_n")
        args.json.write_text(json.dumps([{**{k: r[k] for k in keys}, **r} for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
