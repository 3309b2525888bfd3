"""The search's state on disk, rewritten atomically after every cycle so that a stopped search
resumes where it stopped.

Files in the search directory:

- ``state.json``: format, config hash and config, protocol-so-far (canonical JSON, or null),
  its cache key, best score, the history and the reason the last run stopped;
- ``history.json``: the config and, per cycle, every candidate's scores, the chosen candidate,
  whether it was appended and the cycle's timings;
- ``protocol.json`` (canonical JSON), ``protocol.csv``, ``protocol_hash.txt``: the optimized
  protocol so far;
- ``cells.npz`` (the population), ``cache/`` (:mod:`.cache`), ``tune/`` (Ray Tune's files).

Every file is written atomically (:mod:`cardiotwin.storage.atomic`); JSON is strict, with NaN
and inf written as null (:func:`write_json_finite`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..storage.atomic import atomic_path, jsonable, write_json_atomic, write_text_atomic
from ..storage.outdir import read_json_file
from .cache import INITIAL_KEY
from .config import FORMAT, SearchConfig

STATE = "state.json"
HISTORY = "history.json"


@dataclass
class SearchState:
    """Where a search stands. ``history``: one record per cycle run (the last one may be a
    cycle whose best candidate was not appended: no improvement)."""

    config_hash: str
    protocol_json: str | None = None
    best_score: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None

    @property
    def cache_key(self) -> str:
        from .cache import entry_key

        return entry_key(self.protocol_json)

    @property
    def n_steps(self) -> int:
        """Steps appended so far."""
        return sum(1 for c in self.history if c["appended"])

    def protocol(self):
        from ..protocols import Protocol

        return None if self.protocol_json is None else Protocol.from_json(self.protocol_json)

    @property
    def duration_ms(self) -> float:
        p = self.protocol()
        return 0.0 if p is None else p.duration_ms

    def to_json(self, config: SearchConfig) -> dict[str, Any]:
        p = self.protocol()
        return {"format": FORMAT, "config_hash": self.config_hash,
                "config": config.model_dump(mode="json"),
                "protocol": None if p is None else p.to_dict(),
                "protocol_hash": None if p is None else p.protocol_hash,
                "cache_key": self.cache_key, "best_score": self.best_score,
                "n_steps": self.n_steps, "duration_ms": self.duration_ms,
                "stop_reason": self.stop_reason, "history": self.history}


def load_state(search_dir: Path, config: SearchConfig) -> SearchState:
    """The saved state of ``search_dir``, or a fresh one. ValueError when the directory holds
    a search of another identity (naming the fields that differ)."""
    path = search_dir / STATE
    if not path.is_file():
        return SearchState(config.config_hash())
    try:
        d = read_json_file(path, "search state")
    except ValueError as e:
        raise ValueError(f"{e}; remove the directory to start afresh") from None
    if d.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown format {d.get('format')!r}; expected {FORMAT!r}")
    if d["config_hash"] != config.config_hash():
        try:
            old = SearchConfig(**d["config"]).identity()
        except ValueError:
            old = {}
        new = config.identity()
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ValueError(f"{search_dir} holds a search with another configuration (differs in "
                         f"{', '.join(diff) or 'identity'}); only the budget ("
                         "max_steps, max_duration_ms, stop rules) and resources may change on "
                         "resume; choose another directory")
    from ..protocols import Protocol

    proto = d.get("protocol")
    pj = None if proto is None else Protocol.from_dict(proto).to_json()
    state = SearchState(d["config_hash"], pj, d.get("best_score"), list(d.get("history", [])),
                        d.get("stop_reason"))
    if d.get("cache_key", INITIAL_KEY) != state.cache_key:
        raise ValueError(f"{path}: cache_key does not match the stored protocol")
    return state


def save_state(search_dir: Path, state: SearchState, config: SearchConfig) -> None:
    """Write state.json, history.json and the protocol files (each atomically)."""
    d = state.to_json(config)
    write_json_finite(search_dir / STATE, d)
    write_json_finite(search_dir / HISTORY, {
        "format": FORMAT + ":history", "config": d["config"], "config_hash": state.config_hash,
        "score": config.score, "protocol_hash": d["protocol_hash"], "n_steps": d["n_steps"],
        "duration_ms": d["duration_ms"], "best_score": state.best_score,
        "stop_reason": state.stop_reason, "cycles": state.history})
    p = state.protocol()
    if p is not None:
        write_text_atomic(search_dir / "protocol.json", p.to_json() + "\n")
        with atomic_path(search_dir / "protocol.csv") as tmp:
            p.to_csv(tmp)
        write_text_atomic(search_dir / "protocol_hash.txt", p.protocol_hash + "\n")


def write_json_finite(path: Path, obj: Any) -> None:
    """Strict JSON with NaN and inf as null (:func:`cardiotwin.storage.atomic.jsonable`),
    written atomically."""
    write_json_atomic(path, jsonable(obj))
