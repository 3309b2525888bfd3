"""The Serve deployment: routes, the request guard, work off the event loop, batching.

Every request passes :class:`Guard` first (Host and Origin allow-lists, then an API token on
every route but ``/health``, or, with ``require_auth: false``, a loopback client), gets an
``X-Request-ID`` and is answered with strict JSON. Parsing, conditioning, inference, figures
and simulation run in thread pools (``work_threads``, one simulation thread), never on the
event loop, so ``/health`` answers while the replica is busy. A twin request is validated
completely (query, body, recording, limits) and its twin inferred before it joins the
simulation batch; a batch that fails is simulated again one twin at a time, so a failure
reaches only its own request.
"""


import asyncio
import contextlib
import functools
import logging
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..runtime.quiet import quiet_tensorflow
from . import parsing as P
from .abf_limits import abf_shape, check_abf_work
from .config import ServiceConfig
from .errors import (
    ApiError,
    StrictJSONResponse,
    as_api_error,
    error_response,
    framework_error,
    internal_error,
)
from .jobs import JobStore, public_state, run_job
from .security import (
    HEALTH_PATHS,
    bearer_token,
    host_allowed,
    is_loopback,
    load_token_digests,
    origin_allowed,
    token_ok,
)

quiet_tensorflow()

log = logging.getLogger("ray.serve.cardiotwin")
SIMULATION_BATCH = 16  # the simulator's SIMD lane chunk: 16 cells cost about one
BATCH_WAIT_S = 0.02    # a batch waits this long for company
FLAT_RANGE_PA_PER_PF = 1e-6  # a current spanning less than this is flat (no recording)

api = FastAPI(title="cardiotwin", description="Digital twins of iPSC-CMs from one "
                                              "voltage-clamp recording",
              docs_url=None, redoc_url=None)


# ---- the guard -------------------------------------------------------------------------------

class Guard:
    """Who may call (see :mod:`.security`): ``digests`` of the API tokens; without
    ``require_auth``, loopback clients only."""

    def __init__(self, cfg: ServiceConfig, digests: tuple[str, ...]):
        self.require_auth = cfg.require_auth
        self.digests = digests
        self.allowed_hosts = tuple(cfg.allowed_hosts)

    def refuse(self, path: str, headers, client: str | None) -> ApiError | None:
        """The refusal of a request, or None to let it through."""
        if not host_allowed(headers.get("host"), self.allowed_hosts):
            return ApiError("the Host header names a host this service does not answer to "
                            "(allowed_hosts in serve/config.yaml)", 400, "host")
        if not origin_allowed(headers.get("origin"), self.allowed_hosts):
            return ApiError("cross-site request refused (Origin not in allowed_hosts)", 403,
                            "origin")
        if path in HEALTH_PATHS:
            return None
        if not self.require_auth:
            if is_loopback(client):
                return None
            return ApiError("this service takes requests from loopback clients only "
                            "(require_auth: false)", 403, "client")
        if token_ok(bearer_token(headers.get("authorization")), self.digests):
            return None
        return ApiError("missing or invalid API token (send Authorization: Bearer <token>)",
                        401, "authorization", headers={"WWW-Authenticate": "Bearer"})


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or "-"


@api.middleware("http")
async def _guard(request: Request, call_next):
    rid = request.headers.get("x-request-id", "")
    rid = rid if rid.isalnum() and len(rid) <= 64 else _new_id()
    request.state.request_id = rid
    guard = getattr(request.app.state, "guard", None)
    if guard is None:
        return error_response(ApiError("the service is starting", 503, None), rid)
    client = request.client.host if request.client else None
    path, root = request.url.path, request.scope.get("root_path", "")
    if root and path.startswith(root):       # a route_prefix other than /
        path = path[len(root):] or "/"
    err = guard.refuse(path, request.headers, client)
    if err is not None:
        return error_response(err, rid)
    try:
        response = await call_next(request)
    except Exception as exc:      # anything a route let through: logged, an id to the client
        return internal_error(exc, rid, request.url.path)
    response.headers["X-Request-ID"] = rid
    return response


