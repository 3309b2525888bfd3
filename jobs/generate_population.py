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
cardiotwin.population.generate for the alternatives: installing the package on the nodes, or
--runtime-env-json '{"py_modules": ["platform/cardiotwin"]}' at submission with
--ship-package no).
"""

import argparse
import sys
from pathlib import Path

try:
    import cardiotwin  # noqa: F401
except ImportError:  # a source checkout shipped with --working-dir: the library is in platform/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from cardiotwin.population.config import add_generate_arguments  # noqa: E402
from cardiotwin.population.generate import run_from_args  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Units: ms, K, Hz; the range is a fraction (0.4 = +-40%). The store layout and "
               "manifest are described in cardiotwin.population.store.")
    add_generate_arguments(p)
    args = p.parse_args(argv)
    try:
        run_from_args(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"generate_population: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
