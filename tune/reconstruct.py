#!/usr/bin/env python
"""Ray Tune search for the iAP reconstruction network: loss weights (alpha, beta), filters,
depth, kernel and learning rate, ASHA early stopping, compared on the validation MAE; writes
best_config.json, trials.csv and the best model artifact (best_model/) under --out.

    ray job submit --working-dir . -- python tune/reconstruct.py /shared/pairs/r40-5k \\
        --out /shared/tune/reconstruct --num-samples 24

    python tune/reconstruct.py out/pairs-200 --out out/tune-reconstruct --num-samples 4 \\
        --max-epochs 10
"""

import argparse
import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("cardiotwin") is None:
    # a source checkout shipped with --working-dir: the library is in platform/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stores", nargs="+", metavar="STORE", help="pair store directories")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--num-samples", type=int, default=8, help="trials (default 8)")
    p.add_argument("--max-epochs", type=int, default=30, help="epochs per trial (default 30)")
    p.add_argument("--grace-period", type=int, default=4,
                   help="ASHA: epochs before a trial may be stopped (default 4)")
    p.add_argument("--seed", type=int, default=0, help="search seed (default 0)")
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray cluster CPUs")
    p.add_argument("--ray-address", default=None, help="Ray cluster (default $RAY_ADDRESS)")
    a = p.parse_args(argv)
    from cardiotwin.reconstruct.tuning import tune_reconstruction

    try:
        tune_reconstruction(a.stores, a.out, num_samples=a.num_samples,
                            max_epochs=a.max_epochs, grace_period=a.grace_period, seed=a.seed,
                            num_cpus=a.num_cpus, ray_address=a.ray_address)
    except (ValueError, FileNotFoundError) as exc:
        print(f"reconstruct tuning: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
