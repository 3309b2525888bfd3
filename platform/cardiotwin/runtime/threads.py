"""Thread limits inside a worker (a Ray task, actor or Tune trial holding ``n`` CPUs): numba
and TensorFlow each use at most ``n`` threads, so workers sharing a node do not oversubscribe
its cores. Settings that can no longer change (TensorFlow already initialized) are skipped."""

from __future__ import annotations

import contextlib


def limit_numba_threads(n: int) -> None:
    """numba's parallel kernels use at most ``n`` threads (within numba's own maximum)."""
    try:
        import numba
    except ImportError:
        return
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def limit_tensorflow_threads(n: int, deterministic: bool = False) -> None:
    """TensorFlow's intra- and inter-op pools get ``n`` threads (only before its first op);
    ``deterministic`` switches on op determinism. No-op without TensorFlow."""
    try:
        import tensorflow as tf
    except ImportError:
        return
    for setter in (tf.config.threading.set_intra_op_parallelism_threads,
                   tf.config.threading.set_inter_op_parallelism_threads):
        with contextlib.suppress(RuntimeError):  # TensorFlow already initialized
            setter(int(n))
    if deterministic:
        tf.config.experimental.enable_op_determinism()
