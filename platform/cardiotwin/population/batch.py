"""Simulation of one batch of cells: the voltage-clamp protocol (I_total, stored) and the
free-running AP run that classifies each cell and gives its biomarkers.

Cost per cell on one core (20,000 cells, protocol_a, 4 s AP run, benchmarks/bench_population.py
on a 2-core Xeon at 2.8 GHz, float32 arithmetic): AP run 4.0 ms, voltage clamp 1.2 ms,
classification 0.21 ms (compiled; see population/config.py for the AP-length study).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..decimation import decimate
from ..features import classify_batch
from ..model.parameters import N_INFERRED
from .config import AP_RECORD_INTERVAL_MS

CHUNK_CELLS = 256           # cells simulated at once inside a shard (one Parquet row group)
GPU_CHUNK_CELLS = 16384     # the same on a GPU actor (~0.7 MB of host memory per cell)


def simulate_batch(protocol, multipliers: np.ndarray, ap_duration_ms: float,
                   temperature_K: float, decimation_factor: int = 1, decimation: str = "mean",
                   device: str = "cpu", nuisance: np.ndarray | None = None,
                   seal: tuple[np.ndarray, np.ndarray] | None = None, calibration=None,
                   artefacts: np.ndarray | None = None, precision: str = "float64"
                   ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, dict[str, float]]:
    """Voltage clamp and classification AP run of the cells of ``multipliers`` (n, 52):
    (statuses (n,), biomarkers {BATCH_KEYS: (n,)}, I_total (n, n_stored) float32 pA/pF,
    seconds per stage {vc, ap, classify}). ``device`` "gpu" simulates with simulate.cuda.
    ``nuisance``: scales of the non-inferred inputs (n, len(prior.NUISANCE_INPUTS)), in both
    runs; ``seal``: (g nS/pF, E mV) per cell, the AP run's seal leak; ``calibration``: a
    population.calibration.Calibration applied to the statuses; ``artefacts``: the
    voltage-clamp artefact table (n, model.artefacts.N_ARTEFACT_FIELDS), the recorded current
    is stored (CPU only); ``precision``: of the voltage clamp and the AP run (float32: CPU
    only). A cell whose clamp diverges is 'unstable'."""
    from ..model import inputs_from_multipliers
    from ..simulate import SealLeak
    from .prior import apply_nuisance

    simulate_voltage_clamp: Any
    simulate_current_clamp: Any
    if device == "gpu":
        from functools import partial

        from ..simulate import cuda

        simulate_voltage_clamp = cuda.simulate_voltage_clamp_gpu
        simulate_current_clamp = partial(cuda.simulate_current_clamp_gpu, record_cai=False)
    else:
        from .. import simulate

        simulate_voltage_clamp = simulate.simulate_voltage_clamp
        simulate_current_clamp = simulate.simulate_current_clamp

    inputs = inputs_from_multipliers(np.asarray(multipliers, dtype=np.float32)
                                     .astype(np.float64))
    if nuisance is not None:
        inputs = apply_nuisance(inputs, nuisance)
    if device == "gpu" and (artefacts is not None or precision != "float64"):
        raise ValueError("voltage-clamp artefacts and precision 'float32' are simulated on the "
                         "CPU only: use device 'cpu' (or no vc_artefacts, precision 'float64') "
                         "for this population")
    kw = {} if precision == "float64" else {"precision": precision}  # GPU: float64 only
    t0 = time.perf_counter()
    if artefacts is None:
        vc = simulate_voltage_clamp(protocol, inputs, **kw)
    else:
        from ..model.artefacts import VoltageClampArtefacts

        vc = simulate_voltage_clamp(protocol, inputs, **kw,
                                    artefacts=VoltageClampArtefacts.from_columns(artefacts))
    t1 = time.perf_counter()
    cc = simulate_current_clamp(ap_duration_ms, inputs, temperature_K=temperature_K,
                                record_interval_ms=AP_RECORD_INTERVAL_MS,
                                seal=SealLeak(*seal) if seal is not None else None, **kw)
    t2 = time.perf_counter()
    statuses, markers = classify_batch(cc.t_ms, cc.v_mV)
    if calibration is not None:
        statuses = calibration.apply(statuses, markers)
    t3 = time.perf_counter()
    statuses = np.where(vc.unstable | cc.unstable, "unstable", statuses)
    itot = decimate(vc.i_total, decimation_factor, decimation)
    return statuses, markers, itot, {"vc": t1 - t0, "ap": t2 - t1, "classify": t3 - t2}


def warm_kernels(protocol, artefacts=None, precision: str = "float64") -> None:
    """Run both kernels once on one cell in the driver, so that numba's on-disk cache is
    written once, before the actors start (instead of every actor compiling at the same time
    after a code change). The actors load it when they import the same package files.
    ``artefacts``: the population's ArtefactPrior (its kernel is warmed too), or None;
    ``precision``: of both."""
    from ..protocols import Protocol, Segment

    tiny = Protocol((Segment(1.0, -80.0, -80.0),), protocol.sample_interval_ms,
                    protocol.temperature_K)
    simulate_batch(tiny, np.ones((1, N_INFERRED)), 1.0, protocol.temperature_K,
                   artefacts=None if artefacts is None else artefacts.draw(0, 0, 1),
                   precision=precision)
