"""Use: an eAP recording (CSV or ABF) -> iAP windows with 90 % bands and APDs over time.

``load_reconstructor(model_dir)`` loads an artifact (and traces its compiled predictor,
:mod:`.fast`); ``reconstruct_recording(est, t_ms, eap)`` resamples the recording to the
model's sample interval (anti-aliased), detects the spikes, cuts and normalizes the windows,
predicts the quantiles in one batched call, applies the artifact's conformal offsets
(:mod:`.conformal`; bands as stored when it has none) and measures APD10 ... APD100 on the
median (and on the band's edges). ``reconstruct_from_bytes`` does the same for an upload and
returns a JSON-able dict (for the Serve route); ``write_outputs`` writes CSV/JSON/PNG.

CSV recordings: a header with a time column (``t_ms``, ``time_ms`` or ``time_s``) and one eAP
column (``eap_uV``, ``eap_mV``, ``eap_V`` or ``eap``; units do not matter, windows are
normalized). ABF files (e.g. MEA software exports): the first ADC channel (or ``channel``)
of sweep ``sweep``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..storage.atomic import (
    atomic_path,
    jsonable,
    recover_directory,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from ..storage.outdir import read_json_file
from .conformal import Conformal
from .physics import PhysicsConfig
from .train import ARTIFACT_FORMAT, METADATA_FILE, MODEL_FILE
from .windows import APD_LEVELS, WindowConfig, apd, cut, detect_spikes, normalize_eap, window_starts

EAP_COLUMNS = {"eap_uV": "uV", "eap_mV": "mV", "eap_V": "V", "eap": "a.u."}


class EAPRecordingError(ValueError):
    """A recording that cannot be reconstructed; the message names the problem."""


@dataclass
class Reconstructor:
    """A trained reconstruction network with its window and quantile settings."""

    model: Any
    metadata: dict[str, Any]
    path: Path
    conformal: Conformal | None = None
    _predict: Any = field(default=None, repr=False)

    @property
    def window(self) -> WindowConfig:
        return WindowConfig(**self.metadata["window"])

    @property
    def quantiles(self) -> tuple[float, ...]:
        return tuple(self.metadata["quantiles"])

    @property
    def calibrated(self) -> bool:
        return self.conformal is not None

    def network(self, x: np.ndarray) -> np.ndarray:
        """The network's raw output (n, length, n_q + 3) of normalized windows (n, length),
        by the compiled predictor (traced on first use)."""
        if self._predict is None:
            from .fast import compiled_predictor

            self._predict = compiled_predictor(self.model, self.window.length)
        return self._predict(np.asarray(x, dtype=np.float32)[..., None])

    def predict_windows(self, x: np.ndarray, *, calibrated: bool = True
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Quantiles (n, length, n_q), conformally calibrated when the artifact has offsets
        and ``calibrated``, and (a, k, x) (n, 3) of normalized windows (n, length)."""
        out = self.network(x)
        nq = len(self.quantiles)
        phys = PhysicsConfig(**self.metadata["physics"])
        u = out[:, 0, nq:nq + 3]
        params = np.stack([phys.from_unit(u[:, i], w) for i, w in enumerate("akx")], axis=1)
        q = out[..., :nq]
        if calibrated and self.conformal is not None:
            q = self.conformal.apply(q, self.window)
        return q, params


def load_reconstructor(model_dir: str | os.PathLike, *, warm: bool = True) -> Reconstructor:
    """Load a reconstruction model artifact (ValueError when it is not one, or when its
    conformal offsets are malformed), recovering an interrupted overwrite first
    (:func:`cardiotwin.storage.atomic.recover_directory`); ``warm`` traces the compiled
    predictor now, so the first request does not pay for it."""
    import keras

    p = Path(model_dir)
    recover_directory(p)
    meta_path = p / METADATA_FILE
    if not meta_path.is_file() or not (p / MODEL_FILE).is_file():
        raise ValueError(f"{p} is not a reconstruction model: expected {MODEL_FILE} and "
                         f"{METADATA_FILE}")
    meta = read_json_file(meta_path, "reconstruction model metadata")
    if meta.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected "
                         f"{ARTIFACT_FORMAT!r} (a reconstruction model)")
    conformal = None
    if meta.get("conformal") is not None:
        conformal = Conformal.from_json(meta["conformal"], f"{meta_path}: conformal")
        if conformal.quantiles != tuple(float(q) for q in meta.get("quantiles", ())):
            raise ValueError(f"{meta_path}: conformal.quantiles {list(conformal.quantiles)} "
                             f"differ from the model's quantiles {meta.get('quantiles')}")
    model = keras.saving.load_model(p / MODEL_FILE, compile=False)
    est = Reconstructor(model, meta, p, conformal)
    if warm:
        est.network(np.zeros((1, est.window.length), np.float32))  # trace once, here
    return est


# ---- reading recordings ------------------------------------------------------------------------

def _fail(source: str, msg: str) -> EAPRecordingError:
    return EAPRecordingError(f"{source}: {msg}")


