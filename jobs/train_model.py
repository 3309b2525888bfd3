#!/usr/bin/env python
"""Train the parameter network on population store(s) into a model artifact.

    ray job submit --working-dir . -- python jobs/train_model.py \\
        /shared/populations/r40-100k --preset ridge_mlp --out /shared/models/r40-100k

    python jobs/train_model.py out/pop-2k --out out/model-2k       # locally

Uses a GPU when TensorFlow sees one, the CPU otherwise; one line of progress per epoch. Same
options as `cardiotwin train`. The artifact layout is described in cardiotwin.learn.artifact.
"""

import argparse
import sys
from pathlib import Path

try:
    import cardiotwin  # noqa: F401
except ImportError:  # a source checkout shipped with --working-dir: the library is in platform/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from cardiotwin.learn.cli_args import add_train_arguments, run_from_args  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_train_arguments(p)
    args = p.parse_args(argv)
    try:
        run_from_args(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"train_model: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
