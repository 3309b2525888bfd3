"""Multi-rate input: the voltage-clamp trace averaged over bins that are narrow right after
each change of the command and wide where the current is slow.

After every segment start of the protocol the first ``fast_window_ms`` are kept at the
store's own resolution (the sodium peak after a depolarizing step lasts about a millisecond),
up to ``medium_window_ms`` in bins of ``medium_bin_ms``, and the rest of the segment in bins of
``slow_bin_ms``. On protocol_a at 10 kHz (16 segments, 49,500 samples) the defaults give about
2,350 inputs: a 21x smaller network input with every fast transient intact. Bins never cross a
segment boundary. A bin is the mean of its stored samples (pA/pF).
"""

from __future__ import annotations

import numpy as np


def bin_means(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(n, n_samples) -> (n, len(edges) - 1) float32 means over ``x[:, edges[i]:edges[i+1]]``.
    ``edges``: strictly increasing sample indices from 0 to n_samples."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    edges = np.asarray(edges, dtype=np.int64)
    if edges[0] != 0 or edges[-1] != x.shape[1]:
        raise ValueError(f"I_total: expected {int(edges[-1])} samples per trace, found "
                         f"{x.shape[1]}")
    sums = np.add.reduceat(x, edges[:-1], axis=1, dtype=np.float64)
    return (sums / np.diff(edges)).astype(np.float32)


def multirate_edges(segment_durations_ms, sample_interval_ms: float, n_samples: int, *,
                    fast_window_ms: float = 5.0, medium_window_ms: float = 50.0,
                    medium_bin_ms: float = 1.0, slow_bin_ms: float = 5.0) -> np.ndarray:
    """Bin edges (sample indices, 0 .. n_samples) of a trace of ``n_samples`` stored every
    ``sample_interval_ms`` over segments of ``segment_durations_ms`` (ms; see module doc)."""
    if not (0 <= fast_window_ms <= medium_window_ms and medium_bin_ms > 0 and slow_bin_ms > 0):
        raise ValueError("multirate bins: expected 0 <= fast_window_ms <= medium_window_ms "
                         "and positive bin widths")
    dt = float(sample_interval_ms)
    edges_ms: list[float] = []
    start = 0.0
    for dur in segment_durations_ms:
        end = start + float(dur)
        t = start
        for until, width in ((fast_window_ms, dt), (medium_window_ms, medium_bin_ms),
                             (np.inf, slow_bin_ms)):
            stop = min(end, start + until)
            while t < stop - 1e-9:
                edges_ms.append(t)
                t += max(width, dt)
            t = max(t, stop)
        start = end
    idx = np.round(np.asarray(edges_ms) / dt).astype(np.int64)
    return np.union1d(np.clip(idx, 0, n_samples), [0, n_samples]).astype(np.int64)


def protocol_edges(protocol, store_decimation: int, n_stored: int, **widths: float
                   ) -> np.ndarray:
    """:func:`multirate_edges` of a store of ``protocol`` (a Protocol or its JSON dict) whose
    I_total is kept every ``store_decimation`` protocol samples (``n_stored`` samples)."""
    from ..protocols import Protocol

    if isinstance(protocol, dict):
        protocol = Protocol.from_dict(protocol)
    elif isinstance(protocol, str):
        protocol = Protocol.from_json(protocol)
    durations = [s.duration_ms for s in protocol.segments]
    return multirate_edges(durations, protocol.sample_interval_ms * int(store_decimation),
                           int(n_stored), **widths)
