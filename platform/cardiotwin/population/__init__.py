"""Synthetic cell populations: sampling of parameter multipliers."""

from .sampling import sample_multipliers

__all__ = ["sample_multipliers"]
