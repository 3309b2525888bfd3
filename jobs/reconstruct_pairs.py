#!/usr/bin/env python
"""Generate paired (eAP, iAP) beat windows from simulated cells into a pair store (Parquet
shards + manifest.json) on Ray, for training the iAP reconstruction network.

    ray job submit --working-dir . -- python jobs/reconstruct_pairs.py \\
        --out /shared/pairs/r40-5k --n-cells 5000 --shard-size 100

    python jobs/reconstruct_pairs.py --out out/pairs-200 --n-cells 200 --num-cpus 2   # locally
    python jobs/reconstruct_pairs.py --out out/pairs-r40 --n-cells 1200 --duration-ms 12000 \
        --junctions-per-cell 6 --snr 10 200     # ~38,000 windows (6 couplings per cell)
    python jobs/reconstruct_pairs.py --out out/pairs-quinidine --drugs quinidine \\
        --drug-fraction 1 --seed 1 --n-cells 100              # an unseen-drug test store

Resumable (re-run the same command). The store layout and the electrode model are described
in cardiotwin.reconstruct.pairs and cardiotwin.reconstruct.electrode.

`cardiotwin reconstruct-pairs` with the same arguments (options, errors, exit codes).
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":  # the shared entry: jobs/_entry.py
    entry = runpy.run_path(str(Path(__file__).resolve().parents[1] / "jobs" / "_entry.py"))
    sys.exit(entry["run"]("reconstruct-pairs"))
