"""Hill block of ionic currents: g_drug / g = 1 / (1 + ([D] / IC50)^n).

Concentrations and IC50s in nM. The model's drug-block hook is the conductance-scale input of
each current (``model.parameters.CONDUCTANCE_SCALE``), applied with ``model.apply_block``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Protocol

import numpy as np

from ..model.parameters import apply_block


class HillBlock(Protocol):
    """Anything with ``current`` (a CONDUCTANCE_SCALE key), ``ic50_nM`` and ``hill``."""

    current: str
    ic50_nM: float
    hill: float


def check_concentration(conc_nM: float, what: str = "concentration") -> float:
    """The concentration as a float (nM); ValueError unless finite and >= 0."""
    try:
        c = float(conc_nM)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of nM, found {conc_nM!r}") from None
    if not math.isfinite(c) or c < 0:
        raise ValueError(f"{what} must be a finite number of nM >= 0, found {conc_nM!r}")
    return c


def fraction_remaining(conc_nM: float, ic50_nM: float, hill: float = 1.0) -> float:
    """Fraction of the conductance left at ``conc_nM``: 1 / (1 + (conc / IC50)^hill).
    Exactly 0.5 at conc = IC50; 1 at conc = 0."""
    c = check_concentration(conc_nM)
    if not (math.isfinite(ic50_nM) and ic50_nM > 0):
        raise ValueError(f"IC50 must be a finite number of nM > 0, found {ic50_nM!r}")
    if not (math.isfinite(hill) and hill > 0):
        raise ValueError(f"Hill coefficient must be a finite number > 0, found {hill!r}")
    if c == 0.0:
        return 1.0
    return 1.0 / (1.0 + (c / ic50_nM) ** hill)


def remaining_by_current(blocks: Iterable[HillBlock], conc_nM: float) -> dict[str, float]:
    """{current: fraction of its conductance left} at ``conc_nM`` for each blocked current."""
    return {b.current: fraction_remaining(conc_nM, b.ic50_nM, b.hill) for b in blocks}


def block_by_current(blocks: Iterable[HillBlock], conc_nM: float) -> dict[str, float]:
    """{current: blocked fraction} (1 - fraction remaining) at ``conc_nM``."""
    return {k: 1.0 - v for k, v in remaining_by_current(blocks, conc_nM).items()}


def blocked_inputs(inputs: np.ndarray, remaining: Mapping[str, float]) -> np.ndarray:
    """Model inputs (n_cells, 87) with each current's conductance scale multiplied by its
    remaining fraction (via ``model.apply_block``); a new array."""
    return apply_block(inputs, {k: 1.0 - float(v) for k, v in remaining.items()})


def drug_inputs(inputs: np.ndarray, blocks: Iterable[HillBlock], conc_nM: float) -> np.ndarray:
    """Model inputs (n_cells, 87) of the cells of ``inputs`` at ``conc_nM`` of a drug whose
    block is ``blocks`` (e.g. ``Drug.blocks``)."""
    return blocked_inputs(inputs, remaining_by_current(blocks, conc_nM))
