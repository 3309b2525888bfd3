#!/usr/bin/env python
"""Generate a synthetic cell population into a Parquet store, on Ray (resumable).

On a cluster (the package need not be installed on the nodes: it is shipped to the workers):

    ray job submit --working-dir . -- python jobs/generate_population.py \\
        --n-cells 100000 --range 0.4 --out /shared/populations/r40-100k

On a laptop (starts a local Ray cluster; RAY_ADDRESS, if set, is used instead):

    python jobs/generate_population.py --n-cells 2000 --out out/pop-2k

Re-running the same command resumes an interrupted run. Same options as `cardiotwin generate`.

On a cluster, --out must be an absolute path on a filesystem that every node mounts at the same
place (NFS, a shared volume): the actors write the shards there themselves; a relative path
would land in the job's temporary copy of the working directory. Workers import cardiotwin from
the package shipped by ray.init(runtime_env={"py_modules": [<...>/platform/cardiotwin]}) when it
is not installed on the nodes (--ship-package auto, the default; see
cardiotwin.runtime.ray_setup for the alternatives: installing the package on the nodes, or
--runtime-env-json '{"py_modules": ["platform/cardiotwin"]}' at submission with
--ship-package no).
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":  # the shared entry: jobs/_entry.py
    entry = runpy.run_path(str(Path(__file__).resolve().parents[1] / "jobs" / "_entry.py"))
    sys.exit(entry["run"]("generate"))
