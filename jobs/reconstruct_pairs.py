#!/usr/bin/env python
"""Generate paired (eAP, iAP) beat windows from simulated cells into a pair store (Parquet
shards + manifest.json) on Ray, for training the iAP reconstruction network.

    ray job submit --working-dir . -- python jobs/reconstruct_pairs.py \\
        --out /shared/pairs/r40-5k --n-cells 5000 --shard-size 100

    python jobs/reconstruct_pairs.py --out out/pairs-200 --n-cells 200 --num-cpus 2   # locally
    python jobs/reconstruct_pairs.py --out out/pairs-quinidine --drugs quinidine \\
        --drug-fraction 1 --seed 1 --n-cells 100              # an unseen-drug test store

Resumable (re-run the same command). The store layout and the electrode model are described
in cardiotwin.reconstruct.pairs and cardiotwin.reconstruct.electrode.
"""

import argparse
import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("cardiotwin") is None:
    # a source checkout shipped with --working-dir: the library is in platform/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from cardiotwin.reconstruct.cli_args import add_pairs_arguments, run_pairs_from_args  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_pairs_arguments(p)
    args = p.parse_args(argv)
    try:
        m = run_pairs_from_args(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"reconstruct_pairs: error: {exc}", file=sys.stderr)
        return 2
    t = m["totals"]
    print(f"{args.out}: {t['windows']} windows from {t['cells_kept']} of {t['cells']} cells "
          f"({t['status_counts']}), {m['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
