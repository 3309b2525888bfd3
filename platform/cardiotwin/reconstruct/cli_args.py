"""The ``cardiotwin reconstruct`` subcommand (:func:`register` adds it; ``func`` returns the
exit code)::

  cardiotwin reconstruct REC.csv|REC.abf --model DIR [--out-dir OUT] [--sweep 0] [--channel C]
                         [--max-beats N]

writes OUT/windows.csv, OUT/apd.csv, OUT/reconstruction.json and OUT/reconstruction.png.
"""

from __future__ import annotations

import argparse


def _cmd_reconstruct(a: argparse.Namespace) -> int:
    from .infer import load_reconstructor, read_recording, reconstruct_recording, write_outputs
    from .windows import APD_LEVELS

    est = load_reconstructor(a.model)
    t, e, desc = read_recording(a.recording, a.recording, sweep=a.sweep, channel=a.channel)
    res = reconstruct_recording(est, t, e, source=f"{a.recording} ({desc})",
                                max_beats=a.max_beats)
    paths = write_outputs(res, a.out_dir)
    import numpy as np

    apd90 = res.apd_ms["q50"][:, APD_LEVELS.index(90)]
    med = float(np.nanmedian(apd90)) if np.isfinite(apd90).any() else float("nan")
    print(f"reconstructed {len(res.anchor_ms)} beats from {a.recording}: APD90 median "
          f"{med:.0f} ms; "
          f"wrote {paths['windows']}, {paths['apd']}, {paths['json']}, {paths['figure']}")
    return 0


def add_reconstruct_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recording", help="extracellular (eAP) recording: CSV (t_ms or time_s, and "
                                     "eap_uV / eap_mV / eap) or ABF (e.g. an MEA export)")
    p.add_argument("--model", required=True, metavar="DIR",
                   help="reconstruction model artifact directory")
    p.add_argument("--out-dir", default="out/reconstruct", metavar="DIR",
                   help="output directory (default out/reconstruct)")
    p.add_argument("--sweep", type=int, default=0, help="ABF sweep index (default 0)")
    p.add_argument("--channel", type=int, default=None,
                   help="ABF ADC channel index (default: the first)")
    p.add_argument("--max-beats", type=int, default=None, metavar="N",
                   help="reconstruct at most the first N beats")


def register(subparsers) -> None:
    """Add ``reconstruct`` to the ``cardiotwin`` subcommands."""
    add_reconstruct_parser(subparsers)


def add_reconstruct_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``reconstruct`` to the ``cardiotwin`` subcommands; returns its parser."""
    p = subparsers.add_parser("reconstruct", help="intracellular APs (normalized, 90 %% band) "
                                                  "and APDs from an extracellular recording")
    add_reconstruct_arguments(p)
    p.set_defaults(func=_cmd_reconstruct)
    return p


# ---- pair generation (jobs/reconstruct_pairs.py) ---------------------------------------------

def add_pairs_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the pair generator (jobs/reconstruct_pairs.py)."""
    p.add_argument("--out", required=True, metavar="DIR", help="pair store directory (shared "
                                                               "by all nodes)")
    p.add_argument("--n-cells", type=int, default=200, help="cells to simulate (default 200)")
    p.add_argument("--range", dest="spread", type=float, default=0.4,
                   help="multiplier range r: U(1-r, 1+r) (default 0.4)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--drugs", default=None,
                   help="comma-separated drugs of the catalog for the treated cells (default: "
                        "e4031,verapamil,nifedipine,lidocaine,cisapride,quinine; '' for none)")
    p.add_argument("--drug-fraction", type=float, default=0.6,
                   help="fraction of cells with a drug (default 0.6)")
    p.add_argument("--duration-ms", type=float, default=3000.0,
                   help="recorded time per cell in ms (default 3000)")
    p.add_argument("--prepace-ms", type=float, default=5000.0,
                   help="free-running time before recording in ms (default 5000)")
    p.add_argument("--snr", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="eAP signal-to-noise range (default 20 200)")
    p.add_argument("--shard-size", type=int, default=50, help="cells per shard (default 50)")
    p.add_argument("--junctions-per-cell", type=int, default=1, metavar="K",
                   help="electrode couplings (junction, S/N, noise) per simulated cell "
                        "(default 1)")
    p.add_argument("--n-workers", type=int, default=None,
                   help="concurrent Ray tasks (default: the cluster's CPUs)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray cluster")
    p.add_argument("--ray-address", default=None, help="Ray cluster (default $RAY_ADDRESS)")
    p.add_argument("--allow-code-change", action="store_true",
                   help="resume a pair store written by another cardiotwin version")


def pairs_config_from_args(a: argparse.Namespace):
    from .electrode import ElectrodeConfig
    from .pairs import PairConfig

    kw = dict(n_cells=a.n_cells, spread=a.spread, seed=a.seed, drug_fraction=a.drug_fraction,
              duration_ms=a.duration_ms, prepace_ms=a.prepace_ms, shard_size=a.shard_size,
              junctions_per_cell=a.junctions_per_cell)
    if a.drugs is not None:
        kw["drugs"] = tuple(d.strip() for d in a.drugs.split(",") if d.strip())
    if a.snr is not None:
        kw["electrode"] = ElectrodeConfig(snr_range=tuple(a.snr))
    return PairConfig(**kw)


def run_pairs_from_args(a: argparse.Namespace) -> dict:
    from .pairs import generate_pairs

    return generate_pairs(pairs_config_from_args(a), a.out, n_workers=a.n_workers,
                          num_cpus=a.num_cpus, ray_address=a.ray_address,
                          allow_code_change=a.allow_code_change)
