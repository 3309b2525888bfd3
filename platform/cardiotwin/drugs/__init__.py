"""Drug block and population drug screens.

``catalog``: drugs with the IC50 (nM), Hill coefficient and literature source of each blocked
current, and user-defined drugs; ``hill``: the Hill block and its application to model inputs;
``screen``: a population around a twin at several concentrations, on Ray (``run_screen``).

The screen's names are imported on first use (Ray, pyarrow and matplotlib are not loaded by
``from cardiotwin.drugs import get_drug``).
"""

from .catalog import (
    ChannelBlock,
    Drug,
    builtin_catalog,
    catalog,
    drug_from_dict,
    get_drug,
    known_drugs,
    read_drugs,
)
from .hill import drug_inputs, fraction_remaining

_LAZY = {"ScreenConfig": "config", "ScreenResult": "store", "run_screen": "screen",
         "load_screen": "store", "analyze_cell": "analysis"}

__all__ = ["ChannelBlock", "Drug", "ScreenConfig", "ScreenResult", "analyze_cell",
           "builtin_catalog", "catalog", "drug_from_dict", "drug_inputs", "fraction_remaining",
           "get_drug", "known_drugs", "load_screen", "read_drugs", "run_screen"]


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
