"""Compiled batched prediction: the network called as a ``tf.function`` with a fixed input
signature (batch, length, 1) float32, traced once, in chunks of at most ``batch_size``
windows. ``model.predict`` builds a data adapter and a step loop on every call (~170 ms for
one window on CPU); a direct call of the traced function costs the network's arithmetic and
a few ms. On a non-TensorFlow Keras backend the model is called directly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: windows per network call at most (bounds the activations' memory)
MAX_BATCH = 256


def compiled_predictor(model, length: int, *, jit_compile: bool = False,
                       batch_size: int = MAX_BATCH) -> Callable[[np.ndarray], np.ndarray]:
    """A function: normalized windows (n, length, 1) -> the network's output (n, length, c)
    as float32 NumPy, in chunks of ``batch_size``."""
    import keras

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, found {batch_size}")
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda x: model(x, training=False),
                         input_signature=[tf.TensorSpec((None, length, 1), tf.float32)],
                         jit_compile=jit_compile, reduce_retracing=True)

        def call(x: np.ndarray) -> np.ndarray:
            return fn(tf.constant(x)).numpy()
    else:
        def call(x: np.ndarray) -> np.ndarray:
            return np.asarray(model(x, training=False))

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (length, 1):
            raise ValueError(f"windows: expected shape (n, {length}, 1), found {x.shape}")
        if len(x) <= batch_size:
            return call(x)
        return np.concatenate([call(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])

    return predict
