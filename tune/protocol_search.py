#!/usr/bin/env python
"""Greedy voltage-protocol search on Ray Tune: each cycle trains one network per candidate
test step (in parallel, one GPU per trial when the cluster has GPUs) and appends the best;
writes the optimized protocol (JSON, CSV, hash), history.json and search.png under --out.

    ray job submit --working-dir . -- python tune/protocol_search.py \\
        --out /shared/search/r40-2k --n-cells 2000 --max-steps 10 --compare

    python tune/protocol_search.py --out out/search --n-cells 300 --candidates=-120:50:40 \\
        --max-steps 2 --epochs 20 --num-cpus 2           # locally, small

Re-running the same command resumes after the last completed cycle (a larger --max-steps
continues a finished search). Same options as `cardiotwin protocol-search`.
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":  # the shared entry: jobs/_entry.py
    entry = runpy.run_path(str(Path(__file__).resolve().parents[1] / "jobs" / "_entry.py"))
    sys.exit(entry["run"]("protocol-search"))
