#!/usr/bin/env python
"""Ray Tune search for the iAP reconstruction network: loss weights (alpha, beta), filters,
depth, kernel and learning rate, ASHA early stopping, compared on the validation MAE; writes
best_config.json, trials.csv and the best model artifact (best_model/) under --out.

    ray job submit --working-dir . -- python tune/reconstruct.py /shared/pairs/r40-5k \\
        --out /shared/tune/reconstruct --num-samples 24

    python tune/reconstruct.py out/pairs-200 --out out/tune-reconstruct --num-samples 4 \\
        --max-epochs 10

`cardiotwin tune reconstruct` with the same arguments (options, errors, exit codes).
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":  # the shared entry: jobs/_entry.py
    entry = runpy.run_path(str(Path(__file__).resolve().parents[1] / "jobs" / "_entry.py"))
    sys.exit(entry["run"]("tune", "reconstruct"))
