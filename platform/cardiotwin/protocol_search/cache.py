"""Per-cell state checkpoints: the end state of every cell under the protocol-so-far and the
I_total it produced, so that a candidate continues from there instead of re-simulating.

Continuing is exact: the voltage-clamp kernel's step depends only on the state and the command
voltage, so simulating protocol P, then Q from P's final states, gives bitwise the I_total and
end states of simulating P + Q from the start (tested).

On disk an entry is a directory ``<root>/<key>/`` of ``state.npy`` (n, 23) float64 (NaN rows for
unstable cells), ``unstable.npy`` (n,) bool, ``i_total.npy`` (n, n_samples) float32 pA/pF
sampled every ``sample_interval_ms`` (NaN rows for unstable cells) and ``protocol.json``; the
key is the protocol's ``protocol_hash`` (``initial`` for the empty protocol: the model's
initial state, no samples). Entries are written to a temporary directory and renamed.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INITIAL_KEY = "initial"


@dataclass(frozen=True)
class CacheEntry:
    """Cells' end states (n, 23) float64 after ``protocol_json`` (None: nothing simulated),
    the I_total so far (n, n_samples) float32 pA/pF and the cells unstable so far (n,) bool."""

    state: np.ndarray
    unstable: np.ndarray
    i_total: np.ndarray
    protocol_json: str | None

    @property
    def key(self) -> str:
        return entry_key(self.protocol_json)

    @classmethod
    def initial(cls, n_cells: int) -> CacheEntry:
        """The empty protocol: every cell at the model's initial state."""
        from ..model.parameters import INITIAL_STATE

        return cls(np.repeat(INITIAL_STATE[None, :], n_cells, axis=0), np.zeros(n_cells, bool),
                   np.zeros((n_cells, 0), np.float32), None)

    def protocol(self):
        """The protocol-so-far (None for the empty one)."""
        from ..protocols import Protocol

        return None if self.protocol_json is None else Protocol.from_json(self.protocol_json)


def entry_key(protocol_json: str | None) -> str:
    """The cache key of a protocol given by its canonical JSON: its protocol_hash."""
    if protocol_json is None:
        return INITIAL_KEY
    import hashlib

    return hashlib.sha256(protocol_json.encode("utf-8")).hexdigest()


def simulate_from(entry: CacheEntry, segment, inputs: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Simulate the protocol ``segment`` (a Protocol) from the entry's end states.

    Returns (end states (n, 23) float64, unstable so far (n,) bool, the segment's I_total
    (n, m) float32 pA/pF, seconds simulating). Cells unstable so far start from the model's
    initial state (their output is discarded: they stay unstable, NaN rows)."""
    from ..model.parameters import INITIAL_STATE
    from ..simulate import simulate_voltage_clamp

    start = np.where(entry.unstable[:, None], INITIAL_STATE[None, :], entry.state)
    t0 = time.perf_counter()
    res = simulate_voltage_clamp(segment, inputs, initial_state=start)
    seconds = time.perf_counter() - t0
    unstable = entry.unstable | res.unstable
    seg_itot, state = res.i_total, res.final_state
    seg_itot[unstable] = np.nan
    state[unstable] = np.nan
    return state, unstable, seg_itot, seconds


def continue_simulation(entry: CacheEntry, segment, inputs: np.ndarray
                        ) -> tuple[CacheEntry, np.ndarray, float]:
    """The entry of protocol-so-far + ``segment`` (a Protocol), simulated from the entry's end
    states (see :func:`simulate_from`). Returns (new entry, the segment's I_total, seconds)."""
    from ..protocols import concatenate

    state, unstable, seg_itot, seconds = simulate_from(entry, segment, inputs)
    prev = entry.protocol()
    full = segment if prev is None else concatenate(prev, segment)
    return (CacheEntry(state, unstable, np.concatenate([entry.i_total, seg_itot], axis=1),
                       full.to_json()), seg_itot, seconds)


class StateCache:
    """Entries on disk under ``root`` (see the module docstring)."""

    FILES = ("state.npy", "unstable.npy", "i_total.npy", "protocol.json")

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        return all((self.path(key) / f).is_file() for f in self.FILES)

    def save(self, entry: CacheEntry) -> Path:
        """Write ``entry`` atomically (a temporary directory renamed); replaces the same key."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.path(entry.key)
        tmp = self.root / f".tmp-{entry.key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        np.save(tmp / "state.npy", entry.state)
        np.save(tmp / "unstable.npy", entry.unstable)
        np.save(tmp / "i_total.npy", entry.i_total)
        (tmp / "protocol.json").write_text(entry.protocol_json or "null")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final

    def load(self, key: str) -> CacheEntry:
        """The entry ``key``; FileNotFoundError when it is missing or incomplete."""
        if not self.has(key):
            raise FileNotFoundError(f"no complete cache entry {key} under {self.root}")
        d = self.path(key)
        text = (d / "protocol.json").read_text()
        entry = CacheEntry(np.load(d / "state.npy"), np.load(d / "unstable.npy"),
                           np.load(d / "i_total.npy"), None if text == "null" else text)
        if entry.key != key:
            raise ValueError(f"cache entry {d}: its protocol hashes to {entry.key}, not {key}")
        return entry

    def prune(self, keep: set[str]) -> None:
        """Remove every entry (and leftover temporary directory) not in ``keep``."""
        if not self.root.is_dir():
            return
        for d in self.root.iterdir():
            if d.is_dir() and d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)
