#!/usr/bin/env python
"""Clinical torsade risk of the 28 CiPA drugs (and flecainide) from a twin population, on Ray:
one drug screen per drug at multiples of its free Cmax, risk metrics, the leave-one-out
classifier and its two baselines.

On a cluster (the package is shipped to the workers when it is not installed on them):

    ray job submit --working-dir . -- python jobs/cipa.py --out /shared/cipa/baseline-1hz \\
        --cells 1000 --pacing-hz 1

On a laptop (starts a local Ray cluster; RAY_ADDRESS, if set, is used instead):

    python jobs/cipa.py --out out/cipa --cells 200

Same options as `cardiotwin cipa`; outputs are described in cardiotwin.cipa.run. The driver
writes --out (the workers return numbers), so it need not be shared storage.
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":  # the shared entry: jobs/_entry.py
    entry = runpy.run_path(str(Path(__file__).resolve().parents[1] / "jobs" / "_entry.py"))
    sys.exit(entry["run"]("cipa"))
