"""Ray start-up for every stage: connect to a cluster (``ray_address`` or ``$RAY_ADDRESS``,
set by ``ray job submit``) or start a local one, shipping the cardiotwin package to the workers
when they cannot import it.

Workers must import ``cardiotwin``: with ``ray job submit --working-dir .`` the package is not
on their path (``platform/`` is not a package root there), so ``ship_package="auto"`` ships
the package directory as a ``py_modules`` runtime env when connecting to an existing cluster
and ``cardiotwin`` is not installed in site-packages (``"yes"`` / ``"no"`` force it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SHIP_CHOICES = ("auto", "yes", "no")


def package_dir() -> Path:
    """The directory of the imported cardiotwin package."""
    import cardiotwin

    return Path(cardiotwin.__file__).resolve().parent


def _installed(pkg: Path) -> bool:
    return any(part in ("site-packages", "dist-packages") for part in pkg.parts)


def ray_runtime_env(ship_package: str = "auto", ray_address: str | None = None
                    ) -> dict[str, Any] | None:
    """The job runtime env for ``ray.init``: ``py_modules`` with the cardiotwin package
    directory when shipping (module docstring), else None. ValueError for another
    ``ship_package`` than auto / yes / no."""
    if ship_package not in SHIP_CHOICES:
        raise ValueError(f"ship_package must be auto, yes or no, found {ship_package!r}")
    pkg = package_dir()
    connecting = bool(ray_address or os.environ.get("RAY_ADDRESS"))
    ship = ship_package == "yes" or (ship_package == "auto" and connecting
                                     and not _installed(pkg))
    return {"py_modules": [str(pkg)]} if ship else None


def init_ray(num_cpus: int | None = None, ray_address: str | None = None,
             ship_package: str = "auto") -> bool:
    """``ray.init`` unless Ray is initialized; True when this call started (or connected)
    Ray. ``num_cpus`` sizes a local cluster started here (ignored when connecting)."""
    import ray

    if ray.is_initialized():
        return False
    kw: dict[str, Any] = {"log_to_driver": True}
    env = ray_runtime_env(ship_package, ray_address)
    if env:
        kw["runtime_env"] = env
    if ray_address:
        kw["address"] = ray_address
    elif not os.environ.get("RAY_ADDRESS"):
        # a new local cluster, never one that some earlier `ray start` left on this machine
        kw["address"] = "local"
        if num_cpus is not None:
            kw["num_cpus"] = int(num_cpus)
    ray.init(**kw)
    return True


@contextmanager
def ray_session(num_cpus: int | None = None, ray_address: str | None = None,
                ship_package: str = "auto") -> Iterator[bool]:
    """:func:`init_ray` for the duration of a ``with`` block; shuts Ray down at the end only
    if this block started it. Yields whether it did."""
    import ray

    started = init_ray(num_cpus, ray_address, ship_package)
    try:
        yield started
    finally:
        if started:
            ray.shutdown()
