#!/usr/bin/env python
"""Fit the Mitchell-Schaeffer + residual-network hybrid to many AP recordings, as Ray tasks.

On a cluster (the package is shipped to the workers when it is not installed on them):

    ray job submit --working-dir . -- python jobs/hybrid_fit.py \\
        /shared/real-ipsc-ap/*_spont.csv.gz --out /shared/hybrid/real

On a laptop (starts a local Ray cluster; RAY_ADDRESS, if set, is used instead):

    python jobs/hybrid_fit.py ../shared/data/real-ipsc-ap/7_042721_4_*.csv.gz --num-cpus 2 \\
        --out out/hybrid

`cardiotwin hybrid fit --ray`: the same options, errors and exit codes (to fit in this process
instead of Ray tasks, run `cardiotwin hybrid fit` without --ray).
Outputs (summary.json with tau's per recording and the pre/post-drug table, one figure per fitted
recording) are written by the driver only.
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":  # the shared entry: jobs/_entry.py
    entry = runpy.run_path(str(Path(__file__).resolve().parents[1] / "jobs" / "_entry.py"))
    sys.exit(entry["run"]("hybrid", "fit", "--ray"))
