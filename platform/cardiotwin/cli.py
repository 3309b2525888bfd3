"""The ``cardiotwin`` command: digital twins of iPSC-derived cardiomyocytes.

  cardiotwin simulate vc --protocol P.csv [--multipliers M.csv] [--temperature-k K] --out OUT.csv
  cardiotwin simulate ap --duration-ms 6000 [--multipliers M.csv] [--temperature-k K] --out O.csv
  cardiotwin features TRACE.csv
  cardiotwin demo [--size default|smallest] [--out-dir out/demo]   (the whole pipeline)
  cardiotwin generate --n-cells N --out DIR [--range 0.4] [--protocol P] ...  (on Ray)
  cardiotwin store verify DIR
  cardiotwin train | twin | screen | protocol-search ...
  cardiotwin reconstruct EAP.csv --model DIR --out DIR   (intracellular AP from an eAP)
  cardiotwin reconstruct-pairs --out DIR ...             (training pairs for it, on Ray)
  cardiotwin hybrid fit TRACE... --out DIR                (Mitchell-Schaeffer + network)
  cardiotwin tune hyperparameters | reconstruct ...      (Ray Tune searches)

Each stage adds its subcommands with ``cardiotwin.<stage>.cli_args.register(subparsers)``; a
subcommand's ``func`` takes the parsed arguments and returns the exit code. The scripts in
jobs/ and tune/ call :func:`main` with their subcommand. Exit codes: 0 done, 1 the command ran
but found a problem (e.g. damage in ``store verify``), 2 a user error (bad option, missing or
invalid file: one line on stderr), 130 interrupted; anything else is a bug and propagates as a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

# stage packages whose cli_args module registers subcommands, in the order of the help text
# (simulate.cli_args also adds ``features``)
STAGES = ("simulate", "demo", "population", "learn", "twin", "drugs",
          "protocol_search", "reconstruct", "hybrid")


# ---- fallbacks: wiring of stages whose cli_args has no register() (yet) ----------------------

def _done(run: Callable[[argparse.Namespace], object]) -> Callable[[argparse.Namespace], int]:
    def func(a: argparse.Namespace) -> int:
        run(a)
        return 0
    return func


def _demo(a: argparse.Namespace) -> int:
    from .demo import demo_config, run_demo

    cfg = demo_config(a.size, out_dir=a.out_dir, n_cells=a.n_cells, spread=a.range, seed=a.seed,
                      epochs=a.epochs, screen_cells=a.screen_cells,
                      concentrations_nM=a.concentrations_nm, num_cpus=a.num_cpus)
    run_demo(cfg)
    return 0


def _register_demo(sub: Any) -> None:
    demo = sub.add_parser("demo", help="the whole pipeline on an embedded default (local Ray): "
                                       "population, network, twin of the example ABF, E-4031 "
                                       "screen, HTML report")
    demo.add_argument("--size", choices=("default", "smallest"), default="default",
                      help="named sizes: default (4000 cells, 400-cell screen; a few minutes on "
                           "2 cores) or smallest (300 cells, 8-cell screen)")
    demo.add_argument("--out-dir", default=None, help="output directory (default out/demo)")
    demo.add_argument("--n-cells", type=int, default=None, help="training population size")
    demo.add_argument("--range", type=float, default=None,
                      help="multiplier range r: U(1-r, 1+r) (default 0.2)")
    demo.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    demo.add_argument("--epochs", type=int, default=None, help="training epochs at most")
    demo.add_argument("--screen-cells", type=int, default=None, help="screen population size")
    demo.add_argument("--concentrations-nm", type=float, nargs="+", default=None,
                      help="E-4031 concentrations (nM)")
    demo.add_argument("--num-cpus", type=int, default=None,
                      help="CPUs of the local Ray cluster (default: all)")
    demo.set_defaults(func=_demo)


def _register_population(sub: Any) -> None:
    from .population.config import add_generate_arguments
    from .population.generate import run_from_args

    gen = sub.add_parser("generate", help="generate a synthetic population into a Parquet store "
                                          "on Ray (resumable; same options as "
                                          "jobs/generate_population.py)")
    add_generate_arguments(gen)
    gen.set_defaults(func=_done(run_from_args))


def _register_protocol_search(sub: Any) -> None:
    from .protocol_search.cli_args import add_search_arguments, run_from_args

    ps = sub.add_parser("protocol-search", help="greedy voltage-protocol search on Ray Tune "
                                                "(resumable; same options as "
                                                "tune/protocol_search.py)")
    add_search_arguments(ps)
    ps.set_defaults(func=_done(run_from_args))


def _register_reconstruct(sub: Any) -> None:
    from .reconstruct.cli_args import add_reconstruct_parser

    add_reconstruct_parser(sub)


def _register_hybrid(sub: Any) -> None:
    from .hybrid.cli_args import add_hybrid_parser

    add_hybrid_parser(sub)


_FALLBACKS: dict[str, Callable[[Any], None]] = {
    "demo": _register_demo, "population": _register_population,
    "protocol_search": _register_protocol_search, "reconstruct": _register_reconstruct,
    "hybrid": _register_hybrid,
}


# ---- commands without a stage of their own: pair generation and Ray Tune searches -----------

def _pairs(a: argparse.Namespace) -> int:
    from .reconstruct.cli_args import run_pairs_from_args

    m = run_pairs_from_args(a)
    t = m["totals"]
    print(f"{a.out}: {t['windows']} windows from {t['cells_kept']} of {t['cells']} cells "
          f"({t['status_counts']}), {m['wall_s']:.0f} s")
    return 0


def _tune_hyperparameters(a: argparse.Namespace) -> int:
    from .learn.tuning import tune_hyperparameters

    tune_hyperparameters(a.stores, a.out, base=a.base, num_samples=a.num_samples,
                         max_epochs=a.max_epochs, grace_period=a.grace_period,
                         max_cells=a.max_cells, seed=a.seed, num_cpus=a.num_cpus,
                         ray_address=a.ray_address)
    return 0


def _tune_reconstruct(a: argparse.Namespace) -> int:
    from .reconstruct.tuning import tune_reconstruction

    tune_reconstruction(a.stores, a.out, num_samples=a.num_samples, max_epochs=a.max_epochs,
                        grace_period=a.grace_period, seed=a.seed, num_cpus=a.num_cpus,
                        ray_address=a.ray_address)
    return 0


def _search_options(p: argparse.ArgumentParser, *, epochs: int, grace: int) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--num-samples", type=int, default=8, help="trials (default 8)")
    p.add_argument("--max-epochs", type=int, default=epochs,
                   help=f"epochs per trial (default {epochs})")
    p.add_argument("--grace-period", type=int, default=grace,
                   help=f"ASHA: epochs before a trial may be stopped (default {grace})")
    p.add_argument("--seed", type=int, default=0, help="search seed (default 0)")
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray cluster CPUs")
    p.add_argument("--ray-address", default=None, help="Ray cluster (default $RAY_ADDRESS)")


def _register_extra(sub: Any) -> None:
    from .learn.config import PRESETS
    from .reconstruct.cli_args import add_pairs_arguments

    pr = sub.add_parser("reconstruct-pairs", help="paired (eAP, iAP) beat windows of simulated "
                                                  "cells into a pair store, on Ray (resumable; "
                                                  "same options as jobs/reconstruct_pairs.py)")
    add_pairs_arguments(pr)
    pr.set_defaults(func=_pairs)

    tune = sub.add_parser("tune", help="Ray Tune searches with ASHA early stopping")
    tsub = tune.add_subparsers(dest="tune_command", required=True)
    hp = tsub.add_parser("hyperparameters",
                         help="the parameter network's architecture, width, depth, learning "
                              "rate and batch size; writes best_config.json, trials.csv and "
                              "the best model artifact (same options as "
                              "tune/hyperparameters.py)")
    hp.add_argument("stores", nargs="+", metavar="STORE", help="population store directories")
    hp.add_argument("--base", default="ridge_mlp", choices=sorted(PRESETS),
                    help="preset whose values the search overrides (default ridge_mlp)")
    hp.add_argument("--max-cells", type=int, default=None, help="use cells with cell_id < N")
    _search_options(hp, epochs=50, grace=5)
    hp.set_defaults(func=_tune_hyperparameters)

    rc = tsub.add_parser("reconstruct",
                         help="the iAP reconstruction network: loss weights, filters, depth, "
                              "kernel, learning rate; writes best_config.json, trials.csv and "
                              "best_model/ (same options as tune/reconstruct.py)")
    rc.add_argument("stores", nargs="+", metavar="STORE", help="pair store directories")
    _search_options(rc, epochs=30, grace=4)
    rc.set_defaults(func=_tune_reconstruct)


# ---- the parser and the entry point -----------------------------------------------------------

def _register_stage(sub: Any, stage: str) -> None:
    name = f"{__package__}.{stage}.cli_args"
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        mod = None
    register = getattr(mod, "register", None)
    if register is not None:
        register(sub)
    elif stage in _FALLBACKS:
        _FALLBACKS[stage](sub)
    else:
        raise RuntimeError(f"{name} has no register(subparsers)")


def build_parser() -> argparse.ArgumentParser:
    """The ``cardiotwin`` parser: every stage's subcommands (module docstring)."""
    doc = __doc__ or ""
    commands = doc.split("\n\n")[1] if doc.count("\n\n") else ""
    p = argparse.ArgumentParser(prog="cardiotwin",
                                description=doc.split("\n")[0].replace("``", "") + "\n\n"
                                + commands,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Exit codes: 0 done, 1 problem found, 2 user error, "
                                       "130 interrupted.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in STAGES:
        _register_stage(sub, stage)
    _register_extra(sub)
    return p


def one_line(exc: BaseException) -> str:
    """The message of a user error on one line (multi-line messages joined with '; ')."""
    parts = [s.strip() for s in str(exc).splitlines() if s.strip()]
    return "; ".join(parts) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``cardiotwin`` command; returns its exit code (module docstring). Only user
    errors (ValueError and its subclasses, FileNotFoundError) become exit code 2 with one line
    on stderr; any other exception is a bug and propagates."""
    from .runtime.quiet import quiet_tensorflow

    quiet_tensorflow()
    args = build_parser().parse_args(None if argv is None else list(argv))
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("cardiotwin: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:
        print(f"cardiotwin: error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0 if rc is None else int(rc)


if __name__ == "__main__":
    sys.exit(main())
