"""The service's settings (``args`` of serve/config.yaml): the model, authentication, allowed
hosts and every limit on the work one request may ask for.

Units are in the names: ``_mb`` (10^6 bytes), ``_kb`` (10^3 bytes), ``_ms``, ``_s``, ``_h``;
``screen_budget_cell_ms`` is cells x concentrations x simulated ms of one screen. Validated on
construction (:class:`cardiotwin.settings.Settings`: declarative constraints, one plain line per
invalid field).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..settings import NonEmptyStr, NonNegativeInt, PositiveFloat, PositiveInt, Settings
from ..twin.inference import DEFAULT_AP_SAMPLES

Megabytes = Annotated[float, Field(gt=0, le=2000, allow_inf_nan=False)]
Hours = Annotated[float, Field(gt=0, le=100_000, allow_inf_nan=False)]

DEFAULT_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class ServiceConfig(Settings):
    """Settings of one twin-service deployment (see the module docstring)."""

    model_dir: NonEmptyStr = Field(description="model artifact directory (cardiotwin train)")
    reconstruct_model_dir: str | None = Field(None, description="enables POST /reconstruct")
    ap_duration_ms: Annotated[float, Field(gt=0, le=60_000, allow_inf_nan=False)] = Field(
        10_000.0, description="the twin's free-running AP (ms)")
    ap_samples: Annotated[int, Field(ge=0, le=256)] = Field(
        DEFAULT_AP_SAMPLES, description="posterior samples simulated per twin for its AP "
                                        "prediction (0: none; posterior models only)")

    # ---- who may call
    require_auth: bool = Field(True, description="API tokens on every route but /health; "
                                                 "false: loopback clients only, no tokens")
    api_tokens_env: str | None = Field(None, description="environment variable holding the "
                                                         "tokens (comma or space separated)")
    api_tokens_file: str | None = Field(None, description="file of tokens, one a line")
    api_token_sha256: tuple[str, ...] = Field(
        (), description="SHA-256 hex digests of the tokens (filled by the app builder from "
                        "api_tokens_env / api_tokens_file so that replicas need neither)")
    allowed_hosts: tuple[NonEmptyStr, ...] = Field(
        DEFAULT_ALLOWED_HOSTS, description="Host header names accepted (no port); '*': any")

    # ---- bounded work per request
    max_upload_mb: Megabytes = Field(50.0, description="multipart upload (10^6 bytes)")
    max_json_mb: Megabytes = Field(20.0, description="JSON trace body of POST /twin")
    max_screen_body_kb: Annotated[float, Field(gt=0, le=10_000)] = Field(
        256.0, description="JSON body of POST /screens (10^3 bytes)")
    max_sweeps: Annotated[int, Field(gt=0, le=100_000)] = Field(
        200, description="sweeps per ABF file (read from the header before parsing)")
    max_samples: Annotated[int, Field(gt=0, le=500_000_000)] = Field(
        20_000_000, description="samples per file, all sweeps and channels")
    max_resample_factor: Annotated[float, Field(ge=1, le=1000, allow_inf_nan=False)] = Field(
        100.0, description="largest ratio between the recording's and the protocol's "
                           "sample interval, either way")
    max_abs_current_pA_per_pF: PositiveFloat = Field(
        1e5, description="larger |current| is refused (units wrong; overflows float32)")

    # ---- screens
    screen_dir: str | None = Field(None, description="job state and results, shared by the "
                                                     "replicas (None: a private temp dir)")
    screen_max_cells: PositiveInt = Field(5000, description="cells per screen")
    screen_budget_cell_ms: PositiveFloat = Field(
        2.5e8, description="cells x concentrations x (prepace_ms + record_ms) per screen")
    screen_max_samples_per_cell: PositiveInt = Field(
        200_000, description="record_ms / record_interval_ms (and the kept traces) per cell")
    screen_max_kept_traces: NonNegativeInt = Field(16, description="n_keep_traces per "
                                                                     "concentration")
    screen_batch_cells: Annotated[int, Field(gt=0, le=1000)] = Field(
        128, description="cells per Ray task (progress and cancellation granularity)")
    max_concurrent_screens: PositiveInt = Field(2, description="running screens, all replicas")
    screen_retry_after_s: Annotated[int, Field(gt=0, le=3600)] = Field(
        30, description="Retry-After of a 429 when the screen cap is reached (s)")
    screen_retention: NonNegativeInt = Field(100, description="finished jobs kept")
    screen_retention_h: Hours = Field(168.0, description="finished jobs older than this (h) "
                                                           "are removed")

    # ---- concurrency per replica
    max_inflight_requests: Annotated[int, Field(gt=0, le=1024)] = Field(
        16, description="twin and reconstruct requests in progress per replica; more get 429 "
                        "with Retry-After (keep below the deployment's max_ongoing_requests so "
                        "that /health always finds a slot)")
    work_threads: Annotated[int, Field(gt=0, le=64)] = Field(
        2, description="threads parsing, conditioning and inferring (off the event loop)")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1e6)

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * 1e6)

    @property
    def max_screen_body_bytes(self) -> int:
        return int(self.max_screen_body_kb * 1e3)