def read_eap_csv(data: str | os.PathLike | bytes, name: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray, str]:
    """(t_ms, eap, column) from a CSV file path or its bytes, read by
    :func:`cardiotwin.trace_csv.read_csv_trace` (sampling is checked by
    :func:`check_recording`); EAPRecordingError naming the file, field and line."""
    from ..trace_csv import TraceCsvError, Want, read_csv_trace

    try:
        tr = read_csv_trace(data, {"eap": Want("an eAP column", EAP_COLUMNS, finite=False)},
                            name=name, uniform=False)
    except TraceCsvError as e:
        raise EAPRecordingError(str(e)) from None
    col = tr.columns["eap"]
    return tr.t_ms, col.values, col.name


def read_eap_abf(data: str | os.PathLike | bytes, name: str | None = None, *, sweep: int = 0,
                 channel: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(t_ms, eap, channel description) from an ABF file path or its bytes."""
    from ..twin.abf import AbfSource, open_abf, sweep_y

    with AbfSource(data, name) as s:
        abf = open_abf(s)
        ch = 0 if channel is None else int(channel)
        if not 0 <= ch < abf.channelCount:
            raise _fail(s.name, f"channel {ch} does not exist (the file has "
                                f"{abf.channelCount})")
        if not 0 <= int(sweep) < abf.sweepCount:
            raise _fail(s.name, f"sweep {sweep} does not exist (the file has "
                                f"{abf.sweepCount})")
        y = np.asarray(sweep_y(abf, int(sweep), ch, s.name), dtype=np.float64)
        dt = 1000.0 / abf.dataRate
        desc = f"ABF channel {ch} ({abf.adcNames[ch]}, {abf.adcUnits[ch]}), sweep {sweep}"
    return np.arange(len(y)) * dt, y, desc


def check_recording(t_ms: np.ndarray, eap: np.ndarray, window: WindowConfig, source: str
                    ) -> tuple[np.ndarray, float]:
    """Validate a recording; returns (eap resampled to the window's interval, source dt)."""
    from ..twin.recording import resample_signal

    t = np.asarray(t_ms, dtype=np.float64)
    e = np.asarray(eap, dtype=np.float64)
    if e.ndim != 1 or e.size == 0:
        raise _fail(source, "the recording is empty (no samples)")
    if t.shape != e.shape:
        raise _fail(source, f"time ({t.shape}) and eAP ({e.shape}) lengths differ")
    bad = ~np.isfinite(e) | ~np.isfinite(t)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _fail(source, f"{int(bad.sum())} non-finite (NaN/inf) values, the first at "
                            f"sample {i}; remove or interpolate them")
    if e.size < 3:
        raise _fail(source, f"too short: {e.size} samples")
    d = np.diff(t)
    dt = float(np.median(d))
    if not dt > 0 or np.max(np.abs(d - dt)) > 1e-3 * dt:
        raise _fail(source, "time column is not uniformly increasing; expected a uniformly "
                            "sampled recording")
    need = window.duration_ms
    if e.size * dt < need:
        raise _fail(source, f"too short: {e.size * dt:.1f} ms; at least one window of "
                            f"{need:g} ms is needed")
    if abs(dt - window.sample_interval_ms) > 1e-9 * dt:
        e = resample_signal(e, dt, window.sample_interval_ms, source=source)
    return e, dt


@dataclass
class Reconstruction:
    """Result: per beat the anchor time, the normalized eAP, the iAP quantiles and APDs."""

    source: str
    anchor_ms: np.ndarray              # (n_beats,) spike times in the recording
    eap_norm: np.ndarray               # (n_beats, length)
    iap: np.ndarray                    # (n_beats, length, n_q) normalized
    quantiles: tuple[float, ...]
    apd_ms: dict[str, np.ndarray]      # quantile name -> (n_beats, 10)
    ap_params: np.ndarray              # (n_beats, 3) a, k, x
    window: WindowConfig
    timing: dict[str, float] = field(default_factory=dict)
    calibrated: bool = False           # bands with the artifact's conformal offsets

    def apd_table(self) -> list[dict[str, Any]]:
        rows = []
        for b, t in enumerate(self.anchor_ms):
            r: dict[str, Any] = {"beat": b, "time_s": float(t) / 1000.0}
            for qname, arr in self.apd_ms.items():
                suffix = "" if qname == "q50" else f"_{qname}"
                for j, x in enumerate(APD_LEVELS):
                    v = arr[b, j]
                    r[f"APD{x}_ms{suffix}"] = float(v) if np.isfinite(v) else None
            rows.append(r)
        return rows

    def to_json(self, include_windows: bool = True) -> dict[str, Any]:
        w = self.window
        out: dict[str, Any] = {
            "source": self.source, "n_beats": int(len(self.anchor_ms)),
            "sample_interval_ms": w.sample_interval_ms, "window_length": w.length,
            "pre_ms": w.pre_ms, "quantiles": list(self.quantiles),
            "calibrated": self.calibrated,
            "apd": self.apd_table(), "ap_params": {
                n: [float(v) for v in self.ap_params[:, i]] for i, n in enumerate("akx")},
            "timing_s": self.timing}
        if include_windows:
            out["windows"] = [{"anchor_ms": float(self.anchor_ms[b]),
                               **{_qname(q): np.round(self.iap[b, :, i], 5).tolist()
                                  for i, q in enumerate(self.quantiles)}}
                              for b in range(len(self.anchor_ms))]
        return out


def _qname(q: float) -> str:
    return f"q{int(round(q * 100)):02d}"


def reconstruct_recording(est: Reconstructor, t_ms, eap, *, source: str = "<recording>",
                          max_beats: int | None = None) -> Reconstruction:
    """Reconstruct every complete beat window of a recording (see the module docstring)."""
    w = est.window
    t0 = time.perf_counter()
    e, _ = check_recording(t_ms, eap, w, source)
    spikes = detect_spikes(e, w)
    starts = window_starts(spikes, len(e), w)
    if starts.size == 0:
        raise _fail(source, f"no complete beat window: {len(spikes)} spikes detected, none "
                            f"with {w.pre_ms:g} ms before and {w.duration_ms - w.pre_ms:g} ms "
                            "after it inside the recording")
    if max_beats is not None:
        starts = starts[:max_beats]
    x = normalize_eap(cut(e, starts, w.length), w)
    t1 = time.perf_counter()
    iap, params = est.predict_windows(x)
    t2 = time.perf_counter()
    q = est.quantiles
    apds = {_qname(qq): apd(iap[..., i], w.sample_interval_ms, w) for i, qq in enumerate(q)}
    anchor = (starts + w.pre_samples) * w.sample_interval_ms + float(np.asarray(t_ms)[0])
    return Reconstruction(source, anchor, x, iap, q, apds, params, w,
                          {"prepare": t1 - t0, "predict": t2 - t1,
                           "per_window": (t2 - t1) / len(starts)}, est.calibrated)


def read_recording(data, filename: str, *, sweep: int = 0, channel: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray, str]:
    """(t_ms, eap, description) of a CSV or ABF recording (path or bytes) by file name."""
    low = filename.lower()
    if low.endswith(".abf"):
        return read_eap_abf(data, filename, sweep=sweep, channel=channel)
    if low.endswith((".csv", ".txt")):
        return read_eap_csv(data, filename)
    raise EAPRecordingError(f"{filename}: unknown file type; expected .csv or .abf")


def reconstruct_from_bytes(est: Reconstructor, data: bytes, filename: str, *, sweep: int = 0,
                           channel: int | None = None, max_beats: int | None = None,
                           include_windows: bool = True, figure: bool = False
                           ) -> dict[str, Any]:
    """The Serve entry point: an uploaded CSV/ABF recording -> JSON-able result (windows with
    bands, APD series, optional base64 PNG). Raises EAPRecordingError (a ValueError) on a bad
    recording."""
    if not data:
        raise EAPRecordingError(f"{filename}: the upload is empty (0 bytes)")
    t, e, desc = read_recording(bytes(data), filename, sweep=sweep, channel=channel)
    res = reconstruct_recording(est, t, e, source=f"{filename} ({desc})", max_beats=max_beats)
    out = res.to_json(include_windows=include_windows)
    if figure:
        import base64

        from .figures import plot_recording

        out["figure_png_base64"] = base64.b64encode(plot_recording(res)).decode("ascii")
    return out


def write_outputs(res: Reconstruction, out_dir: str | os.PathLike) -> dict[str, str]:
    """windows.csv (beat, t_ms, eap_norm, quantiles), apd.csv, reconstruction.json and
    reconstruction.png in ``out_dir``; returns the paths."""
    from .figures import plot_recording

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w = res.window
    n, L = res.eap_norm.shape
    t_rel = (np.arange(L) - w.pre_samples) * w.sample_interval_ms
    cols = ["beat", "t_ms", "eap_norm"] + [f"iap_{_qname(q)}" for q in res.quantiles]
    data = np.column_stack([np.repeat(np.arange(n), L), np.tile(t_rel, n),
                            res.eap_norm.reshape(-1)] +
                           [res.iap[..., i].reshape(-1) for i in range(len(res.quantiles))])
    paths = {"windows": out / "windows.csv", "apd": out / "apd.csv",
             "json": out / "reconstruction.json", "figure": out / "reconstruction.png"}
    with atomic_path(paths["windows"]) as tmp:
        np.savetxt(tmp, data, delimiter=",", header=",".join(cols), comments="",
                   fmt=["%d", "%.3f"] + ["%.5f"] * (len(cols) - 2))
    rows = res.apd_table()
    keys = list(rows[0])
    lines = [",".join(keys)] + [
        ",".join("" if r[k] is None else (f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]))
                 for k in keys) for r in rows]
    write_text_atomic(paths["apd"], "\n".join(lines) + "\n")
    write_json_atomic(paths["json"], jsonable(res.to_json(include_windows=False)))
    write_bytes_atomic(paths["figure"], plot_recording(res))
    return {k: str(v) for k, v in paths.items()}
