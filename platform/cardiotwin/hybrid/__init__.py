"""Physics plus data: a Mitchell-Schaeffer + residual-network hybrid of AP dynamics
(after Kashtanova et al., APHYN-EP): dX/dt = F_p(X) + F_dl(X), X = (v, h) normalized, time in ms.

Modules: ``config`` (pydantic settings, units), ``mitchell_schaeffer`` (F_p, bounded
parameters), ``network`` (F_dl, Keras), ``integrate`` (RK4 in TensorFlow ops), ``data`` (reading,
refusing, cutting and normalizing beats), ``synthetic`` (Mitchell-Schaeffer ground truth),
``fit`` (training, forecasting), ``readout`` (tau tables, pre/post-drug), ``figures``,
``parallel`` (many recordings, Ray tasks), ``cli_args`` (``cardiotwin hybrid fit``).
TensorFlow is imported lazily (inside the functions that need it).
"""

from .config import DataConfig, FitConfig, NetworkConfig, PhysicsConfig
from .data import (
                   BeatSet,
                   NotBeatingError,
                   TraceError,
                   beats_from_trace,
                   load_beats,
                   read_trace,
                   simulate_beats,
)

__all__ = ["BeatSet", "DataConfig", "FitConfig", "NetworkConfig", "NotBeatingError",
           "PhysicsConfig", "TraceError", "beats_from_trace", "load_beats", "read_trace",
           "simulate_beats"]
