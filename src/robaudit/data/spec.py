"""A data source as a config names it: registered name or path, split, limit, size, channels and source options."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robaudit.config import as_mapping, build_dataclass
from robaudit.errors import ConfigError, DataError
from robaudit.frozen import frozen, thawed

if TYPE_CHECKING:
    from robaudit.data.imageset import ImageSet
    from robaudit.data.transforms import EvalTransform

COMMON_OPTIONS = ("split", "limit", "image_size", "channels", "subset_seed", "skip_bad", "class_map")


@dataclass(frozen=True)
class DataSpec:
    """A data source (registered name or path) with the common options and source-specific parameters (read-only)."""

    source: str | None  # None: not given; the defaults name the model's training data (``engine.defaults``)
    split: str = "test"
    limit: int | None = None
    image_size: int | None = None
    channels: int | None = None
    subset_seed: int | None = None
    skip_bad: bool = False
    class_map: str | None = None  # YAML/JSON {data class: model class}: see data.classmap
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", frozen(self.params))

    @classmethod
    def parse(cls, value: object) -> DataSpec:
        """Accept ``digits``, a path, or ``{name|path, split, limit, image_size, channels, subset_seed, ...}``; the
        keys besides these are the source's own (``params``). Without ``name:`` or ``path:`` the source is None."""
        value = as_mapping(value, where="data", short_key="name", expected="a name, a path or a mapping")
        source = value.pop("path", None) or value.pop("name", None)
        if source is not None and not isinstance(source, str):
            raise ConfigError("data: give 'name:' (a registered dataset) or 'path:' (a file or folder)")
        options = {key: value.pop(key) for key in COMMON_OPTIONS if key in value}
        if options.get("class_map") is None:
            options.pop("class_map", None)
        return build_dataclass(cls, {"source": source, **options, "params": value}, where="data")

    def load(self, *, stream: bool = False, transform: EvalTransform | None = None) -> ImageSet:
        """Load the dataset this spec describes (``stream``: read images batch by batch where possible;
        ``transform``: a model's evaluation transform for images at another size)."""
        from robaudit.data.loading import load_dataset

        return load_dataset(
            self.source,
            split=self.split,
            limit=self.limit,
            image_size=self.image_size,
            channels=self.channels,
            subset_seed=self.subset_seed,
            stream=stream,
            skip_bad=self.skip_bad,
            transform=transform,
            **thawed(self.params),
        )

    def check_source(self) -> None:
        """Fail now, before any work, when the source is neither a registered dataset nor an existing path (read
        from the catalog: no torch import). Which kind of data a path holds is decided when it loads."""
        from robaudit.components.catalog import catalog

        if self.source is None:
            return  # not given: the defaults name it
        if self.source not in catalog("dataset") and not Path(self.source).exists():
            raise DataError(
                f"data {self.source!r} is neither a registered dataset nor an existing path; pass a name "
                "(robaudit ls datasets) or the path of a dataset file or folder"
            )

    def to_dict(self) -> dict[str, Any]:
        """YAML form."""
        out = {"path" if ("/" in self.source or "." in self.source) else "name": self.source, "split": self.split}
        for key in ("limit", "image_size", "channels", "subset_seed"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.skip_bad:
            out["skip_bad"] = True
        if self.class_map:
            out["class_map"] = self.class_map
        return {**out, **thawed(self.params)}
