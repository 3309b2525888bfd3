"""TensorFlow's start-up noise kept off the user's terminal, in one place.

Importing TensorFlow (directly or through Keras) writes informational C++ log lines to the
process's standard error before its logging is initialized ("All log messages before
absl::InitializeLog() ...", oneDNN and CPU-instruction notices, "Could not find cuda drivers"),
and on a machine without a GPU the first operation logs a cuInit error. None of it is
actionable for a user. :func:`quiet_tensorflow` (called by ``cardiotwin.cli.main`` and by the
Serve application module) does, before TensorFlow is first imported:

* ``TF_CPP_MIN_LOG_LEVEL=3`` (unless the user set it: ``TF_CPP_MIN_LOG_LEVEL=0`` shows
  everything again) for the C++ messages logged after start-up;
* an import hook that runs the first ``import tensorflow`` with file descriptor 2 captured and
  replays every captured line except the known informational ones (:func:`is_startup_noise`),
  so real errors and Python warnings printed during the import still reach the terminal;
* absl's Python logging set to errors only once TensorFlow is imported.

Numerics are unchanged: ``TF_ENABLE_ONEDNN_OPTS`` is left alone (it changes results).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

_ABSL_NOT_INITIALIZED = "WARNING: All log messages before absl::InitializeLog() is called"
# absl / TF C++ log prefixes of severities INFO and WARNING: "I0000 00:00:17961.123 6117 f.cc:1]"
_INFO_OR_WARNING = re.compile(r"^[IW]\d{4} \d\d:\d\d:\d[\d.]* +\d+ [\w./-]+:\d+\] ")
_CONTINUATIONS = ("To enable the following instructions:",)


def is_startup_noise(line: str) -> bool:
    """True for a line of TensorFlow's informational start-up output (dropped); False for
    anything else, error lines (``E...``/``F...``) included (kept)."""
    return (line.startswith(_ABSL_NOT_INITIALIZED) or bool(_INFO_OR_WARNING.match(line))
            or line.startswith(_CONTINUATIONS))


def filter_noise(lines: Sequence[str]) -> list[str]:
    """The lines of ``lines`` that are not start-up noise, in order."""
    return [ln for ln in lines if not is_startup_noise(ln)]


@contextmanager
def filtered_stderr() -> Iterator[None]:
    """Capture file descriptor 2 for the block, then write back what is not start-up noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", errors="replace")
            kept = filter_noise(text.splitlines(keepends=True))
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _absl_errors_only() -> None:
    try:
        from absl import logging as absl_logging
    except ImportError:  # absl comes with TensorFlow; nothing to quiet without it
        return
    absl_logging.set_verbosity(absl_logging.ERROR)


class _QuietLoader(importlib.abc.Loader):
    """Runs the wrapped loader's ``exec_module`` under :func:`filtered_stderr`."""

    def __init__(self, loader: Any):
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        try:
            with filtered_stderr():
                self._loader.exec_module(module)
            _absl_errors_only()
        finally:  # the module keeps its own loader
            module.__loader__ = self._loader
            if module.__spec__ is not None:
                module.__spec__.loader = self._loader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of the first ``import tensorflow``; removes itself when used."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up noise off standard error (module docstring). Idempotent; when
    TensorFlow is already imported, only the log levels are set."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        _absl_errors_only()
        return
    if not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())
