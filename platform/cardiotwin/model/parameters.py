"""Parameter registry of the Kernik-Clancy 2019 iPSC-CM model.

The model has 87 inputs (``kernik_parameters.csv``, copied from the model authors' baseline) and
23 states (``kernik_initial_state.csv``). 52 inputs are inferred from voltage clamp: every
conductance and gating-kinetic parameter of IK1, IKr, IKs, ICaL, INa and If, less the two whose
baseline is (effectively) zero. A synthetic cell is ``baseline * multipliers``.

Units of the inputs: conductances nS/pF, gating rate constants 1/ms, slope factors mV,
time constants ms; ``scale_*`` inputs are dimensionless conductance scales (the drug-block hook).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

REGISTRY_VERSION = "kernik2019-87/52-v1"


def _read_csv(name: str) -> list[dict[str, str]]:
    text = (resources.files("cardiotwin.model") / "data" / name).read_text()
    return list(csv.DictReader(text.splitlines()))


_PARAM_ROWS = _read_csv("kernik_parameters.csv")
_STATE_ROWS = _read_csv("kernik_initial_state.csv")

PARAMETER_NAMES: tuple[str, ...] = tuple(r["name"] for r in _PARAM_ROWS)
BASELINE: np.ndarray = np.array([float(r["baseline_value"]) for r in _PARAM_ROWS])
INFERRED_NAMES: tuple[str, ...] = tuple(r["name"] for r in _PARAM_ROWS if r["in_52_set"] == "1")
INFERRED_INDEX: np.ndarray = np.array([PARAMETER_NAMES.index(n) for n in INFERRED_NAMES])
STATE_NAMES: tuple[str, ...] = tuple(r["name"] for r in _STATE_ROWS)
STATE_UNITS: tuple[str, ...] = tuple(r["unit"] for r in _STATE_ROWS)
INITIAL_STATE: np.ndarray = np.array([float(r["value"]) for r in _STATE_ROWS])

N_INPUTS = len(PARAMETER_NAMES)
N_INFERRED = len(INFERRED_NAMES)
N_STATES = len(STATE_NAMES)
BASELINE.setflags(write=False)
INITIAL_STATE.setflags(write=False)

PARAMETER_INDEX: dict[str, int] = {n: i for i, n in enumerate(PARAMETER_NAMES)}

#: The current each inferred parameter belongs to (the part of the name before the dot).
INFERRED_CURRENT: tuple[str, ...] = tuple(n.split(".")[0] for n in INFERRED_NAMES)

#: Conductance-scale input (the drug-block hook) of each membrane current or flux.
CONDUCTANCE_SCALE: dict[str, str] = {
    "IK1": "scale_g_K1", "IKr": "scale_g_Kr", "IKs": "scale_g_Ks", "Ito": "scale_g_to",
    "ICaL": "scale_p_CaL", "ICaT": "scale_g_CaT", "INa": "scale_g_Na", "If": "scale_g_f",
    "INaCa": "scale_k_NaCa", "Jup": "scale_Vmax_up", "Jrel": "scale_ks_RyR",
    "Jleak": "scale_V_leak", "INaK": "scale_P_NaK", "IbNa": "scale_g_b_Na",
    "IbCa": "scale_g_b_Ca", "IpCa": "scale_g_PCa",
}

#: Inputs that are maximal conductances / permeabilities / rates: a zero multiplier is a knockout.
_ZERO_ALLOWED = frozenset(
    [v for v in CONDUCTANCE_SCALE.values()]
    + ["IK1.g_K1", "IKr.g_Kr", "IKs.g_Ks", "Ito.g_to", "ICaL.p_CaL", "ICaT.g_CaT", "INa.g_Na",
       "If.g_f"]
)
_FLAG_PREFIX = "flag."


@dataclass(frozen=True)
class ParameterInfo:
    """One model input: its index in the 87, baseline value, and whether it is inferred."""

    index: int
    name: str
    baseline: float
    inferred: bool


def parameter_info(name: str) -> ParameterInfo:
    """Look up one input by name (ValueError naming the unknown name)."""
    if name not in PARAMETER_INDEX:
        raise ValueError(f"unknown model parameter {name!r}; expected one of the 87 names of "
                         "kernik_parameters.csv, e.g. 'IKr.g_Kr'")
    i = PARAMETER_INDEX[name]
    return ParameterInfo(i, name, float(BASELINE[i]), name in INFERRED_NAMES)


def _check_multipliers(m: np.ndarray, names: tuple[str, ...], what: str) -> None:
    bad = ~np.isfinite(m)
    if bad.any():
        cell, col = np.argwhere(bad)[0]
        raise ValueError(f"{what}: non-finite multiplier {m[cell, col]} for {names[col]!r} "
                         f"(cell {cell}); multipliers must be finite")
    zero_ok = np.array([n in _ZERO_ALLOWED for n in names], dtype=bool)
    neg = (m < 0) | ((m == 0) & ~zero_ok)
    if neg.any():
        cell, col = np.argwhere(neg)[0]
        need = ">= 0" if zero_ok[col] else "> 0"
        raise ValueError(f"{what}: multiplier {m[cell, col]} for {names[col]!r} (cell {cell}) "
                         f"is not allowed; expected {need}")


def inputs_from_multipliers(multipliers: np.ndarray) -> np.ndarray:
    """Map multipliers on the 52 inferred parameters, shape (n_cells, 52) or (52,), onto the full
    input set: returns (n_cells, 87) float64, baseline everywhere else."""
    m = np.asarray(multipliers, dtype=np.float64)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[1] != N_INFERRED:
        raise ValueError(f"multipliers: expected shape (n_cells, {N_INFERRED}) in the order of "
                         f"INFERRED_NAMES, found {np.shape(multipliers)}")
    _check_multipliers(m, INFERRED_NAMES, "multipliers")
    inputs = np.repeat(BASELINE[None, :], m.shape[0], axis=0)
    inputs[:, INFERRED_INDEX] *= m
    return inputs


def inputs_from_named(multipliers: dict[str, float], base: np.ndarray | None = None) -> np.ndarray:
    """One cell's (87,) inputs from ``{name: multiplier}`` over any of the 87 names
    (unnamed inputs stay at baseline, or at ``base`` when given)."""
    inputs = np.array(BASELINE if base is None else base, dtype=np.float64)
    names = tuple(multipliers)
    for n in names:
        parameter_info(n)
        if n.startswith(_FLAG_PREFIX):
            raise ValueError(f"{n!r} is a model flag, not a parameter: it cannot take a multiplier")
    m = np.array([[float(multipliers[n]) for n in names]])
    _check_multipliers(m, names, "multipliers")
    for n, v in zip(names, m[0], strict=True):
        inputs[PARAMETER_INDEX[n]] *= v
    return inputs


def read_multipliers_csv(path: str | Path) -> dict[str, float]:
    """Read a ``name,multiplier`` CSV (one row per parameter) into a dict, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"multipliers file not found: {path}")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"name", "multiplier"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected columns 'name,multiplier', found "
                             f"{reader.fieldnames}")
        out: dict[str, float] = {}
        for line, row in enumerate(reader, start=2):
            name = (row["name"] or "").strip()
            try:
                value = float(row["multiplier"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}, line {line}: multiplier {row['multiplier']!r} for "
                                 f"{name!r} is not a number") from None
            if name in out:
                raise ValueError(f"{path}, line {line}: parameter {name!r} given twice")
            if name not in PARAMETER_INDEX:
                raise ValueError(f"{path}, line {line}: unknown parameter {name!r}")
            out[name] = value
    if not out:
        raise ValueError(f"{path}: no rows; expected 'name,multiplier' rows")
    return out


def apply_block(inputs: np.ndarray, block: dict[str, float | np.ndarray]) -> np.ndarray:
    """Drug-block hook: scale the conductance of each named current by ``1 - block``.

    ``block`` maps a current ('IKr', 'ICaL', ... see CONDUCTANCE_SCALE) to the blocked fraction in
    [0, 1] (a scalar or one value per cell). Returns a new (n_cells, 87) array.
    """
    out = np.array(inputs, dtype=np.float64, ndmin=2)
    for current, frac in block.items():
        if current not in CONDUCTANCE_SCALE:
            raise ValueError(f"unknown current {current!r} in block; expected one of "
                             f"{sorted(CONDUCTANCE_SCALE)}")
        f = np.asarray(frac, dtype=np.float64)
        if not np.all(np.isfinite(f)) or np.any((f < 0) | (f > 1)):
            raise ValueError(f"block fraction for {current} must be in [0, 1], found {frac}")
        out[:, PARAMETER_INDEX[CONDUCTANCE_SCALE[current]]] *= 1.0 - f
    return out
