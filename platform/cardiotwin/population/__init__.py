"""Synthetic cell populations: sampling of parameter multipliers, generation on Ray into a
Parquet store (``generate_population``), and reading it back (``open_store``,
``verify_store``).

The generation and store names are imported on first use (pyarrow, pydantic and Ray are not
loaded by ``from cardiotwin.population import sample_multipliers``)."""

from .sampling import sample_multipliers, sample_population

_LAZY = {"GenerationConfig": "config", "generate_population": "generate",
         "PopulationStore": "store", "open_store": "store", "verify_store": "store",
         "list_to_numpy": "store", "PopulationManifest": "manifest"}

__all__ = ["GenerationConfig", "PopulationManifest", "PopulationStore", "generate_population",
           "list_to_numpy", "open_store", "sample_multipliers", "sample_population",
           "verify_store"]


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
