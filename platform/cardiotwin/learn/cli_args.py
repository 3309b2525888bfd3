"""Command line of the training stage: ``cardiotwin train STORE... --out DIR`` (also
jobs/train_model.py). :func:`register` adds the subcommand; its ``func`` returns the exit
code."""

from __future__ import annotations

import argparse
import types
import typing

from .config import DEFAULT_PRESET, PRESETS, TrainConfig, preset


def _option_type(annotation) -> type:
    """The argparse type of a TrainConfig field (int, float or str; ``X | None`` -> X)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else str
    annotation = typing.get_args(annotation)[0] if typing.get_origin(annotation) is \
        typing.Annotated else annotation
    return annotation if annotation in (int, float) else str


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``cardiotwin train`` (shared with jobs/train_model.py)."""
    p.add_argument("stores", nargs="+", metavar="STORE",
                   help="population store directories (same protocol and sampling)")
    p.add_argument("--out", required=True, metavar="DIR", help="model artifact directory")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                   help=f"network preset (default {DEFAULT_PRESET}: the amortized posterior; "
                        "ridge_mlp: ridge + MLP point estimate; study_fc: the source study's "
                        "26 x 1024 tanh network)")
    p.add_argument("--protocol", default=None, metavar="P",
                   help="refuse stores not simulated with this protocol (file or built-in "
                        "name, e.g. protocol_a at 310 K; the hash includes the temperature)")
    p.add_argument("--max-cells", type=int, default=None, metavar="N",
                   help="use only cells with cell_id < N")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (the old model stays until the new one is "
                        "complete)")
    o = p.add_argument_group("overrides of the preset")
    for name, field in TrainConfig.model_fields.items():
        if name == "statuses":
            o.add_argument("--statuses", default=None,
                           help="comma-separated statuses to train on (default ok)")
            continue
        o.add_argument(f"--{name.replace('_', '-')}", dest=f"cfg_{name}", default=None,
                       type=_option_type(field.annotation), metavar=name.upper(),
                       help=(field.description or "").replace("%", "%%"))


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed arguments (ValueError naming the field)."""
    over = {k[4:]: v for k, v in vars(a).items() if k.startswith("cfg_") and v is not None}
    if a.statuses:
        over["statuses"] = tuple(s.strip() for s in a.statuses.split(","))
    return preset(a.preset, **over)


def run_from_args(a: argparse.Namespace) -> dict:
    """Train as the parsed arguments say; returns the artifact's metadata."""
    from ..protocols import BUILTIN_PROTOCOLS, builtin_protocol, load_protocol
    from .train import train_model

    protocol = None
    if a.protocol:
        protocol = (builtin_protocol(a.protocol) if a.protocol in BUILTIN_PROTOCOLS
                    else load_protocol(a.protocol))
    return train_model(a.stores, a.out, config_from_args(a), protocol=protocol,
                       max_cells=a.max_cells, overwrite=a.overwrite)


def run_train(a: argparse.Namespace) -> int:
    """``cardiotwin train``: 0 when the artifact was written."""
    run_from_args(a)
    return 0


def register(subparsers) -> None:
    """Add ``train`` to the ``cardiotwin`` subcommands."""
    p = subparsers.add_parser("train", help="train the parameter network on population store(s) "
                                            "into a model artifact (same options as "
                                            "jobs/train_model.py)")
    add_train_arguments(p)
    p.set_defaults(func=run_train)
