"""Greedy voltage-protocol search (the source study's design): each cycle appends a hold and
the test step that scores best: by default the one whose Fisher information leaves the least
posterior variance (``fisher``, ``fisher_search``: seconds per cycle, in this process), or
(``scorer="network"``, on Ray Tune) the one whose trained network recovers the parameters best
on held-out cells.

Configuration (``config``), the search population (``cells``), per-cell state checkpoints
(``cache``), training and scoring (``scoring``), one cycle's Tune trials (``trials``), the
search loop and its checkpointed state (``search``, ``state``), the comparison with
protocol_a and a naive protocol (``compare``), figures (``figures``) and the command line
(``cli_args``). Ray, Keras and matplotlib load on first use.
"""

_LAZY = {"SearchConfig": "config", "run_search": "search", "compare_protocols": "compare",
         "run_comparison": "compare", "naive_protocol": "compare", "StateCache": "cache",
         "CacheEntry": "cache", "continue_simulation": "cache", "simulate_from": "cache",
         "add_search_arguments": "cli_args", "run_from_args": "cli_args",
         "plot_search": "figures", "protocol_information": "fisher",
         "SensitivityState": "fisher", "information_metrics": "fisher"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
