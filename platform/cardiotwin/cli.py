"""The ``cardiotwin`` command: digital twins of iPSC-derived cardiomyocytes.

  cardiotwin simulate vc --protocol P.csv [--multipliers M.csv] [--temperature-k K] --out OUT.csv
  cardiotwin simulate ap --duration-ms 6000 [--multipliers M.csv] [--temperature-k K] --out O.csv
  cardiotwin features TRACE.csv
  cardiotwin demo [--size default|smallest] [--out-dir out/demo]   (the whole pipeline)
  cardiotwin generate --n-cells N --out DIR [--range 0.4] [--protocol P] ...  (on Ray)
  cardiotwin store verify DIR
  cardiotwin coverage STORE --real FILES_OR_DIR [--out DIR]   (real phenotypes vs the population's)
  cardiotwin protocol export P --format atf|csv|json --out FILE | import REC --out P.json
  cardiotwin train | twin | screen | protocol-search ...
  cardiotwin cipa --out DIR [--cells N] [--pacing-hz 1] [--drugs ...]   (CiPA clinical risk)
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
from collections.abc import Sequence
from typing import Any

# stage packages whose cli_args module registers subcommands, in the order of the help text
# (simulate.cli_args also adds ``features``)
STAGES = ("simulate", "demo", "population", "learn", "twin", "drugs",
          "protocol_search", "protocol_io", "reconstruct", "hybrid", "coverage", "cipa")


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
    from .learn.config import DEFAULT_PRESET, PRESETS
    from .reconstruct.cli_args import add_pairs_arguments

    pr = sub.add_parser("reconstruct-pairs", help="paired (eAP, iAP) beat windows of simulated "
                                                  "cells into a pair store, on Ray (resumable; "
                                                  "same options as jobs/reconstruct_pairs.py)")
    add_pairs_arguments(pr)
    pr.set_defaults(func=_pairs)

    tune = sub.add_parser("tune", help="Ray Tune searches with ASHA early stopping")
    tsub = tune.add_subparsers(dest="tune_command", required=True)
    hp = tsub.add_parser("hyperparameters",
                         help="the parameter network: for the posterior flow its coupling "
                              "layers, context, embedding, learning rate, batch size, dropout, "
                              "feature noise and PCA components, for fc/ridge_mlp the "
                              "architecture, width, depth, learning rate and batch size; "
                              "writes best_config.json, trials.csv and the best model "
                              "artifact (same options as tune/hyperparameters.py)")
    hp.add_argument("stores", nargs="+", metavar="STORE", help="population store directories")
    hp.add_argument("--base", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                    help="preset whose values the search overrides; its family (flow or "
                         f"fc/ridge_mlp) sets the search space (default {DEFAULT_PRESET})")
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
    module = importlib.import_module(f"{__package__}.{stage}.cli_args")
    module.register(sub)


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
