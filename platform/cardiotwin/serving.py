"""Ray Serve application: the live twin and on-demand drug screens.

The implementation is the package :mod:`cardiotwin.service` (settings and limits, security,
errors, parsing, screen jobs, the deployment); this module keeps the import path that
serve/config.yaml names (``cardiotwin.serving:app_builder``). Routes, authentication, limits
and how to run it on a lab network: docs/serving.md.
"""

from .service.app import SIMULATION_BATCH, TwinDeployment, TwinService, api, app_builder
from .service.config import ServiceConfig
from .service.errors import ApiError

__all__ = ["SIMULATION_BATCH", "ApiError", "ServiceConfig", "TwinDeployment", "TwinService",
           "api", "app_builder"]
