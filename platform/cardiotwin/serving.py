"""Ray Serve application: the live twin and on-demand drug screens.

Routes (JSON responses; errors are HTTP 4xx with ``{"error": ..., "field": ...}``):

- ``GET  /health``: ``{"status": "ok"}``.
- ``GET  /model``: the model's protocol (JSON and hash), parameter names, test metrics.
- ``POST /twin``: an ABF file (multipart field ``file``) or a JSON trace
  ``{"current": [...], "current_units": "pA/pF" | "pA" | "nA", "capacitance_pF": ...,
  "command_mV": [...] (optional), "sample_interval_ms": 0.1}``; query: ``simulate`` (default
  true: the twin's voltage-clamp fit and AP), ``figure`` (base64 PNG), ``temperature_K``,
  ``capacitance_pF``, ``sweep``. Returns the twin (see ``Twin.to_json``; a posterior model
  adds per-parameter ``posterior`` and ``identifiable``, ``ap_prediction`` over ``ap_samples``
  posterior samples and ``out_of_distribution``).
- ``POST /reconstruct``: an extracellular recording (multipart ``file``, .csv or .abf) ->
  intracellular AP windows with 90% bands and APD series; query ``figure``, ``windows``,
  ``max_beats``, ``sweep``. Needs ``reconstruct_model_dir`` (404 otherwise).
- ``POST /screens``: a drug screen (``ScreenConfig`` fields as JSON; ``twin_multipliers`` may
  come from a twin) started in the background; returns ``{"job_id": ...}``.
- ``GET  /screens/{job_id}``: status and progress; ``GET /screens/{job_id}/results``: the
  summary once done.

The model is loaded once per replica. Concurrent twin requests are simulated together
(``serve.batch``, up to 16, waiting at most 20 ms): the simulator runs 16 cells in SIMD lanes for
about the cost of one, and of a full twin (~0.3 s) the network takes ~10 ms and the two
simulations the rest. Replicas, CPUs and the upload limit are set in serve/config.yaml.
"""


import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from .runtime.quiet import quiet_tensorflow
from .twin.inference import DEFAULT_AP_SAMPLES

# before the model loads TensorFlow: in the process that builds the app and in every replica
# (a replica imports this module to rebuild the deployment)
quiet_tensorflow()

DEFAULT_MAX_UPLOAD_MB = 50.0
SIMULATION_BATCH = 16  # the simulator's SIMD lane chunk: 16 cells cost about one

api = FastAPI(title="cardiotwin", description="Digital twins of iPSC-CMs from one "
                                              "voltage-clamp recording")


