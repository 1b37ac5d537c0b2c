"""``robaudit evaluate``'s flags as a config mapping: the CLI's one job before ``robaudit.audit``. The flags win over
the YAML's values; the library checks and resolves the mapping."""

from __future__ import annotations

from typing import Any

from robaudit.errors import ConfigError


def with_overrides(mapping: dict[str, Any], **flags: Any) -> dict[str, Any]:
    """A copy of a config mapping with command-line values over it (they win); ``None`` means "not given".
    ``threat`` is the threat models a purifier is audited under; ``rb_threat`` a RobustBench model's threat (Linf, L2,
    corruptions)."""
    mapping = dict(mapping)
    if flags["model"] is not None:
        mapping["model"] = flags["model"]
    threats = [t.strip() for t in (flags["threat"] or "").split(",") if t.strip()]
    model_keys = (
        "arch",
        "num_classes",
        "randomized",
        "weights",
        "model_dir",
        "model_dataset",
        "rb_threat",
        "mean",
        "std",
    )
    if any(flags.get(k) for k in model_keys):
        model = mapping.get("model")
        model = {"path": model} if isinstance(model, str) else dict(model or {})
        model.update({k.removeprefix("model_"): flags[k] for k in model_keys if flags.get(k)})
        mapping["model"] = model
    data = mapping.get("data")
    data = {"name": data} if isinstance(data, str) else dict(data or {})
    if flags["data"] is not None:
        keep = ("split", "limit", "image_size", "channels", "subset_seed", "skip_bad", "class_map")
        data = {k: v for k, v in data.items() if k in keep}
        data["name"] = flags["data"]
    data.update(flags["data_flags"])
    if data:
        mapping["data"] = data
    if flags["attacks"] is not None:
        mapping["attacks"] = [a.strip() for a in flags["attacks"].split(",") if a.strip()]
    if flags["purifier"] is not None:
        mapping["purifiers"] = [p.strip() for p in flags["purifier"].split(",") if p.strip()]
    if flags["purifier_checkpoint"] is not None:
        purifiers = mapping.get("purifiers") or []
        if len(purifiers) != 1:
            raise ConfigError(
                "--purifier-checkpoint needs exactly one purifier; set checkpoints per purifier in "
                "the config (purifiers: [{name: ddpm, checkpoint: PATH}])"
            )
        entry = purifiers[0]
        entry = {"name": entry} if isinstance(entry, str) else dict(entry)
        mapping["purifiers"] = [{**entry, "checkpoint": flags["purifier_checkpoint"]}]
    if threats:
        mapping["threats"] = threats
    return mapping
