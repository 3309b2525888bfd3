"""Train a network on a population's traces and score it on held-out cells.

The arrays are built directly (no Parquet store): the cells that are eligible and stable are
split 70:10:20 by cell id (:func:`cardiotwin.learn.dataset.split_of`), traces are block-averaged
by the network's ``input_pool`` and prepared as in :func:`cardiotwin.learn.train.prepare`
(standardization fitted on the training split, multipliers mapped to [0, 1] over the sampling
range). Scores are on that unit scale.

Per parameter group (the current a parameter belongs to: IK1, IKr, IKs, ICaL, INa, If) the
median over the group's parameters of the test MAE is reported as ``mae_<current>``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

GROUPS = ("IK1", "IKr", "IKs", "ICaL", "INa", "If")


def pool_traces(i_total: np.ndarray, k: int) -> np.ndarray:
    """Block means of ``k`` samples (n, ceil(T / k)) float32: the network's input resolution.
    Pooling a concatenation equals concatenating the pooled parts when each part's length is a
    multiple of ``k``."""
    from ..learn.dataset import pool

    return pool(i_total, k)


def make_prepared(x_pooled: np.ndarray, multipliers: np.ndarray, cell_ids: np.ndarray,
                  keep: np.ndarray, train_config, spread: float):
    """A :class:`cardiotwin.learn.train.Prepared` of the ``keep`` cells: x_pooled (n, T')
    I_total (pA/pF) already pooled by ``train_config.input_pool``, multipliers (n, 52).
    ValueError when a split would be empty."""
    from ..learn.dataset import SPLITS, Dataset, split_of
    from ..learn.train import prepare

    keep = np.asarray(keep, bool)
    ids = np.asarray(cell_ids)[keep]
    x = np.asarray(x_pooled, np.float32)[keep]
    m = np.asarray(multipliers, np.float32)[keep]
    if not np.all(np.isfinite(x)):
        raise ValueError("I_total of the kept cells contains NaN or inf")
    sp = split_of(ids)
    sizes = {s: int(np.sum(sp == i)) for i, s in enumerate(SPLITS)}
    if min(sizes.values()) < 1:
        raise ValueError(f"too few usable cells to split 70:10:20: {sizes} of {len(ids)} "
                         "stable eligible cells; use a larger population")
    info = {"pool": int(train_config.input_pool),
            "n_stored": int(np.shape(x_pooled)[1]) * int(train_config.input_pool),
            "store_decimation": (1, None), "sampling_range": [1.0 - spread, 1.0 + spread],
            "split_sizes": sizes}
    data = Dataset({s: x[sp == i] for i, s in enumerate(SPLITS)},
                   {s: m[sp == i] for i, s in enumerate(SPLITS)},
                   {s: ids[sp == i] for i, s in enumerate(SPLITS)}, info)
    noise = getattr(train_config, "input_noise_pA_per_pF", 0.0)  # as learn.train.load_prepared
    return prepare(data, noise) if noise else prepare(data)


def group_mae(per_parameter: list[dict[str, Any]]) -> dict[str, float]:
    """Median MAE (unit scale) over each group's parameters: {"mae_IKr": ..., ...}."""
    out = {}
    for g in GROUPS:
        vals = [r["mae_unit"] for r in per_parameter if r["current"] == g]
        if vals:
            out[f"mae_{g}"] = float(np.median(vals))
    return out


def train_and_score(x_pooled: np.ndarray, multipliers: np.ndarray, cell_ids: np.ndarray,
                    keep: np.ndarray, train_config, spread: float) -> dict[str, Any]:
    """Train ``train_config``'s network on the kept cells (traces pooled by its
    ``input_pool``, see :func:`make_prepared`) and score it. Returns flat metrics:
    test_mse, test_median_mae, val_mse, mae_<group>, trivial_test_median_mae, n_identifiable,
    n_train / n_val / n_test, epochs, train_s (seconds)."""
    from ..learn.train import evaluate_split, fit_network

    t0 = time.perf_counter()
    prep = make_prepared(x_pooled, multipliers, cell_ids, keep, train_config, spread)
    model, history, _ = fit_network(train_config, prep, verbose=False)
    test = evaluate_split(model, prep, "test", config=train_config)
    val = evaluate_split(model, prep, "val", config=train_config)
    sizes = prep.data.info["split_sizes"]
    return {"test_mse": test["mse_unit"], "test_median_mae": test["median_mae_unit"],
            "val_mse": val["mse_unit"], **group_mae(test["per_parameter"]),
            "trivial_test_median_mae": test["trivial"]["median_mae_unit"],
            "n_identifiable": test["n_identifiable"],
            "n_train": sizes["train"], "n_val": sizes["val"], "n_test": sizes["test"],
            "epochs": len(history.get("loss", [])), "train_s": time.perf_counter() - t0}


def configure_threads(cpus: int, deterministic: bool) -> None:
    """Limit numba and TensorFlow to ``cpus`` threads (inside a trial or task) and switch on
    TensorFlow op determinism when asked."""
    from ..runtime.threads import limit_numba_threads, limit_tensorflow_threads

    limit_numba_threads(cpus)
    limit_tensorflow_threads(cpus, deterministic)
