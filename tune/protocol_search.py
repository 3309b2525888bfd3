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

import argparse
import sys
from pathlib import Path

try:
    import cardiotwin  # noqa: F401
except ImportError:  # a source checkout shipped with --working-dir: the library is in platform/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from cardiotwin.protocol_search.cli_args import add_search_arguments, run_from_args  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_search_arguments(p)
    args = p.parse_args(argv)
    try:
        run_from_args(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"protocol_search: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