class RequestError(ValueError):
    """A bad request: ``status`` (HTTP code) and ``field``."""

    def __init__(self, message: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


def error_response(exc: Exception) -> JSONResponse:
    status = getattr(exc, "status", 400)
    return JSONResponse({"error": str(exc), "field": getattr(exc, "field", None)},
                        status_code=status)


def _flag(v: str | None, default: bool) -> bool:
    if v is None:
        return default
    if v.lower() in ("1", "true", "yes"):
        return True
    if v.lower() in ("0", "false", "no"):
        return False
    raise RequestError(f"expected true or false, found {v!r}", field="query")


def _float(v: str | None, name: str) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        raise RequestError(f"{name}: expected a number, found {v!r}", field=name) from None


class TwinService:
    """One replica: the network, the twin and the background screens."""

    def __init__(self, model_dir: str, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
                 ap_duration_ms: float = 10_000.0, screen_dir: str | None = None,
                 screen_max_cells: int = 5000, reconstruct_model_dir: str | None = None,
                 ap_samples: int = DEFAULT_AP_SAMPLES):
        """``ap_samples``: posterior samples simulated per twin for its AP prediction (0:
        none; posterior models only)."""
        from .learn import load_estimator

        self.estimator = load_estimator(model_dir)
        self.reconstructor = None
        if reconstruct_model_dir:
            from .reconstruct.infer import load_reconstructor

            self.reconstructor = load_reconstructor(reconstruct_model_dir)
        self.max_upload = int(max_upload_mb * 1e6)
        self.ap_duration_ms = float(ap_duration_ms)
        self.ap_samples = int(ap_samples)
        self.screen_dir = Path(screen_dir or tempfile.mkdtemp(prefix="cardiotwin-screens-"))
        self.screen_max_cells = int(screen_max_cells)
        self.jobs: dict[str, dict[str, Any]] = {}
        self._warm()

    def _warm(self) -> None:
        """Compile the kernels and trace the network once, before the first request."""
        import numpy as np

        from .simulate import simulate_current_clamp

        self.estimator.predict(np.zeros(self.estimator.protocol.n_samples),
                               self.estimator.protocol_hash)
        simulate_current_clamp(1.0)

    # ---- twin ----------------------------------------------------------------------------

    def _check_declared_size(self, request: Request) -> None:
        """413 before reading a body whose declared length exceeds the upload limit."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_upload:
            raise RequestError(f"upload of {int(declared)} bytes exceeds the limit of "
                               f"{self.max_upload} bytes", status=413, field="file")

    async def _upload(self, request: Request) -> tuple[str, bytes]:
        """(file name, bytes) of the multipart field ``file``, within the upload limit."""
        self._check_declared_size(request)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise RequestError("send multipart/form-data with the recording as 'file'",
                               status=415, field="content-type")
        form = await request.form()
        up = form.get("file")
        if up is None or isinstance(up, str):
            raise RequestError("multipart upload without a 'file' field", field="file")
        data = await up.read()
        if len(data) > self.max_upload:
            raise RequestError(f"upload of {len(data)} bytes exceeds the limit of "
                               f"{self.max_upload} bytes", status=413, field="file")
        return up.filename or "upload.abf", data

    async def _recording(self, request: Request):
        from .twin import read_abf, recording_from_arrays

        q = request.query_params
        cap = _float(q.get("capacitance_pF"), "capacitance_pF")
        ctype = request.headers.get("content-type", "")
        protocol = self.estimator.protocol
        if ctype.startswith("multipart/form-data"):
            name, data = await self._upload(request)
            sweep = q.get("sweep", "0")
            sweep = sweep if sweep == "mean" else int(_float(sweep, "sweep"))
            return read_abf(data, capacitance_pF=cap, protocol=protocol, sweep=sweep, name=name)
        if ctype.startswith("application/json"):
            self._check_declared_size(request)
            body = await request.body()
            if len(body) > self.max_upload:
                raise RequestError(f"body of {len(body)} bytes exceeds the limit of "
                                   f"{self.max_upload} bytes", status=413, field="body")
            try:
                d = await request.json()
            except Exception:  # any JSON error is the client's
                raise RequestError("body is not valid JSON", field="body") from None
            if not isinstance(d, dict) or "current" not in d:
                raise RequestError("JSON trace needs a 'current' array", field="current")
            return recording_from_arrays(
                d["current"], current_units=d.get("current_units", "pA/pF"),
                command_mV=d.get("command_mV"),
                sample_interval_ms=d.get("sample_interval_ms", protocol.sample_interval_ms),
                capacitance_pF=d.get("capacitance_pF", cap), protocol=protocol,
                source="<json>")
        raise RequestError(f"content type {ctype or 'none'!r}: send multipart/form-data with "
                           "an ABF 'file', or application/json", status=415,
                           field="content-type")

    async def twin(self, request: Request) -> dict[str, Any]:
        from .twin.inference import estimate_twin

        t0 = time.perf_counter()
        rec = await self._recording(request)
        parse_s = time.perf_counter() - t0
        q = request.query_params
        tw, rec = estimate_twin(self.estimator, rec,
                                temperature_K=_float(q.get("temperature_K"), "temperature_K"))
        if _flag(q.get("simulate"), True):
            await self._simulate_batch((tw, rec))
        tw.timings_s["parsing"] = parse_s
        return tw.to_json(figure=_flag(q.get("figure"), False))

    @serve.batch(max_batch_size=SIMULATION_BATCH, batch_wait_timeout_s=0.02)
    async def _simulate_batch(self, items: list[tuple[Any, Any]]) -> list[None]:
        """Simulate the twins of concurrent requests together (filled in place), in a thread
        so that the next requests are parsed meanwhile."""
        import asyncio

        from .twin.inference import simulate_twins

        await asyncio.to_thread(simulate_twins, self.estimator.protocol,
                                [tw for tw, _ in items], [rec for _, rec in items],
                                ap_duration_ms=self.ap_duration_ms,
                                ap_samples=self.ap_samples)
        return [None] * len(items)

    async def reconstruct(self, request: Request) -> dict[str, Any]:
        """An extracellular recording (multipart ``file``, .csv or .abf) -> intracellular AP
        windows with 90% bands and APD series (``cardiotwin.reconstruct``)."""
        from .reconstruct.infer import reconstruct_from_bytes

        if self.reconstructor is None:
            raise RequestError("this service has no reconstruction model (set "
                               "args.reconstruct_model_dir in serve/config.yaml)", status=404,
                               field="reconstruct_model_dir")
        name, data = await self._upload(request)
        q = request.query_params
        beats = q.get("max_beats")
        return reconstruct_from_bytes(
            self.reconstructor, data, name, sweep=int(_float(q.get("sweep", "0"), "sweep")),
            max_beats=None if beats is None else int(_float(beats, "max_beats")),
            include_windows=_flag(q.get("windows"), True), figure=_flag(q.get("figure"), False))

    def model_info(self) -> dict[str, Any]:
        m = self.estimator.metadata
        return {"protocol_hash": m["protocol_hash"], "protocol": m["protocol"],
                "parameter_names": m["parameter_names"], "test_metrics": m["test_metrics"],
                "config": m["config"], "data": {k: m["data"][k] for k in
                                                ("split_sizes", "sampling_range")}}

    # ---- screens -------------------------------------------------------------------------

    def start_screen(self, body: dict[str, Any]) -> dict[str, Any]:
        from .drugs import ScreenConfig

        if not isinstance(body, dict):
            raise RequestError("expected a JSON object of screen settings", field="body")
        job = uuid.uuid4().hex[:12]
        body = {**body, "out_dir": str(self.screen_dir / job), "figures": body.get("figures",
                                                                                   True)}
        cfg = ScreenConfig.create(**body)
        if cfg.n_cells > self.screen_max_cells:
            raise RequestError(f"n_cells {cfg.n_cells} exceeds this service's limit of "
                               f"{self.screen_max_cells}; submit a Ray job instead",
                               field="n_cells")
        self.jobs[job] = {"status": "running", "done": 0, "total": None, "error": None,
                          "started": time.time()}
        threading.Thread(target=self._run_screen, args=(job, cfg), daemon=True).start()
        return {"job_id": job, "status": "running"}

    def _run_screen(self, job: str, cfg) -> None:
        from .drugs import run_screen

        state = self.jobs[job]

        def on_progress(done, total):
            state["done"], state["total"] = int(done), int(total)

        try:
            res = run_screen(cfg, progress=False, echo=None, on_progress=on_progress)
            state["summary"] = res.summary
            state["status"] = "done"
        except Exception as exc:  # reported through the status endpoint
            state["status"], state["error"] = "failed", f"{type(exc).__name__}: {exc}"
        state["finished"] = time.time()

    def screen_status(self, job: str) -> dict[str, Any]:
        if job not in self.jobs:
            raise RequestError(f"unknown job id {job!r}", status=404, field="job_id")
        s = self.jobs[job]
        return {"job_id": job, **{k: v for k, v in s.items() if k != "summary"}}

    def screen_results(self, job: str) -> dict[str, Any]:
        st = self.screen_status(job)
        if st["status"] != "done":
            raise RequestError(f"job {job} is {st['status']}; results once done",
                               status=409, field="job_id")
        return {"job_id": job, "summary": self.jobs[job]["summary"]}


@serve.deployment(name="TwinService")
@serve.ingress(api)
class TwinDeployment(TwinService):
    """The Serve deployment of :class:`TwinService` (HTTP routes)."""

    @api.get("/health")
    def health(self):
        return {"status": "ok"}

    @api.get("/model")
    def model(self):
        return self.model_info()

    @api.post("/twin")
    async def post_twin(self, request: Request):
        try:
            return await self.twin(request)
        except ValueError as exc:
            return error_response(exc)

    @api.post("/reconstruct")
    async def post_reconstruct(self, request: Request):
        try:
            return await self.reconstruct(request)
        except ValueError as exc:
            return error_response(exc)

    @api.post("/screens")
    async def post_screen(self, request: Request):
        try:
            try:
                body = await request.json()
            except Exception:
                raise RequestError("body is not valid JSON", field="body") from None
            return self.start_screen(body)
        except ValueError as exc:
            return error_response(exc)

    @api.get("/screens/{job_id}")
    def get_screen(self, job_id: str):
        try:
            return self.screen_status(job_id)
        except ValueError as exc:
            return error_response(exc)

    @api.get("/screens/{job_id}/results")
    def get_screen_results(self, job_id: str):
        try:
            return self.screen_results(job_id)
        except ValueError as exc:
            return error_response(exc)


def app_builder(args: dict[str, Any]):
    """Application builder for ``serve run serve/config.yaml`` (``args``: TwinService
    keyword arguments; ``model_dir`` required)."""
    quiet_tensorflow()
    if "model_dir" not in args:
        raise ValueError("serve config: args.model_dir (a model artifact directory) is required")
    return TwinDeployment.bind(**args)
