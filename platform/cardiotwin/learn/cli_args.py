"""Command-line arguments of the training entry points (``cardiotwin train`` and
jobs/train_model.py)."""

from __future__ import annotations

import argparse

from .config import PRESETS, TrainConfig, preset


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("stores", nargs="+", metavar="STORE",
                   help="population store directories (same protocol and sampling)")
    p.add_argument("--out", required=True, metavar="DIR", help="model artifact directory")
    p.add_argument("--preset", default="ridge_mlp", choices=sorted(PRESETS),
                   help="network preset (default ridge_mlp; study_fc: the source study's "
                        "26 x 1024 tanh network)")
    p.add_argument("--protocol", default=None, metavar="P",
                   help="refuse stores not simulated with this protocol (file or built-in "
                        "name, e.g. protocol_a at 310 K; the hash includes the temperature)")
    p.add_argument("--max-cells", type=int, default=None, metavar="N",
                   help="use only cells with cell_id < N")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    o = p.add_argument_group("overrides of the preset")
    for name, field in TrainConfig.model_fields.items():
        if name == "statuses":
            o.add_argument("--statuses", default=None,
                           help="comma-separated statuses to train on (default ok)")
            continue
        typ = {int: int, float: float}.get(field.annotation, None)
        if field.annotation == (int | None):
            typ = int
        o.add_argument(f"--{name.replace('_', '-')}", dest=f"cfg_{name}", default=None,
                       type=typ or str, metavar=name.upper(), help=field.description)


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    over = {k[4:]: v for k, v in vars(a).items() if k.startswith("cfg_") and v is not None}
    if a.statuses:
        over["statuses"] = tuple(s.strip() for s in a.statuses.split(","))
    return preset(a.preset, **over)


def run_from_args(a: argparse.Namespace) -> dict:
    from ..protocols import BUILTIN_PROTOCOLS, builtin_protocol, load_protocol
    from .train import train_model

    protocol = None
    if a.protocol:
        protocol = (builtin_protocol(a.protocol) if a.protocol in BUILTIN_PROTOCOLS
                    else load_protocol(a.protocol))
    return train_model(a.stores, a.out, config_from_args(a), protocol=protocol,
                       max_cells=a.max_cells, overwrite=a.overwrite)
