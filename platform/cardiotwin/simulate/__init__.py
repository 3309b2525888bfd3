"""Batched simulation: voltage clamp and current clamp of many Kernik cells at once."""

from .api import (
                  CurrentClampResult,
                  Pacing,
                  SealLeak,
                  VoltageClampResult,
                  simulate_current_clamp,
                  simulate_voltage_clamp,
)

__all__ = ["CurrentClampResult", "Pacing", "SealLeak", "VoltageClampResult",
           "simulate_current_clamp", "simulate_voltage_clamp"]
