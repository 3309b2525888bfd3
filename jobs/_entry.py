"""The one entry point of the scripts in jobs/ and tune/: each runs
``runpy.run_path(<repo>/jobs/_entry.py)["run"](<subcommand>)``, which calls
``cardiotwin.cli.main([<subcommand>..., *sys.argv[1:]])`` -- the same options, errors and exit
codes as the ``cardiotwin`` command.

A source checkout shipped with ``ray job submit --working-dir .`` has the library in
``platform/``, which is not on the path there (the package is not installed on the node): it
is added here, once, when ``cardiotwin`` cannot be imported otherwise.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PLATFORM = Path(__file__).resolve().parents[1] / "platform"


def run(*subcommand: str) -> int:
    """Run ``cardiotwin <subcommand> <this script's arguments>``; returns the exit code."""
    if importlib.util.find_spec("cardiotwin") is None:
        sys.path.insert(0, str(PLATFORM))
    from cardiotwin.cli import main

    return main([*subcommand, *sys.argv[1:]])
