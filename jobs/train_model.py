#!/usr/bin/env python
"""Train the parameter network on population store(s) into a model artifact.

    ray job submit --working-dir . -- python jobs/train_model.py \\
        /shared/populations/r40-100k --preset ridge_mlp --out /shared/models/r40-100k

    python jobs/train_model.py out/pop-2k --out out/model-2k       # locally

Uses a GPU when TensorFlow sees one, the CPU otherwise; one line of progress per epoch. Same
options as `cardiotwin train`. The artifact layout is described in cardiotwin.learn.artifact.

`cardiotwin train` with the same arguments (options, errors, exit codes).
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":  # the shared entry: jobs/_entry.py
    entry = runpy.run_path(str(Path(__file__).resolve().parents[1] / "jobs" / "_entry.py"))
    sys.exit(entry["run"]("train"))
