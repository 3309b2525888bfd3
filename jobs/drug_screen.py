#!/usr/bin/env python
"""Population drug screen around a twin (Hill block, EAD incidence, APD90), on Ray.

On a cluster (the package is shipped to the workers when it is not installed on them):

    ray job submit --working-dir . -- python jobs/drug_screen.py \\
        --drug E-4031 --concentrations-nm 0 10 30 50 100 --n-cells 4000 --range 0.2 \\
        --out /shared/screens/e4031-4k

On a laptop (starts a local Ray cluster; RAY_ADDRESS, if set, is used instead):

    python jobs/drug_screen.py --drug E-4031 --n-cells 200 --out out/screen-e4031
    python jobs/drug_screen.py --list-drugs

Around a twin: --twin-multipliers twin.csv (name,multiplier). User-defined drugs: --drug-file
drugs.csv (drug,current,ic50_nM,hill[,source,note]) or .json. Same options as
`cardiotwin screen`; outputs are described in cardiotwin.drugs.screen. On a cluster --out is
written by the driver only (the workers return numbers), so it need not be shared storage.
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":  # the shared entry: jobs/_entry.py
    entry = runpy.run_path(str(Path(__file__).resolve().parents[1] / "jobs" / "_entry.py"))
    sys.exit(entry["run"]("screen"))
