#!/usr/bin/env python
"""Ray Tune search over the network's hyperparameters (architecture, width, depth, learning
rate, batch size) with ASHA early stopping; writes best_config.json, trials.csv and the best
model artifact under --out.

    ray job submit --working-dir . -- python tune/hyperparameters.py \\
        /shared/populations/r40-100k --out /shared/tune/hp --num-samples 32

    python tune/hyperparameters.py out/pop-2k --out out/tune-hp --num-samples 4 --max-epochs 20
"""

import argparse
import sys
from pathlib import Path

try:
    import cardiotwin  # noqa: F401
except ImportError:  # a source checkout shipped with --working-dir: the library is in platform/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from cardiotwin.learn.config import PRESETS  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stores", nargs="+", metavar="STORE", help="population store directories")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--base", default="ridge_mlp", choices=sorted(PRESETS),
                   help="preset whose values the search overrides (default ridge_mlp)")
    p.add_argument("--num-samples", type=int, default=8, help="trials (default 8)")
    p.add_argument("--max-epochs", type=int, default=50, help="epochs per trial (default 50)")
    p.add_argument("--grace-period", type=int, default=5,
                   help="ASHA: epochs before a trial may be stopped (default 5)")
    p.add_argument("--max-cells", type=int, default=None, help="use cells with cell_id < N")
    p.add_argument("--seed", type=int, default=0, help="search seed (default 0)")
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray cluster CPUs")
    p.add_argument("--ray-address", default=None, help="Ray cluster (default $RAY_ADDRESS)")
    a = p.parse_args(argv)
    from cardiotwin.learn.tuning import tune_hyperparameters

    try:
        tune_hyperparameters(a.stores, a.out, base=a.base, num_samples=a.num_samples,
                             max_epochs=a.max_epochs, grace_period=a.grace_period,
                             max_cells=a.max_cells, seed=a.seed, num_cpus=a.num_cpus,
                             ray_address=a.ray_address)
    except (ValueError, FileNotFoundError) as exc:
        print(f"hyperparameters: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
