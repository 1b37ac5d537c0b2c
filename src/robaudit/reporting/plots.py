"""Figures for reports (matplotlib, headless): robust accuracy per condition and per class, as PNG bytes."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from robaudit.runs.records import Condition  # noqa: E402
from robaudit.threats import NONE  # noqa: E402


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def robust_accuracy_bars(summary: dict[str, Any]) -> bytes:
    """Bar chart: clean and robust accuracy (with 95% intervals) for each attack x defense x threat model."""
    labels, values, lows, highs, colors = [], [], [], [], []
    palette = {"none": "#555555", "non-adaptive": "#4c72b0", "bpda": "#dd8452", "adaptive": "#c44e52"}
    for defense in summary["defenses"]:
        rows = [("clean", "none", defense["clean_accuracy"])]
        rows += [(r["label"], r["threat"], r["robust_accuracy"]) for r in defense["results"]]
        rows.append(("worst case", "none", defense["worst_case"]["robust_accuracy"]))
        for name, threat, rate in rows:
            if rate["value"] is None:
                continue
            labels.append(f"{defense['label']}: {name}" + (f" ({threat})" if threat not in ("none",) else ""))
            values.append(rate["value"])
            lows.append(rate["value"] - rate["ci_low"])
            highs.append(rate["ci_high"] - rate["value"])
            colors.append("#222222" if name == "worst case" else palette.get(threat, "#8172b2"))
    figure, axis = plt.subplots(figsize=(8, 0.32 * len(labels) + 1.2))
    positions = range(len(labels))
    axis.barh(list(positions), values, xerr=[lows, highs], color=colors, capsize=2)
    axis.set_yticks(list(positions), labels, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel("accuracy (95% Wilson interval)")
    axis.set_title("Clean and robust accuracy per defense, attack and threat model")
    return _png(figure)


def convergence_ladders(summary: dict[str, Any]) -> bytes | None:
    """Robust accuracy (worst of N) against model passes per sample along each convergence ladder; None without
    ladders."""
    ladders = [c for c in summary.get("convergence", []) if all(r["passes_per_sample"] for r in c["ladder"][:1])]
    if not ladders:
        return None
    figure, axis = plt.subplots(figsize=(7, 4))
    for check in ladders:
        rows = [r for r in check["ladder"] if r["passes_per_sample"] is not None]
        passes = [sum(r["passes_per_sample"] for r in rows[: i + 1]) for i in range(len(rows))]
        values = [r["robust_accuracy_worst_of_n"]["value"] for r in rows]
        style = "-o" if check["converged"] else "--x"
        axis.plot(passes, values, style, label=f"{check['attack']} / {check['defense']} / {check['threat']}")
    axis.set_xscale("log")
    axis.set_ylim(0, 1)
    axis.set_xlabel("model passes per sample, cumulative along the ladder (log)")
    axis.set_ylabel("robust accuracy, worst of N")
    axis.set_title("Convergence: robust accuracy as the attack effort escalates (dashed: not converged)")
    axis.legend(fontsize=7)
    return _png(figure)


def per_class_bars(summary: dict[str, Any], class_names: list[str]) -> bytes:
    """Grouped bars per class: clean and worst-case robust accuracy of each defense."""
    defenses = summary["defenses"]
    classes = [c["label"] for c in defenses[0]["per_class"]]
    width = 0.8 / (2 * len(defenses))
    figure, axis = plt.subplots(figsize=(min(14, 2 + 0.18 * len(classes) * len(defenses)), 3.8))
    for d_index, defense in enumerate(defenses):
        by_class = {c["label"]: c for c in defense["per_class"]}
        for k, (key, alpha) in enumerate((("clean_accuracy", 0.45), ("worst_case", 1.0))):
            offset = (2 * d_index + k) * width - 0.4 + width / 2
            values = [by_class[c][key]["value"] or 0 for c in classes]
            axis.bar(
                [i + offset for i in range(len(classes))],
                values,
                width,
                alpha=alpha,
                label=f"{defense['label']} {'clean' if k == 0 else 'worst case'}",
                color=f"C{d_index}",
            )
    names = [class_names[c] if c < len(class_names) else str(c) for c in classes]
    axis.set_xticks(range(len(classes)), names, rotation=30, ha="right", fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy")
    axis.set_title("Per class: clean (light) and worst-case robust (dark) accuracy")
    axis.legend(fontsize=7, ncol=len(defenses), loc="upper center", bbox_to_anchor=(0.5, -0.18))
    return _png(figure)


def robust_vs_eps(summary: dict[str, Any]) -> bytes | None:
    """Robust accuracy against the budget, one line per (attack, defense, threat model); None without a sweep."""
    lines: dict[tuple[str, str, str, str], list[tuple[float, dict[str, Any]]]] = {}
    for defense in summary["defenses"]:
        for r in defense["results"]:
            lines.setdefault((r["name"], r["norm"], defense["label"], r["threat"]), []).append((r["eps"], r))
    lines = {k: sorted(v, key=lambda p: p[0]) for k, v in lines.items() if len({e for e, _ in v}) > 1}
    if not lines:
        return None
    norms = sorted({k[1] for k in lines})
    figure, axes = plt.subplots(1, len(norms), figsize=(6 * len(norms), 4), squeeze=False)
    for axis, norm in zip(axes[0], norms, strict=True):
        for (name, line_norm, defense, threat), points in lines.items():
            if line_norm != norm:
                continue
            eps = [e for e, _ in points]
            values = [r["robust_accuracy"]["value"] for _, r in points]
            low = [r["robust_accuracy"]["value"] - r["robust_accuracy"]["ci_low"] for _, r in points]
            high = [r["robust_accuracy"]["ci_high"] - r["robust_accuracy"]["value"] for _, r in points]
            label = f"{name}, {defense}" + ("" if threat == "none" else f" ({threat})")
            axis.errorbar(eps, values, yerr=[low, high], marker="o", capsize=2, label=label)
        axis.set_xlabel(f"{norm} eps")
        axis.set_ylabel("robust accuracy (95% interval)")
        axis.set_ylim(0, 1)
        axis.set_title(f"Robust accuracy vs {norm} budget")
        axis.legend(fontsize=7)
    return _png(figure)


def certified_vs_radius(summary: dict[str, Any]) -> bytes | None:
    """Certified accuracy against the L2 radius, one curve per smoothed classifier (defense@sigma), the run's L2
    budget marked, with the attacked point (empirical robust accuracy of the same smoothed classifier) where it ran;
    None without certification."""
    certified = summary.get("certified")
    if not certified:
        return None
    figure, axis = plt.subplots(figsize=(6, 4))
    for result in certified["results"]:
        curve = result["curve"]
        line = axis.step([p["radius"] for p in curve], [p["certified_accuracy"] for p in curve], where="post")
        empirical = result.get("empirical_accuracy")
        if empirical and empirical.get("value") is not None:
            axis.plot([certified["eps_l2"]], [empirical["value"]], marker="x", color=line[0].get_color())
        line[0].set_label(result["smoothed"])
    axis.axvline(certified["eps_l2"], linestyle=":", color="grey", label=f"L2 budget {certified['eps_l2']:g}")
    axis.set_xlabel("L2 radius")
    axis.set_ylabel("certified accuracy")
    axis.set_ylim(0, 1)
    axis.set_title("Certified accuracy vs radius (x: attacked, the upper bound)")
    axis.legend(fontsize=7)
    return _png(figure)


def gallery(
    images: dict[str, Any],
    ids: list[str],
    preds: dict[tuple[str, str], int],
    labels: dict[str, int],
    class_names: list[str],
) -> bytes:
    """Grid of the first samples: clean, adversarial (undefended) and, per purifier, the strongest threat model's
    adversarial and purified image, titled with the prediction (red when wrong)."""
    order = {"adaptive": 0, "bpda": 1, "non-adaptive": 2, "none": 3}
    first_attack = next(k.split("|")[1] for k in images if k.startswith("adversarial|"))
    chosen: dict[str, str] = {}
    for key in images:
        kind, attack, defense, threat = (key.split("|") + [None] * 3)[:4]
        if kind == "adversarial" and attack == first_attack:
            best = chosen.get(defense)
            if best is None or order[threat] < order[best.split("|")[3]]:
                chosen[defense] = key
    columns = [("clean", "clean", Condition.clean(NONE).key())]
    for defense, key in sorted(chosen.items(), key=lambda item: item[0] != "none"):  # undefended first
        _, attack, _, threat = key.split("|")
        condition = Condition(attack, defense, threat).key()
        if defense == "none":
            columns.append((key, f"{attack}", condition))
        else:
            columns.append((key, f"{attack} ({threat})\nvs {defense}", None))
            columns.append((key.replace("adversarial|", "purified|", 1), f"purified by {defense}", condition))
    rows = len(ids)
    figure, axes = plt.subplots(rows, len(columns), figsize=(1.5 * len(columns), 1.6 * rows), squeeze=False)
    for r, sample in enumerate(ids):
        for c, (key, title, condition) in enumerate(columns):
            axis = axes[r][c]
            image = images[key][r]
            axis.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(title, fontsize=7)
            if condition is not None and (sample, condition) in preds:
                pred = preds[(sample, condition)]
                name = class_names[pred] if pred < len(class_names) else str(pred)
                axis.set_xlabel(f"pred {name}", fontsize=7, color="black" if pred == labels[sample] else "red")
    figure.suptitle("Examples: predictions in red are wrong", fontsize=9)
    return _png(figure)
