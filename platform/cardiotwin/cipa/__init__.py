"""Clinical torsade risk of the CiPA drugs from twin populations (``cardiotwin cipa``).

``config``: :class:`CipaConfig`; ``metrics``: risk metrics per drug and dose with bootstrap
intervals over cells; ``classify``: the leave-one-out classifier and its baselines; ``run``:
:func:`run_cipa` (the drug screens on Ray, then the files). The CiPA table itself is
:mod:`cardiotwin.drugs.cipa_table`.
"""

from .config import CipaConfig

__all__ = ["CipaConfig", "run_cipa"]


def __getattr__(name: str):
    if name == "run_cipa":
        from .run import run_cipa

        return run_cipa
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
