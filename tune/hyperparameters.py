#!/usr/bin/env python
"""Ray Tune search over the network's hyperparameters with ASHA early stopping: for the
posterior flow (--base posterior_flow, the default, or small_flow) coupling layers and width,
context size, embedding width and depth, learning rate, batch size, dropout, feature noise and
PCA components; for --base ridge_mlp / small_fc / study_fc the architecture, width, depth,
learning rate and batch size. Writes best_config.json, trials.csv and the best model artifact
under --out.

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
