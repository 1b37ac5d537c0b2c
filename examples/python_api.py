"""robaudit from Python: one call, one verdict.

    python examples/python_api.py [--model PATH] [--limit 64] [--out runs/python-api]

``robaudit.audit`` takes what ``robaudit evaluate --config`` takes -- a YAML path or a mapping of the same keys --
runs the audit, judges its gates and returns an ``AuditResult``: the run directory (records, summary.json,
report.md), the summary, the judged gates and ``passed``. The CLI's exit code is read from the same ``passed``.
"""

from __future__ import annotations

import argparse

import robaudit

# %% The audit, as the YAML would say it. Without --model, the quickstart's ViT is trained once on scikit-learn's
# digits and cached (about 30 s on a 2-core CPU); the gate makes the run a release check, so the convergence check
# escalates (a gated run escalates).
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default=None, help="a classifier checkpoint (default: train the quickstart ViT)")
parser.add_argument("--limit", type=int, default=64, help="test digits to audit")
parser.add_argument("--out", default="runs/python-api", help="run directory")
args = parser.parse_args()

config = {
    "model": args.model or {"train": {"data": "digits", "seed": 0}},
    "data": {"name": "digits", "split": "test", "limit": args.limit},
    "attacks": ["fgsm", {"name": "pgd", "steps": 20}],
    "eps": "8/255",
    "gates": ["worst_case >= 0.05"],
    "out": args.out,
}

# %% Run it. Re-running the same config resumes the same run directory; overwrite starts it again.
result = robaudit.audit(config, overwrite=True)

# %% The headline is the worst case over every attack that ran, with its 95% interval over samples.
headline = result.headline["robust_accuracy"]
print(f"run directory: {result.run_dir}")
print(f"robust accuracy, worst case over {', '.join(result.headline['over'])}: ", end="")
print(f"{headline['value']:.1%} [{headline['ci_low']:.1%}, {headline['ci_high']:.1%}]")
for check in result.summary.get("convergence", []):
    print(f"convergence check: {check.get('statement', check.get('verdict', ''))}")
for gate in result.gates:
    print(f"{'pass' if gate.passed else 'FAIL'}: {gate.message}")
print(f"verdict: {'PASS' if result.passed else 'FAIL'}")
