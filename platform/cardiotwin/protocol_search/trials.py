"""One search cycle on Ray Tune: one trial per candidate test potential, in parallel.

A trial continues every cell from the cached end state of the protocol-so-far through one
cycle (hold, then the candidate step), appends that to the cached I_total (sent to the trials
already pooled to the network's input resolution when the cycle is a whole number of pool
blocks, see :func:`cycle_aligned`), trains the network
and reports its scores once (see :func:`cardiotwin.protocol_search.scoring.train_and_score`),
with the seconds spent simulating and training and a digest of the simulated segment.

The cycle's inputs (cached states and I_total, multipliers) go to the object store once and are
shared by all trials (``tune.with_parameters``). Each trial asks for ``cpus_per_trial`` CPUs and
``gpus_per_trial`` GPUs (default: 1 when the cluster has GPUs, else 0). Tune's files go to
``<search dir>/tune/cycle_NNN``; an interrupted cycle is run again from the start.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..resources import training_resources
from ..storage.identity import sha256_bytes
from .cache import CacheEntry, simulate_from
from .config import SearchConfig


def segment_digest(seg_itot: np.ndarray, state: np.ndarray) -> str:
    """sha256 of a simulated cycle's I_total and end states (to check that the driver's own
    continuation matches the trial's)."""
    return sha256_bytes(np.ascontiguousarray(seg_itot).tobytes()
                        + np.ascontiguousarray(state).tobytes())


def cycle_aligned(config: SearchConfig) -> bool:
    """True when one cycle's samples are a whole number of network inputs (pool blocks): then
    trials receive the protocol-so-far's I_total already pooled (smaller), and pooling the
    cycle alone and appending is exact."""
    n = round(config.cycle_ms / config.sample_interval_ms)
    return n % config.train_config().input_pool == 0


def gpus_per_trial(config: SearchConfig) -> float:
    """The configured GPUs per trial, or 1 when the Ray cluster has GPUs and 0 otherwise."""
    if config.gpus_per_trial is not None:
        return float(config.gpus_per_trial)
    import ray

    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def candidate_trial(params: dict[str, Any], payload: dict[str, Any]) -> None:
    """Tune trial body: simulate one candidate cycle from the cached states, train, report."""
    from ray import tune

    from .scoring import configure_threads, pool_traces, train_and_score

    config = SearchConfig(**payload["config"])
    configure_threads(config.cpus_per_trial, config.deterministic)
    train_config = config.train_config()
    k = train_config.input_pool
    v = float(params["candidate_mV"])
    entry = CacheEntry(payload["state"], payload["unstable"], payload["traces"], None)
    state, unstable, seg, sim_s = simulate_from(entry, config.cycle_protocol(v),
                                                _inputs(payload["multipliers"]))
    if payload["pooled"]:
        x = np.concatenate([payload["traces"], pool_traces(seg, k)], axis=1)
    else:
        x = pool_traces(np.concatenate([payload["traces"], seg], axis=1), k)
    keep = payload["eligible"] & ~unstable
    metrics = train_and_score(x, payload["multipliers"], payload["cell_ids"], keep,
                              train_config, config.spread)
    metrics.update(candidate_mV=v, sim_s=sim_s, n_unstable=int(unstable.sum()),
                   digest=segment_digest(seg, state), score=metrics[config.score])
    tune.report(metrics)


def _inputs(multipliers: np.ndarray) -> np.ndarray:
    from ..model import inputs_from_multipliers

    return inputs_from_multipliers(np.asarray(multipliers, np.float32).astype(np.float64))


def run_cycle(cycle: int, entry: CacheEntry, cells, config: SearchConfig, tune_dir: Path
              ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Run every candidate of ``cycle`` (1-based) as a Tune trial. Returns the candidates'
    reported metrics in ``config.candidates_mV`` order and {gpus_per_trial, tune_s}.
    RuntimeError when a trial failed (after Tune's retries)."""
    from ray import tune

    from .scoring import pool_traces

    gpus = gpus_per_trial(config)
    pooled = cycle_aligned(config)
    traces = pool_traces(entry.i_total, config.train_config().input_pool) if pooled \
        else np.asarray(entry.i_total)
    payload = {"config": config.model_dump(mode="json"), "state": entry.state,
               "unstable": entry.unstable, "traces": traces, "pooled": pooled,
               "multipliers": cells.multipliers, "cell_ids": cells.cell_ids,
               "eligible": cells.eligible}
    trainable = tune.with_resources(tune.with_parameters(candidate_trial, payload=payload),
                                    {"cpu": config.cpus_per_trial, "gpu": gpus,
                                     **training_resources()})
    name = f"cycle_{cycle:03d}"
    shutil.rmtree(tune_dir / name, ignore_errors=True)  # a cycle interrupted earlier
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        trainable,
        param_space={"candidate_mV": tune.grid_search(list(config.candidates_mV))},
        tune_config=tune.TuneConfig(metric="score", mode="min", reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(tune_dir.resolve()), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1)))
    results = tuner.fit()
    tune_s = time.perf_counter() - t0
    by_v: dict[float, dict[str, Any]] = {}
    errors = []
    for r in results:
        if r.error is not None or not r.metrics or "score" not in r.metrics:
            errors.append(f"candidate {r.config.get('candidate_mV')} mV: {r.error!r}")
            continue
        by_v[float(r.config["candidate_mV"])] = _clean(r.metrics)
    if errors:
        raise RuntimeError(f"cycle {cycle}: {len(errors)} trial(s) failed (see "
                           f"{tune_dir / name}): " + "; ".join(errors)[:2000])
    return [by_v[v] for v in config.candidates_mV], {"gpus_per_trial": gpus, "tune_s": tune_s}


_KEEP = ("candidate_mV", "score", "test_mse", "test_median_mae", "val_mse",
         "trivial_test_median_mae", "n_identifiable", "n_train", "n_val", "n_test", "epochs",
         "n_unstable", "sim_s", "train_s", "digest")


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    """The reported metrics without Tune's bookkeeping keys."""
    out = {k: metrics[k] for k in _KEEP if k in metrics}
    if "time_total_s" in metrics:  # the trial's own wall time (imports, simulation, training)
        out["trial_s"] = metrics["time_total_s"]
    out.update({k: v for k, v in metrics.items() if k.startswith("mae_")})
    return out
