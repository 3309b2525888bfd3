"""Command line of the end-to-end demo: ``cardiotwin demo [--size default|smallest]
[--out-dir out/demo] ...``. :func:`register` adds the subcommand; its ``func`` returns the
exit code."""

from __future__ import annotations

import argparse

from .config import SIZES


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``cardiotwin demo`` (options left out keep the size's values)."""
    p.add_argument("--size", choices=tuple(SIZES), default="default",
                   help="named sizes: default (4000 cells, 400-cell screen; a few minutes on "
                        "2 cores) or smallest (300 cells, 8-cell screen)")
    p.add_argument("--out-dir", default=None, help="output directory (default out/demo)")
    p.add_argument("--n-cells", type=int, default=None, help="training population size")
    p.add_argument("--range", type=float, default=None,
                   help="multiplier range r: U(1-r, 1+r) (default 0.2)")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs at most")
    p.add_argument("--screen-cells", type=int, default=None, help="screen population size")
    p.add_argument("--concentrations-nm", type=float, nargs="+", default=None,
                   help="E-4031 concentrations (nM)")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs of the local Ray cluster (default: all)")


def config_from_args(a: argparse.Namespace):
    """The DemoConfig of parsed arguments (ValueError naming the field)."""
    from .config import demo_config

    conc = tuple(a.concentrations_nm) if a.concentrations_nm is not None else None
    return demo_config(a.size, out_dir=a.out_dir, n_cells=a.n_cells, spread=a.range,
                       seed=a.seed, epochs=a.epochs, screen_cells=a.screen_cells,
                       concentrations_nM=conc, num_cpus=a.num_cpus)


def run_demo_from_args(a: argparse.Namespace) -> int:
    """``cardiotwin demo``: 0 when the report was written."""
    from .run import run_demo

    run_demo(config_from_args(a))
    return 0


def register(subparsers) -> None:
    """Add ``demo`` to the ``cardiotwin`` subcommands."""
    p = subparsers.add_parser("demo", help="the whole pipeline on an embedded default (local "
                                           "Ray): population, network, twin of the example ABF, "
                                           "E-4031 screen, HTML report")
    add_demo_arguments(p)
    p.set_defaults(func=run_demo_from_args)
