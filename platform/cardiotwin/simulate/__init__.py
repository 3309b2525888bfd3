"""Batched simulation: voltage clamp and current clamp of many Kernik cells at once."""

from .api import (
                  CurrentClampResult,
                  Pacing,
                  VoltageClampResult,
                  simulate_current_clamp,
                  simulate_voltage_clamp,
)

__all__ = ["CurrentClampResult", "Pacing", "VoltageClampResult", "simulate_current_clamp",
           "simulate_voltage_clamp"]
