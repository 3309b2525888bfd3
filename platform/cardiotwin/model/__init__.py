"""The Kernik-Clancy 2019 iPSC-CM model: parameter registry, temperature, equations."""

from .parameters import (
    BASELINE,
    INFERRED_NAMES,
    INITIAL_STATE,
    N_INFERRED,
    N_INPUTS,
    N_STATES,
    PARAMETER_NAMES,
    STATE_NAMES,
    apply_block,
    inputs_from_multipliers,
    inputs_from_named,
    read_multipliers_csv,
)
from .temperature import tau_factor

__all__ = ["BASELINE", "INFERRED_NAMES", "INITIAL_STATE", "N_INFERRED", "N_INPUTS", "N_STATES",
           "PARAMETER_NAMES", "STATE_NAMES", "apply_block", "inputs_from_multipliers",
           "inputs_from_named", "read_multipliers_csv", "tau_factor"]
