"""robaudit: audit the adversarial robustness of image classifiers, with and without test-time purification.

    import robaudit
    result = robaudit.audit("examples/configs/quickstart.yaml")   # or a mapping of the same keys
    print(result.headline["robust_accuracy"], result.passed)

``audit`` and ``AuditResult`` (``robaudit.api``) load on first use, so ``import robaudit`` stays light.
"""

from __future__ import annotations

from typing import Any

from robaudit.moved import install as _install_moved_paths

__version__ = "0.1.0"
__all__ = ["AuditResult", "__version__", "audit"]


def __getattr__(name: str) -> Any:
    """``robaudit.audit`` and ``robaudit.AuditResult``, imported when first asked for."""
    if name in ("audit", "AuditResult"):
        from robaudit import api

        return getattr(api, name)
    raise AttributeError(f"module 'robaudit' has no attribute {name!r}")


_install_moved_paths()  # robaudit.sample_rng and the other old paths, for one release