def _new_id() -> str:
    import uuid

    return uuid.uuid4().hex[:16]


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException):
    return error_response(framework_error(exc.status_code, exc.detail), request_id(request))


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError):
    errs = exc.errors()
    loc = [str(x) for x in (errs[0].get("loc", ()) if errs else ()) if x not in ("path",
                                                                                 "query")]
    msg = str(errs[0].get("msg", "invalid request")) if errs else "invalid request"
    return error_response(ApiError(msg, 400, ".".join(loc) or None), request_id(request))


@api.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError):
    return error_response(exc, request_id(request))


# ---- the service -----------------------------------------------------------------------------

class TwinService:
    """One replica: the model, the twin pipeline and the background screens (``kwargs``:
    :class:`.config.ServiceConfig` fields)."""

    def __init__(self, **kwargs: Any):
        from ..learn import load_estimator

        cfg = ServiceConfig.create(**kwargs)
        digests = cfg.api_token_sha256 or load_token_digests(cfg.api_tokens_env,
                                                             cfg.api_tokens_file)
        if cfg.require_auth and not digests:
            raise ValueError(no_tokens_message(cfg))
        self.cfg = cfg
        self.guard = Guard(cfg, tuple(digests))
        self.estimator = load_estimator(cfg.model_dir)
        from ..twin.recording_quality import trained_artefact_prior

        # a model trained on recordings with artefacts: every simulated twin gets its
        # recording_quality (the recording's artefacts estimated with the twin's parameters)
        self.artefact_prior = trained_artefact_prior(self.estimator)
        self.reconstructor = None
        if cfg.reconstruct_model_dir:
            from ..reconstruct.infer import load_reconstructor

            self.reconstructor = load_reconstructor(cfg.reconstruct_model_dir)
        self.pool = ThreadPoolExecutor(cfg.work_threads, thread_name_prefix="twin-work")
        self.sim_pool = ThreadPoolExecutor(1, thread_name_prefix="twin-sim")
        self.screen_pool = ThreadPoolExecutor(cfg.max_concurrent_screens,
                                              thread_name_prefix="screen")
        self.inflight = 0
        self.infer_lock = threading.Lock()
        self.figure_lock = threading.Lock()
        root = cfg.screen_dir or tempfile.mkdtemp(prefix="cardiotwin-screens-")
        self.jobs = JobStore(root, max_running=cfg.max_concurrent_screens,
                             retention=cfg.screen_retention, retention_h=cfg.screen_retention_h,
                             retry_after_s=cfg.screen_retry_after_s)
        n = self.jobs.recover()
        if n:
            log.warning("%d screen job(s) of a stopped replica marked interrupted", n)
        self._warm()

    def _warm(self) -> None:
        """Compile the kernels and trace the network once, before the first request."""
        from ..simulate import simulate_current_clamp

        self.estimator.predict(np.zeros(self.estimator.protocol.n_samples),
                               self.estimator.protocol_hash)
        simulate_current_clamp(1.0)

    @contextlib.contextmanager
    def _slot(self):
        """One of ``max_inflight_requests`` heavy-request slots (429 when none is free: the
        replica keeps slots of Serve's ``max_ongoing_requests`` free for /health)."""
        if self.inflight >= self.cfg.max_inflight_requests:
            raise ApiError(f"the service is busy ({self.inflight} requests in progress); "
                           "retry shortly", 429, None, headers={"Retry-After": "1"})
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1

    async def _off_loop(self, fn, *args, pool: ThreadPoolExecutor | None = None, **kw):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool or self.pool, functools.partial(fn, *args, **kw))

    # ---- twin: parse and check -------------------------------------------------------------

    def _client_stage(self, fn, *args, **kw):
        """Run a parsing stage: client errors as 4xx; anything else a 400 naming an error id
        (the input could not be read), with the details in the log."""
        try:
            return fn(*args, **kw)
        except ApiError:
            raise
        except (ValueError, TypeError, OverflowError, RecursionError) as e:
            raise as_api_error(e) from None
        except Exception as e:
            eid = _new_id()
            log.warning("unreadable input (error id %s)", eid, exc_info=e)
            raise ApiError(f"the recording cannot be read (error id {eid})", 400,
                           "file") from None

    def _recording_from_abf(self, data: bytes, name: str, q: P.TwinQuery):
        from ..twin import read_abf

        if not data:
            raise ApiError("the upload is empty (0 bytes); expected an ABF file", 400, "file")
        protocol = self.estimator.protocol
        check_abf_work(abf_shape(data), max_sweeps=self.cfg.max_sweeps,
                       max_samples=self.cfg.max_samples,
                       target_interval_ms=protocol.sample_interval_ms,
                       max_resample_factor=self.cfg.max_resample_factor)
        rec = read_abf(data, capacitance_pF=q.capacitance_pF, protocol=protocol,
                       sweep=q.sweep, name=name)
        return self._check_recording(rec)

    def _recording_from_json(self, body: bytes, q: P.TwinQuery):
        from ..twin import recording_from_arrays

        tr = P.parse_trace(P.parse_json(body), self.cfg.max_samples)
        protocol = self.estimator.protocol
        dt = tr.sample_interval_ms or protocol.sample_interval_ms
        factor = max(dt / protocol.sample_interval_ms, protocol.sample_interval_ms / dt)
        if factor > self.cfg.max_resample_factor:
            raise ApiError(f"sample_interval_ms {dt:g}: resampling to the protocol's "
                           f"{protocol.sample_interval_ms:g} ms exceeds this service's limit "
                           f"of x{self.cfg.max_resample_factor:g}", 422, "sample_interval_ms")
        rec = recording_from_arrays(
            np.asarray(tr.current, dtype=np.float64), current_units=tr.current_units,
            command_mV=None if tr.command_mV is None else np.asarray(tr.command_mV),
            sample_interval_ms=dt, capacitance_pF=tr.capacitance_pF or q.capacitance_pF,
            protocol=protocol, source="<json>")
        return self._check_recording(rec)

    def _check_recording(self, rec):
        """Refuse (422) a current the network cannot read: not finite, beyond
        ``max_abs_current_pA_per_pF`` (wrong units; float32 overflow) or flat."""
        x = np.asarray(rec.current_pA_per_pF, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ApiError("the current has NaN or infinite samples", 422, "current")
        peak = float(np.max(np.abs(x)))
        if peak > self.cfg.max_abs_current_pA_per_pF:
            raise ApiError(f"|current| reaches {peak:.3g} pA/pF, beyond this service's "
                           f"{self.cfg.max_abs_current_pA_per_pF:.3g} pA/pF (wrong units or "
                           "capacitance?)", 422, "current")
        if float(np.ptp(x)) < FLAT_RANGE_PA_PER_PF:
            raise ApiError("the current is flat (constant): no cell response to read", 422,
                           "current")
        return rec

    async def recording(self, request: Request, q: P.TwinQuery):
        mt = P.require_media_type(request.headers.get("content-type"), P.MULTIPART, P.JSON)
        if mt == P.MULTIPART:
            name, data = await P.read_upload(request, self.cfg.max_upload_bytes)
            return await self._off_loop(self._client_stage, self._recording_from_abf, data,
                                        name, q)
        body = await P.read_body(request, self.cfg.max_json_bytes, "body")
        return await self._off_loop(self._client_stage, self._recording_from_json, body, q)

    # ---- twin: infer, simulate, answer ----------------------------------------------------

    def _estimate(self, rec, temperature_K: float | None):
        from ..twin.inference import estimate_twin

        with self.infer_lock:
            try:
                return estimate_twin(self.estimator, rec, temperature_K=temperature_K)
            except ValueError as e:
                raise ApiError(f"cannot infer a twin from this recording: {e}", 422,
                               "current") from None

    def _assess(self, tw, rec) -> None:
        from ..twin.recording_quality import assess_recording

        assess_recording(tw, rec, self.estimator.protocol, trained=self.artefact_prior)

    def _to_json(self, tw, figure: bool) -> dict[str, Any]:
        if not figure:
            return tw.to_json(figure=False)
        with self.figure_lock:
            return tw.to_json(figure=True)

    async def twin(self, request: Request) -> StrictJSONResponse:
        q = P.parse_query(P.TwinQuery, request.query_params)
        t0 = time.perf_counter()
        rec = await self.recording(request, q)
        parse_s = time.perf_counter() - t0
        tw, rec = await self._off_loop(self._estimate, rec, q.temperature_K)
        if q.simulate:
            failure = await self._simulate_batch((tw, rec))
            if failure is not None:
                raise failure
            if self.artefact_prior is not None:  # a model of recordings with artefacts
                await self._off_loop(self._assess, tw, rec, pool=self.sim_pool)
        tw.timings_s["parsing"] = parse_s
        return StrictJSONResponse(await self._off_loop(self._to_json, tw, q.figure))

    @serve.batch(max_batch_size=SIMULATION_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _simulate_batch(self, items: list[tuple[Any, Any]]) -> list[BaseException | None]:
        """Simulate the twins of concurrent requests together (filled in place); per item
        None or the exception that item alone raised."""
        return await self._off_loop(self._simulate_items, items, pool=self.sim_pool)

    def _simulate_items(self, items: list[tuple[Any, Any]]) -> list[BaseException | None]:
        from ..twin.inference import simulate_twins

        def simulate(batch):
            simulate_twins(self.estimator.protocol, [tw for tw, _ in batch],
                           [rec for _, rec in batch], ap_duration_ms=self.cfg.ap_duration_ms,
                           ap_samples=self.cfg.ap_samples)

        try:
            simulate(items)
            return [None] * len(items)
        except Exception as exc:
            if len(items) == 1:
                return [exc]
        out: list[BaseException | None] = []
        for it in items:                 # one at a time: a failure stays with its request
            try:
                simulate([it])
                out.append(None)
            except Exception as exc:
                out.append(exc)
        return out

    # ---- reconstruct and model -------------------------------------------------------------

    async def reconstruct(self, request: Request) -> StrictJSONResponse:
        from ..reconstruct.infer import reconstruct_from_bytes

        q = P.parse_query(P.ReconstructQuery, request.query_params)
        if self.reconstructor is None:
            raise ApiError("this service has no reconstruction model (set "
                           "args.reconstruct_model_dir in serve/config.yaml)", 404,
                           "reconstruct_model_dir")
        est = self.reconstructor
        name, data = await P.read_upload(request, self.cfg.max_upload_bytes)

        def run():
            if data[:4] in (b"ABF ", b"ABF2") or name.lower().endswith(".abf"):
                check_abf_work(abf_shape(data), max_sweeps=self.cfg.max_sweeps,
                               max_samples=self.cfg.max_samples, target_interval_ms=None,
                               max_resample_factor=self.cfg.max_resample_factor)
            with self.figure_lock if q.figure else contextlib.nullcontext():
                return reconstruct_from_bytes(est, data, name, sweep=q.sweep,
                                              max_beats=q.max_beats, include_windows=q.windows,
                                              figure=q.figure)

        return StrictJSONResponse(await self._off_loop(self._client_stage, run))

    def model_info(self) -> dict[str, Any]:
        m = self.estimator.metadata
        return {"protocol_hash": m["protocol_hash"], "protocol": m["protocol"],
                "parameter_names": m["parameter_names"], "test_metrics": m["test_metrics"],
                "config": m["config"], "data": {k: m["data"][k] for k in
                                                ("split_sizes", "sampling_range")}}

    # ---- screens -------------------------------------------------------------------------

    def _admit_screen(self, doc: Any) -> dict[str, Any]:
        job_id = self.jobs.new_id()
        sc = P.screen_config(doc, self.jobs.screen_dir(job_id), self.cfg)
        n_sims = sc.n_cells * len(sc.concentrations_nM)
        lock = self.jobs.admit(job_id, {"cost_cell_ms": P.screen_cost(sc),
                                        "n_simulations": n_sims,
                                        "drug": sc.resolve_drug().name})
        try:
            self.screen_pool.submit(run_job, self.jobs, job_id, lock, sc, self._run_screen)
        except RuntimeError:
            lock.release()
            raise
        return {"job_id": job_id, "status": "running"}

    @staticmethod
    def _run_screen(sc, on_progress) -> None:
        from ..drugs import run_screen

        run_screen(sc, progress=False, echo=None, on_progress=on_progress)

    async def start_screen(self, request: Request) -> StrictJSONResponse:
        P.require_media_type(request.headers.get("content-type"), P.JSON)
        body = await P.read_body(request, self.cfg.max_screen_body_bytes, "body")
        doc = P.parse_json(body)
        return StrictJSONResponse(await self._off_loop(self._admit_screen, doc))

    def cancel_screen(self, job_id: str) -> StrictJSONResponse:
        st = self.jobs.get(job_id)
        if st["status"] == "running":
            self.jobs.request_cancel(job_id)
            return StrictJSONResponse({"job_id": job_id, "status": "cancelling"},
                                      status_code=202)
        self.jobs.delete(job_id)
        return StrictJSONResponse({"job_id": job_id, "status": "deleted"})


def no_tokens_message(cfg: ServiceConfig) -> str:
    where = " or ".join(x for x in (f"${cfg.api_tokens_env}" if cfg.api_tokens_env else "",
                                    f"the file {cfg.api_tokens_file}" if cfg.api_tokens_file
                                    else "") if x) or "nowhere (set api_tokens_env or "\
        "api_tokens_file)"
    return (f"serve config: require_auth is on but no API token is configured (looked in "
            f"{where}). Set one, e.g. export {cfg.api_tokens_env or 'CARDIOTWIN_API_TOKENS'}="
            "$(python -c 'import secrets; print(secrets.token_urlsafe(32))'), or set "
            "require_auth: false for a service that answers loopback clients only")


@serve.deployment(name="TwinService", max_ongoing_requests=32, max_queued_requests=64)
@serve.ingress(api)
class TwinDeployment(TwinService):
    """The Serve deployment of :class:`TwinService` (HTTP routes)."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        api.state.guard = self.guard

    @api.api_route("/health", methods=["GET", "HEAD"])
    async def health(self):
        return {"status": "ok"}

    @api.get("/model")
    async def model(self):
        return StrictJSONResponse(self.model_info())

    @api.post("/twin")
    async def post_twin(self, request: Request):
        with self._slot():
            return await self.twin(request)

    @api.post("/reconstruct")
    async def post_reconstruct(self, request: Request):
        with self._slot():
            return await self.reconstruct(request)

    @api.post("/screens")
    async def post_screen(self, request: Request):
        return await self.start_screen(request)

    @api.get("/screens/{job_id}")
    async def get_screen(self, job_id: str):
        return StrictJSONResponse(public_state(self.jobs.get(job_id)))

    @api.get("/screens/{job_id}/results")
    async def get_screen_results(self, job_id: str):
        return StrictJSONResponse({"job_id": job_id, "summary": self.jobs.results(job_id)})

    @api.delete("/screens/{job_id}")
    async def delete_screen(self, job_id: str):
        return self.cancel_screen(job_id)


def app_builder(args: dict[str, Any]):
    """Application builder for ``serve run serve/config.yaml`` (``args``:
    :class:`.config.ServiceConfig` fields; ``model_dir`` required). The API tokens are read
    here, once, and only their digests reach the replicas; without any (and require_auth on)
    the service refuses to start."""
    quiet_tensorflow()
    if "model_dir" not in args:
        raise ValueError("serve config: args.model_dir (a model artifact directory) is required")
    cfg = ServiceConfig.create(**args)
    if cfg.require_auth and not cfg.api_token_sha256:
        digests = load_token_digests(cfg.api_tokens_env, cfg.api_tokens_file)
        if not digests:
            raise ValueError(no_tokens_message(cfg))
        args = {**args, "api_token_sha256": list(digests)}
    return TwinDeployment.bind(**args)  # type: ignore[attr-defined]
