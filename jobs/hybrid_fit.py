#!/usr/bin/env python
"""Fit the Mitchell-Schaeffer + residual-network hybrid to many AP recordings, as Ray tasks.

On a cluster (the package is shipped to the workers when it is not installed on them):

    ray job submit --working-dir . -- python jobs/hybrid_fit.py \\
        /shared/real-ipsc-ap/*_spont.csv.gz --out /shared/hybrid/real

On a laptop (starts a local Ray cluster; RAY_ADDRESS, if set, is used instead):

    python jobs/hybrid_fit.py ../shared/data/real-ipsc-ap/7_042721_4_*.csv.gz --num-cpus 2 \\
        --out out/hybrid

Same options as `cardiotwin hybrid fit` (Ray is on here; --no-ray fits in this process).
Outputs (summary.json with tau's per recording and the pre/post-drug table, one figure per fitted
recording) are written by the driver only.
"""

import argparse
import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("cardiotwin") is None:
    # a source checkout shipped with --working-dir: the library is in platform/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from cardiotwin.hybrid.cli_args import add_fit_arguments, run_fit  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog="Units: ms; v normalized per beat (0 at MDP, 1 at peak).")
    add_fit_arguments(p)
    p.add_argument("--no-ray", dest="ray_off", action="store_true",
                   help="fit in this process instead of Ray tasks")
    args = p.parse_args(argv)
    args.ray = not args.ray_off
    try:
        return run_fit(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"hybrid_fit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
