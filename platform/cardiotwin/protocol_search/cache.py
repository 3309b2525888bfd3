"""Per-cell state checkpoints: the end state of every cell under the protocol-so-far and the
I_total it produced, so that a candidate continues from there instead of re-simulating.

Continuing is exact: the voltage-clamp kernel's step depends only on the state and the command
voltage, so simulating protocol P, then Q from P's final states, gives bitwise the I_total and
end states of simulating P + Q from the start (tested).

On disk an entry is a directory ``<root>/<key>/`` of ``state.npy`` (n, 23) float64 (NaN rows for
unstable cells), ``unstable.npy`` (n,) bool, ``i_total.npy`` (n, n_samples) float32 pA/pF
sampled every ``sample_interval_ms`` (NaN rows for unstable cells) and ``protocol.json``; the
key is the protocol's ``protocol_hash`` (``initial`` for the empty protocol: the model's
initial state, no samples). An entry is built complete in a temporary directory and swapped
in (:func:`cardiotwin.storage.atomic.atomic_directory`), so no reader sees a torn ``.npy``;
an entry damaged anyway (truncated, unreadable, of the wrong shape or dtype, or whose protocol
does not hash to its key) is a cache miss (:meth:`StateCache.get`): the caller recomputes it
and overwrites it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..storage.atomic import atomic_directory, recover_directory
from ..storage.identity import sha256_bytes

INITIAL_KEY = "initial"


class CacheDamaged(ValueError):
    """A cache entry exists but cannot be used (torn, wrong shape, wrong protocol)."""


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
    return sha256_bytes(protocol_json.encode("utf-8"))


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
        """True when every file of entry ``key`` is there (its content is checked on load)."""
        recover_directory(self.path(key))
        return all((self.path(key) / f).is_file() for f in self.FILES)

    def save(self, entry: CacheEntry) -> Path:
        """Write ``entry`` atomically (built aside, then swapped in); replaces the same key."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.path(entry.key)
        with atomic_directory(final) as tmp:
            np.save(tmp / "state.npy", entry.state)
            np.save(tmp / "unstable.npy", entry.unstable)
            np.save(tmp / "i_total.npy", entry.i_total)
            (tmp / "protocol.json").write_text(entry.protocol_json or "null", encoding="utf-8")
        return final

    def load(self, key: str, n_cells: int | None = None) -> CacheEntry:
        """The entry ``key``; FileNotFoundError when it is missing or incomplete,
        :class:`CacheDamaged` (a ValueError naming the file) when it cannot be used: an
        unreadable or truncated file, arrays of the wrong shape or dtype (``n_cells`` rows
        when given; I_total as long as the protocol), a protocol not hashing to ``key``."""
        if not self.has(key):
            raise FileNotFoundError(f"no complete cache entry {key} under {self.root}")
        d = self.path(key)
        try:
            text = (d / "protocol.json").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CacheDamaged(f"{d / 'protocol.json'}: unreadable ({e})") from None
        pj = None if text == "null" else text
        if entry_key(pj) != key:
            raise CacheDamaged(f"cache entry {d}: its protocol hashes to {entry_key(pj)}, "
                               f"not {key}")
        arrays = {f: _read_npy(d / f) for f in ("state.npy", "unstable.npy", "i_total.npy")}
        state, unstable, i_total = (arrays[f] for f in ("state.npy", "unstable.npy",
                                                         "i_total.npy"))
        from ..model.parameters import N_STATES

        # rows: n_cells when given, else as many as unstable.npy has
        n = int(n_cells) if n_cells is not None else \
            (unstable.shape[0] if unstable.ndim == 1 else -1)
        n_samples = 0 if pj is None else _protocol_samples(pj, d)
        want = {"unstable.npy": ((n,), np.bool_), "state.npy": ((n, N_STATES), np.float64),
                "i_total.npy": ((n, n_samples), np.float32)}
        for f, (shape, dtype) in want.items():
            a = arrays[f]
            if a.shape != shape or a.dtype != dtype:
                raise CacheDamaged(f"{d / f}: shape {a.shape} {a.dtype}, expected {shape} "
                                   f"{np.dtype(dtype)}"
                                   + (f" for {n_cells} cells" if n_cells is not None else ""))
        return CacheEntry(state, unstable, i_total, pj)

    def get(self, key: str, n_cells: int | None = None,
            log: Callable[[str], None] | None = None) -> CacheEntry | None:
        """The entry ``key``, or None (a miss) when it is missing or damaged (see
        :meth:`load`; the reason goes to ``log``): the caller recomputes and overwrites it."""
        try:
            return self.load(key, n_cells)
        except FileNotFoundError:
            return None
        except CacheDamaged as e:
            if log is not None:
                log(f"cache entry {key[:12]} is damaged ({e}): recomputing it")
            return None

    def prune(self, keep: set[str]) -> None:
        """Remove every entry (and leftover temporary directory) not in ``keep``."""
        if not self.root.is_dir():
            return
        for d in self.root.iterdir():
            if d.is_dir() and d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)


def _read_npy(path: Path) -> np.ndarray:
    """An .npy file (no pickles); CacheDamaged naming it when it is truncated or unreadable."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise CacheDamaged(f"{path}: unreadable ({e})") from None


def _protocol_samples(protocol_json: str, d: Path) -> int:
    from ..protocols import Protocol

    try:
        return Protocol.from_json(protocol_json).n_samples
    except ValueError as e:
        raise CacheDamaged(f"{d / 'protocol.json'}: not a protocol ({e})") from None
