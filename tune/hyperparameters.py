#!/usr/bin/env python
"""Ray Tune search over the network's hyperparameters (architecture, width, depth, learning
rate, batch size) with ASHA early stopping; writes best_config.json, trials.csv and the best
model artifact under --out.

    ray job submit --working-dir . -- python tune/hyperparameters.py \\
        /shared/populations/r40-100k --out /shared/tune/hp --num-samples 32

    python tune/hyperparameters.py out/pop-2k --out out/tune-hp --num-samples 4 --max-epochs 20

`cardiotwin tune hyperparameters` with the same arguments (options, errors, exit codes).
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":  # the shared entry: jobs/_entry.py
    entry = runpy.run_path(str(Path(__file__).resolve().parents[1] / "jobs" / "_entry.py"))
    sys.exit(entry["run"]("tune", "hyperparameters"))
