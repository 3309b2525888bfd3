"""The model artifact: a directory with the Keras model and ``metadata.json``.

Layout::

    MODEL/model.keras                    the network (Keras 3 native format, any backend)
    MODEL/metadata.json                  see below
    MODEL/evaluation/metrics.json        test metrics (also in metadata.json)
    MODEL/evaluation/parameter_errors.csv   per-parameter MAE, RMSE, R^2, identifiable
    MODEL/evaluation/parameter_recovery.png predicted vs true, 52 panels

``metadata.json`` (format ``cardiotwin.model/1``): ``parameter_names`` (output order),
``registry_version``, ``protocol`` (canonical JSON) and ``protocol_hash``, ``data`` (store
paths, their manifest hashes and config hashes, statuses, split sizes), ``input``
(:class:`~cardiotwin.learn.dataset.InputTransform`), ``output``
(:class:`~cardiotwin.learn.dataset.OutputScaling`), ``config`` (the TrainConfig),
``training`` (epochs, best epoch, history, wall time, samples/s, backend, devices),
``test_metrics``, ``uncertainty`` (per-parameter test RMSE as a multiplier) and
``code_version`` (the cardiotwin version that wrote it).

Crash safety: the artifact is built complete in a temporary sibling directory and swapped in
(:func:`cardiotwin.storage.atomic.atomic_directory`); an overwrite keeps the old artifact until
the new one is in place, and every loader first calls
:func:`cardiotwin.storage.atomic.recover_directory`, so a crash at any point leaves a loadable
model (the old one or the new one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..protocols import ProtocolMismatchError
from ..storage.atomic import atomic_directory, recover_directory, write_json_atomic
from .dataset import InputTransform, OutputScaling

__all__ = ["ParameterEstimator", "ProtocolMismatchError", "check_protocol_hash",
           "load_estimator", "read_metadata", "save_artifact"]

FORMAT = "cardiotwin.model/1"
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"


def check_protocol_hash(found: str, expected: str, what: str) -> None:
    """Refuse ``what`` (a store, a recording) whose protocol hash is not the model's."""
    if found != expected:
        raise ProtocolMismatchError(
            f"{what}: protocol {found[:12]}… does not match the model's protocol "
            f"{expected[:12]}…; the model only reads traces of the protocol it was trained on")


@dataclass
class ParameterEstimator:
    """A trained network with its transforms: I_total traces -> 52 multipliers."""

    model: Any
    metadata: dict[str, Any]
    path: Path

    @property
    def names(self) -> list[str]:
        return list(self.metadata["parameter_names"])

    @property
    def protocol_hash(self) -> str:
        return self.metadata["protocol_hash"]

    @property
    def protocol(self):
        from ..protocols import Protocol

        return Protocol.from_json(self.metadata["protocol"])

    @property
    def transform(self) -> InputTransform:
        return InputTransform.from_json(self.metadata["input"])

    @property
    def scaling(self) -> OutputScaling:
        return OutputScaling.from_json(self.metadata["output"])

    @property
    def uncertainty(self) -> np.ndarray:
        """Per-parameter RMSE on the test split, as a multiplier (52,)."""
        return np.asarray(self.metadata["uncertainty"]["rmse_multiplier"], np.float64)

    def __post_init__(self):
        self._transform = self.transform
        self._scaling = self.scaling

    def predict_unit(self, x: np.ndarray) -> np.ndarray:
        """Network outputs on the [0, 1] scale for normalized inputs (n, n_inputs)."""
        import keras

        out = self.model(np.asarray(x, np.float32), training=False)
        return np.asarray(keras.ops.convert_to_numpy(out), np.float64)

    def predict(self, i_total: np.ndarray, protocol_hash: str, *,
                at: str = "protocol") -> np.ndarray:
        """Multipliers (n, 52) for I_total traces in pA/pF (n, n_samples) or (n_samples,),
        sampled at the protocol's interval (``at="protocol"``, as recorded) or at the store's
        (``at="stored"``). ``protocol_hash``: the traces' protocol; another protocol than the
        model's is refused (ProtocolMismatchError). Outputs are clipped to the training
        range (the sampling range of the store): the network does not extrapolate."""
        xin = self.network_input(i_total, protocol_hash, at=at)
        return self._scaling.from_unit(np.clip(self.predict_unit(xin), 0.0, 1.0))

    def network_input(self, i_total: np.ndarray, protocol_hash: str, *,
                      at: str = "protocol") -> np.ndarray:
        """The normalized network input (n, n_inputs) of I_total traces (see :meth:`predict`),
        after the protocol and finiteness checks."""
        check_protocol_hash(protocol_hash, self.protocol_hash, "trace")
        x = np.atleast_2d(np.asarray(i_total, np.float32))
        if not np.all(np.isfinite(x)):
            raise ValueError("I_total contains NaN or inf values")
        if at == "protocol":
            return self._transform.from_protocol_rate(x)
        if at == "stored":
            return self._transform.from_stored(x)
        raise ValueError(f"at must be 'protocol' or 'stored', found {at!r}")


def save_artifact(out_dir: str | Path, model, metadata: dict[str, Any],
                  extra_files: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write the artifact crash-safely (module docstring): model, ``extra_files`` (relative
    path -> callable(path) writing that file) and metadata.json (strict JSON, with
    ``code_version``) into a temporary sibling, then swapped in. An existing ``out_dir`` is
    refused unless ``overwrite``."""
    from ..runtime.versions import code_version

    out = Path(out_dir)
    recover_directory(out)
    if out.exists() and not overwrite:
        raise ValueError(f"{out}: exists; choose another --out or pass --overwrite")
    with atomic_directory(out) as tmp:
        model.save(tmp / MODEL_FILE)
        for rel, write in (extra_files or {}).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            write(tmp / rel)
        write_json_atomic(tmp / METADATA_FILE,
                          {"format": FORMAT, **metadata, "code_version": code_version()})
    return out


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The artifact's metadata.json (ValueError naming the problem); an interrupted overwrite
    is recovered first."""
    recover_directory(path)
    p = Path(path) / METADATA_FILE
    if not p.is_file():
        raise ValueError(f"{path}: not a model artifact (no {METADATA_FILE})")
    try:
        meta = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: invalid JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{p}: format {meta.get('format')!r}, expected {FORMAT!r}")
    from ..model.parameters import INFERRED_NAMES

    if meta.get("parameter_names") != list(INFERRED_NAMES):
        raise ValueError(f"{p}: parameter_names differ from this registry's 52 inferred "
                         "parameters (a model of another registry version)")
    return meta


def load_estimator(path: str | Path) -> ParameterEstimator:
    """Load a model artifact directory (recovering an interrupted overwrite first)."""
    import keras

    meta = read_metadata(path)
    mp = Path(path) / MODEL_FILE
    if not mp.is_file():
        raise ValueError(f"{path}: model artifact without {MODEL_FILE}")
    if meta.get("config", {}).get("architecture") == "flow":
        from .posterior import PosteriorEstimator, load_flow_model

        return PosteriorEstimator(load_flow_model(mp), meta, Path(path))
    model = keras.saving.load_model(mp, compile=False)
    return ParameterEstimator(model, meta, Path(path))
