"""The end-to-end demo (``cardiotwin demo``): population -> network -> twin -> drug screen ->
HTML report, on a local Ray cluster, at a named size (``default`` or ``smallest``)."""

from .config import SIZES, DemoConfig, demo_config
from .run import run_demo

__all__ = ["SIZES", "DemoConfig", "demo_config", "run_demo"]
