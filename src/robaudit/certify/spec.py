"""``certify:`` in an evaluate config (``--certify``: the defaults): the smoothing noise levels and Cohen et al.'s
draw counts and confidence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from robaudit.config import build_dataclass, parse_eps, rules
from robaudit.errors import ConfigError

if TYPE_CHECKING:
    from robaudit.certify.sequential import StoppingRule

FIELDS = ("sigma", "n0", "n", "alpha", "batch", "steps", "eot", "mode", "stop", "radius_tolerance")
MODES = ("sequential", "fixed")
STOPS = ("decisions", "radius")


@dataclass(frozen=True)
class CertifySpec:
    """Certify every sample at each ``sigma`` (the smoothing noise on [0, 1] images) with ``n0`` selection draws,
    estimation draws and confidence ``1 - alpha``, and attack the same smoothed classifier with SmoothAdv (``steps``
    L2 PGD steps, ``eot`` noise draws each; 0 steps: no attack) judged by PREDICT; ``batch``: rows (sample, draw) per
    network call (changes no result).

    ``mode: sequential`` (the default, ``certify.sequential``): estimation and PREDICT draws stop per sample as soon
    as the evidence suffices, at most ``n``; ``stop: decisions`` once certified or not at the run's L2 budget,
    ``stop: radius`` once the radius is known to within ``radius_tolerance`` x sigma (the curve).
    ``mode: fixed``: Cohen et al.'s ``n`` draws for every sample (to reproduce papers)."""

    sigma: tuple[float, ...] = (0.25, 0.5)
    n0: int = rules(100, positive=True)
    n: int = rules(10_000, positive=True)
    alpha: float = 0.001
    batch: int = rules(256, positive=True)
    steps: int = rules(20, at_least=0)
    eot: int = rules(8, positive=True)
    mode: str = rules("sequential", choices=MODES)
    stop: str = rules("decisions", choices=STOPS)
    radius_tolerance: float = 0.05

    @classmethod
    def parse(cls, value: object) -> CertifySpec | None:
        """``certify:`` as ``true`` (the defaults), ``false``/absent (None: no certification) or a mapping."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if not isinstance(value, dict):
            raise ConfigError(f"certify: expected true or a mapping of {', '.join(FIELDS)}, got {value!r}")
        given = dict(value)
        if "sigma" in given:
            sigmas = given["sigma"] if isinstance(given["sigma"], list) else str(given["sigma"]).split(",")
            given["sigma"] = tuple(sorted({parse_eps(s, name="certify.sigma", allow_zero=True) for s in sigmas}))
        spec = build_dataclass(cls, given, where="certify")
        spec.validate()
        return spec

    def validate(self) -> None:
        """One-line errors for values that certify nothing, besides each field's own rules (``config.rules``)."""
        if not self.sigma or min(self.sigma) <= 0:
            raise ConfigError(f"certify.sigma must be positive noise levels, e.g. [0.25, 0.5]; got {list(self.sigma)}")
        if self.n0 > self.n:
            raise ConfigError(f"certify needs 1 <= n0 <= n (e.g. n0: 100, n: 10000); got n0 {self.n0}, n {self.n}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"certify.alpha must lie in (0, 1), e.g. 0.001; got {self.alpha}")
        if not 0 < self.radius_tolerance < 10:
            raise ConfigError(
                f"certify.radius_tolerance is a fraction of sigma, e.g. 0.05; got {self.radius_tolerance}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain form for the saved config (batch left out: it changes no result)."""
        return {
            "sigma": list(self.sigma),
            "n0": self.n0,
            "n": self.n,
            "alpha": self.alpha,
            "steps": self.steps,
            "eot": self.eot,
            "mode": self.mode,
            **({"stop": self.stop} if self.mode == "sequential" else {}),
            **(
                {"radius_tolerance": self.radius_tolerance}
                if self.stop == "radius" and self.mode == "sequential"
                else {}
            ),
        }

    def rule(self, *, radii: tuple[float, ...]) -> StoppingRule:
        """The sequential stopping rule: looks up to ``n`` draws at ``alpha``, deciding ``radii`` (``stop:
        decisions``) or the radius to within ``radius_tolerance`` x sigma (``stop: radius``)."""
        from robaudit.certify.sequential import StoppingRule

        return StoppingRule(self.n, self.alpha, radii, self.stop, self.radius_tolerance)
