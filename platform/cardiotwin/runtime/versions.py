"""Versions recorded in manifests and sidecars: the cardiotwin code version and the numerical
libraries'."""

from __future__ import annotations

import platform as _stdlib_platform
import sys

LIBRARIES = ("numpy", "scipy", "numba", "pyarrow", "ray")


def code_version() -> str:
    """The cardiotwin package version (part of every dataset identity)."""
    import cardiotwin

    return str(cardiotwin.__version__)


def package_versions() -> dict[str, str]:
    """Versions of Python and the numerical packages."""
    out = {"python": _stdlib_platform.python_version()}
    for mod in LIBRARIES:
        m = sys.modules.get(mod)
        if m is None:
            try:
                m = __import__(mod)
            except ImportError:
                continue
        out[mod] = getattr(m, "__version__", "?")
    return out
