"""Pair stores streamed shard by shard: bounded-memory training input (a ``tf.data`` pipeline
over a generator) and the held-out splits as arrays.

A :class:`PairStream` opens complete pair store(s) (``pairs.read_pair_manifest``; every shard
verified once, as ``pairs.load_pairs`` does), counts the windows of each split from the
``cell_id`` column alone, and then reads ``eap_uV``/``iap_mV`` of at most
``shards_in_memory`` shards at a time: per epoch the shards come in a new random order (seed,
epoch), in groups whose windows are normalized (``train.normalize_pairs``) and shuffled
together, then cut into batches. Peak memory is about ``shards_in_memory`` shards, whatever
the store size. Cell ids of store i are offset by i * 10^9 (as ``train.load_pair_data``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..storage.identity import canonical_json
from .windows import WindowConfig

CELL_OFFSET = 10**9


@dataclass(frozen=True)
class _Shard:
    store: int
    path: Path
    split_rows: dict[str, np.ndarray]     # split -> row indices in the shard


class PairStream:
    """Windows of pair store(s) by split, read shard by shard (module docstring).
    ``calibration``: cell_id % 10 == 7 is the conformal calibration split ``cal``
    (``pairs.split_of``)."""

    def __init__(self, stores, *, calibration: bool = True, shards_in_memory: int = 8):
        import pyarrow.parquet as pq

        from ..population.store import complete_shard
        from .pairs import read_pair_manifest, split_of

        stores = [stores] if isinstance(stores, (str, os.PathLike)) else list(stores)
        if not stores:
            raise ValueError("no pair store given")
        if shards_in_memory < 1:
            raise ValueError(f"shards_in_memory must be >= 1, found {shards_in_memory}")
        self.stores = [Path(s).resolve() for s in stores]
        self.shards_in_memory = int(shards_in_memory)
        manifests = [read_pair_manifest(s) for s in self.stores]
        windows = {canonical_json(m["config"]["window"]) for m in manifests}
        if len(windows) > 1:
            raise ValueError("pair stores with different window configs cannot be combined")
        self.window = WindowConfig(**manifests[0]["config"]["window"])
        self.manifests = manifests
        self.shards: list[_Shard] = []
        for i, (out, m) in enumerate(zip(self.stores, manifests, strict=True)):
            if m.get("status") != "complete" or len(m.get("shards", [])) != m.get("n_shards"):
                raise ValueError(f"{out}: the generation has not finished; re-run it to resume")
            for s in m["shards"]:
                if complete_shard(out, s["index"], m["config_hash"], s["first_cell_id"],
                                  s["n_cells"]) is None:
                    raise ValueError(f"{out / s['file']}: shard missing, incomplete or damaged; "
                                     "re-run the generation to regenerate it")
                cid = pq.read_table(out / s["file"], columns=["cell_id"]).column(0).to_numpy()
                sp = split_of(cid, calibration=calibration)
                self.shards.append(_Shard(i, out / s["file"], {
                    k: np.flatnonzero(sp == k) for k in np.unique(sp)}))
        self.info = {"stores": [str(s) for s in self.stores],
                     "config_hashes": [m["config_hash"] for m in manifests],
                     "split_windows": {k: self.count(k) for k in ("train", "cal", "val", "test")},
                     "shards": len(self.shards), "shards_in_memory": self.shards_in_memory}

    def count(self, split: str) -> int:
        """Windows of ``split``."""
        return int(sum(len(s.split_rows.get(split, ())) for s in self.shards))

    def _read(self, shards: list[_Shard], split: str, columns=("eap_uV", "iap_mV")
              ) -> dict[str, np.ndarray]:
        import pyarrow.parquet as pq

        from ..population.store import list_to_numpy

        parts: dict[str, list] = {}
        for s in shards:
            rows = s.split_rows.get(split)
            if rows is None or not len(rows):
                continue
            t = pq.read_table(s.path, columns=list(columns) + ["cell_id", "drug"]).take(rows)
            for name in t.column_names:
                col = t.column(name)
                import pyarrow as pa

                v = (list_to_numpy(col).astype(np.float32)
                     if pa.types.is_fixed_size_list(col.type)
                     else col.to_numpy(zero_copy_only=False))
                if name == "cell_id":
                    v = v + CELL_OFFSET * s.store
                parts.setdefault(name, []).append(v)
        return {k: np.concatenate(v) for k, v in parts.items()}

    def load(self, split: str) -> dict[str, np.ndarray]:
        """One split as arrays: x, y (n, length, 1) normalized, cell_id, drug (for the
        held-out splits, each ~10 % of the windows)."""
        from .train import normalize_pairs

        d = self._read(self.shards, split)
        if not d:
            L = self.window.length
            return {"x": np.zeros((0, L, 1), np.float32), "y": np.zeros((0, L, 1), np.float32),
                    "cell_id": np.zeros(0, np.int64), "drug": np.zeros(0, object)}
        x, y = normalize_pairs(d["eap_uV"], d["iap_mV"], self.window)
        return {"x": x, "y": y, "cell_id": d["cell_id"], "drug": d["drug"]}

    def batches(self, split: str, batch_size: int, *, seed: int = 0, epoch: int = 0,
                shuffle: bool = True):
        """(x, y) batches of ``split`` for one epoch, holding at most ``shards_in_memory``
        shards; the last batch of the epoch may be smaller."""
        from .train import normalize_pairs

        order = np.arange(len(self.shards))
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), 0x57E4]))
        if shuffle:
            rng.shuffle(order)
        k = self.shards_in_memory
        carry_x = carry_y = None
        for g in range(0, len(order), k):
            d = self._read([self.shards[i] for i in order[g:g + k]], split)
            if not d:
                continue
            x, y = normalize_pairs(d["eap_uV"], d["iap_mV"], self.window)
            if carry_x is not None:
                x, y = np.concatenate([carry_x, x]), np.concatenate([carry_y, y])
            if shuffle:
                p = rng.permutation(len(x))
                x, y = x[p], y[p]
            n_full = len(x) // batch_size * batch_size
            for b in range(0, n_full, batch_size):
                yield x[b:b + batch_size], y[b:b + batch_size]
            carry_x, carry_y = x[n_full:], y[n_full:]
        if carry_x is not None and len(carry_x):
            yield carry_x, carry_y

    def dataset(self, split: str, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                prefetch: int = 2):
        """A ``tf.data.Dataset`` of (x, y) batches; each iteration (epoch) draws a new shard
        order and shuffle."""
        import tensorflow as tf

        L = self.window.length
        state = {"epoch": 0}

        def gen():
            e = state["epoch"]
            state["epoch"] += 1
            yield from self.batches(split, batch_size, seed=seed, epoch=e, shuffle=shuffle)

        spec = tf.TensorSpec((None, L, 1), tf.float32)
        return tf.data.Dataset.from_generator(gen, output_signature=(spec, spec)).prefetch(
            prefetch)

    def steps(self, split: str, batch_size: int) -> int:
        """Batches per epoch of ``split`` (group remainders are carried over: only the last
        batch is short)."""
        return -(-self.count(split) // batch_size)

    def summary(self) -> dict[str, Any]:
        return dict(self.info)
