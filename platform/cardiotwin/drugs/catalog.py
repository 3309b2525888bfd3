"""Drug catalog: the currents each drug blocks, with IC50 (nM), Hill coefficient and source.

The built-in catalog is one entry per drug from two files, each value with its source:

- the CiPA table (``drugs/data/cipa_28_drugs.csv``, :mod:`cardiotwin.drugs.cipa_table`): the
  28 CiPA drugs and flecainide, every channel of the FDA CiPA table (a 0, 0 pair: no block).
  This replaces the earlier hand-entered rows of cisapride, verapamil, quinidine, dofetilide,
  nifedipine and flecainide (their hERG values came from Li Z et al. 2017's White Oak Hill
  fits, e.g. verapamil 295.6 nM vs the table's 498.6 nM): one source for all 28 drugs, the one
  the CiPA classifier is scored on;
- ``drugs/data/catalog.csv`` (one row per drug and current: ``drug,current,ic50_nM,hill,source,
  note``): the drugs outside the table (E-4031, quinine, lidocaine).

Currents are the Kernik model's (``model.parameters.CONDUCTANCE_SCALE`` keys: IKr, ICaL, INa,
IKs, IK1, Ito, If, ...; ``hERG`` is accepted for IKr) and ``INaL``, the late sodium current,
which only the model's late-sodium variant has (:mod:`cardiotwin.model.late_sodium`): on the
default model an INaL block is not applied (:meth:`Drug.model_blocks`).

User-defined drugs come from a dict (:func:`drug_from_dict`), or a file (:func:`read_drugs`):
a CSV with the catalog's columns (``source`` and ``note`` optional) or a JSON object
``{"drugs": [{"name": ..., "blocks": [{"current": "IKr", "ic50_nM": 7, "hill": 1}]}]}``
(a single drug object, a list of them, or ``{"name": {"IKr": {"ic50_nM": .., "hill": ..}}}``
also work). Names are matched ignoring case, spaces and punctuation ("E4031" = "E-4031").
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..model.parameters import CONDUCTANCE_SCALE
from ..settings import PositiveFloat
from ..validation import plain_errors
from . import hill as _hill

CURRENT_ALIASES = {"hERG": "IKr", "herg": "IKr"}
#: the late sodium current: in the model's late-sodium variant only (model.late_sodium)
LATE_SODIUM = "INaL"
NOT_IN_MODEL = {
    "IKur": "the Kernik model has no ultra-rapid delayed rectifier (IKur)",
    "IKATP": "the Kernik model has no ATP-sensitive K+ current (IKATP)",
}
CSV_COLUMNS = ("drug", "current", "ic50_nM", "hill", "source", "note")
USER_SOURCE = "user-defined"


def drug_key(name: str) -> str:
    """Lookup key of a drug name: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


class ChannelBlock(BaseModel):
    """Block of one current: g_drug / g = 1 / (1 + ([D] / ic50_nM)^hill)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    current: str = Field(description="blocked current (CONDUCTANCE_SCALE key, e.g. IKr)")
    ic50_nM: PositiveFloat = Field(description="half-block concentration (nM, > 0)")
    hill: PositiveFloat = Field(1.0, description="Hill coefficient (> 0)")
    source: str = Field(USER_SOURCE, description="literature source of the values")
    note: str = Field("", description="caveats")

    @field_validator("current", mode="before")
    @classmethod
    def _current(cls, v: Any) -> str:
        name = str(v).strip()
        name = CURRENT_ALIASES.get(name, name)
        if name in NOT_IN_MODEL:
            raise ValueError(f"current {name!r} cannot be blocked: {NOT_IN_MODEL[name]}")
        if name not in CONDUCTANCE_SCALE and name != LATE_SODIUM:
            raise ValueError(f"unknown current {str(v)!r}; expected one of "
                             f"{', '.join(CONDUCTANCE_SCALE)}, {LATE_SODIUM} (or hERG for IKr)")
        return name

    def fraction_remaining(self, conc_nM: float) -> float:
        """g_drug / g at ``conc_nM``."""
        return _hill.fraction_remaining(conc_nM, self.ic50_nM, self.hill)


class Drug(BaseModel):
    """A drug: its name and the currents it blocks (each current at most once; none: a drug
    that blocks nothing, e.g. a CiPA table row of 0, 0 pairs only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="drug name")
    blocks: tuple[ChannelBlock, ...] = Field(description="blocked currents")
    description: str = Field("", description="free text")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = str(v).strip()
        if not drug_key(v):
            raise ValueError(f"drug name must contain a letter or digit, found {v!r}")
        return v

    @field_validator("blocks")
    @classmethod
    def _blocks(cls, v: tuple[ChannelBlock, ...]) -> tuple[ChannelBlock, ...]:
        seen = [b.current for b in v]
        dup = sorted({c for c in seen if seen.count(c) > 1})
        if dup:
            raise ValueError(f"current(s) {', '.join(dup)} given more than once")
        return v

    @property
    def key(self) -> str:
        return drug_key(self.name)

    @property
    def currents(self) -> tuple[str, ...]:
        return tuple(b.current for b in self.blocks)

    def fraction_remaining(self, conc_nM: float) -> dict[str, float]:
        """{current: g_drug / g} at ``conc_nM`` (nM, >= 0)."""
        return _hill.remaining_by_current(self.blocks, conc_nM)

    def block_fractions(self, conc_nM: float) -> dict[str, float]:
        """{current: blocked fraction} at ``conc_nM``."""
        return _hill.block_by_current(self.blocks, conc_nM)

    def model_blocks(self) -> tuple[ChannelBlock, ...]:
        """The blocks of currents among the 87 model inputs (all but INaL)."""
        return tuple(b for b in self.blocks if b.current != LATE_SODIUM)

    def apply(self, inputs: np.ndarray, conc_nM: float) -> np.ndarray:
        """Model inputs (n_cells, 87) of ``inputs`` under ``conc_nM`` of this drug (INaL, not
        an input, is left to :meth:`late_sodium_remaining`)."""
        return _hill.drug_inputs(inputs, self.model_blocks(), conc_nM)

    def late_sodium_remaining(self, conc_nM: float) -> float:
        """g_NaL,drug / g_NaL at ``conc_nM`` (1 when the drug does not block INaL): the
        conductance scale of the late-sodium variant (model.late_sodium.LateSodium)."""
        return self.fraction_remaining(conc_nM).get(LATE_SODIUM, 1.0)

    def sources(self) -> dict[str, str]:
        """{current: source} of every value."""
        return {b.current: b.source for b in self.blocks}


def make_drug(name: str, blocks: Any, description: str = "") -> Drug:
    """A validated Drug (ValueError with plain messages)."""
    try:
        return Drug(name=name, blocks=tuple(blocks), description=description)
    except ValidationError as e:
        raise plain_errors(e, f"drug {name!r}") from None


def drug_from_dict(d: Mapping[str, Any]) -> Drug:
    """A Drug from ``{"name": ..., "blocks": [{"current", "ic50_nM", "hill", ...}]}`` or
    ``{"name": ..., "currents": {"IKr": {"ic50_nM": .., "hill": ..}}}``."""
    if isinstance(d, Drug):
        return d
    if not isinstance(d, Mapping):
        raise ValueError(f"a drug must be a name or a dict with 'name' and 'blocks', found "
                         f"{type(d).__name__}")
    d = dict(d)
    if "name" not in d:
        raise ValueError(f"drug definition without 'name' (keys: {sorted(d)})")
    if "currents" in d and "blocks" not in d:
        cur = d.pop("currents")
        if not isinstance(cur, Mapping):
            raise ValueError(f"drug {d['name']!r}: 'currents' must map a current to "
                             "{'ic50_nM': .., 'hill': ..}")
        d["blocks"] = [dict(v, current=k) if isinstance(v, Mapping) else v
                       for k, v in cur.items()]
    unknown = sorted(set(d) - {"name", "blocks", "description"})
    if unknown:
        raise ValueError(f"drug {d['name']!r}: unknown field(s) {unknown}; expected name, "
                         "blocks (or currents), description")
    blocks = d.get("blocks")
    if not isinstance(blocks, (list, tuple)) or not blocks:
        raise ValueError(f"drug {d['name']!r}: 'blocks' must be a non-empty list of "
                         "{'current', 'ic50_nM', 'hill'}")
    return make_drug(d["name"], blocks, d.get("description", ""))


# ---- files ----------------------------------------------------------------------------------

def _drugs_from_csv(text: str, origin: str) -> dict[str, Drug]:
    reader = csv.DictReader(io.StringIO(text))
    cols = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in ("drug", "current", "ic50_nM", "hill") if c not in cols]
    if missing:
        raise ValueError(f"{origin}: missing column(s) {missing}; expected "
                         f"{','.join(CSV_COLUMNS)} (source, note optional); found {cols}")
    rows: dict[str, list[dict[str, Any]]] = {}
    names: dict[str, str] = {}
    for line, raw in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        name = row["drug"]
        if not name:
            raise ValueError(f"{origin}, line {line}: empty drug name")
        key = drug_key(name)
        names.setdefault(key, name)
        block = {"current": row["current"], "ic50_nM": row["ic50_nM"], "hill": row["hill"],
                 "source": row.get("source") or USER_SOURCE, "note": row.get("note", "")}
        try:
            ChannelBlock(**block)
        except ValidationError as e:
            raise plain_errors(e, f"{origin}, line {line} ({name})") from None
        rows.setdefault(key, []).append(block)
    if not rows:
        raise ValueError(f"{origin}: no drug rows")
    return {k: make_drug(names[k], v) for k, v in rows.items()}


def _drugs_from_json(obj: Any, origin: str) -> dict[str, Drug]:
    if isinstance(obj, Mapping) and "drugs" in obj:
        obj = obj["drugs"]
    if isinstance(obj, Mapping) and "name" in obj:
        obj = [obj]
    if isinstance(obj, Mapping):   # {"name": {"IKr": {...}}}
        obj = [{"name": k, "currents": v} for k, v in obj.items()]
    if not isinstance(obj, list) or not obj:
        raise ValueError(f"{origin}: expected a drug object, a list of them or "
                         "{'drugs': [...]}")
    out: dict[str, Drug] = {}
    for i, d in enumerate(obj):
        try:
            drug = drug_from_dict(d)
        except ValueError as e:
            raise ValueError(f"{origin}, drug #{i + 1}: {e}") from None
        if drug.key in out:
            raise ValueError(f"{origin}: drug {drug.name!r} defined twice")
        out[drug.key] = drug
    return out


def read_drugs(path: str | Path) -> dict[str, Drug]:
    """User-defined drugs from a .csv or .json file: {key: Drug} (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"drug file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: invalid JSON: {e}") from None
        return _drugs_from_json(obj, str(p))
    if p.suffix.lower() == ".csv":
        return _drugs_from_csv(text, str(p))
    raise ValueError(f"{p}: drug files must be .csv or .json, found {p.suffix or 'no suffix'!r}")


@functools.lru_cache(maxsize=1)
def builtin_catalog() -> dict[str, Drug]:
    """The built-in catalog {key: Drug}: the CiPA table's drugs and drugs/data/catalog.csv's
    (module docstring); ValueError if a drug is in both."""
    from .cipa_table import cipa_drugs

    text = resources.files("cardiotwin.drugs").joinpath("data", "catalog.csv").read_text(
        encoding="utf-8")
    out = _drugs_from_csv(text, "built-in drug catalog")
    for key, row in cipa_drugs().items():
        if key in out:
            raise ValueError(f"built-in drug catalog: {row.name!r} is in both catalog.csv and "
                             "the CiPA table; expected one entry per drug")
        out[key] = row.drug
    return out


def catalog(extra: Mapping[str, Drug] | str | Path | None = None) -> dict[str, Drug]:
    """The built-in catalog updated with ``extra`` drugs (a {key: Drug} mapping or a drug
    file); a user drug of the same name replaces the built-in one."""
    out = dict(builtin_catalog())
    if extra is None:
        return out
    more = read_drugs(extra) if isinstance(extra, (str, Path)) else extra
    out.update({drug_key(k) if not isinstance(v, Drug) else v.key: v for k, v in more.items()})
    return out


def known_drugs(extra: Mapping[str, Drug] | str | Path | None = None) -> list[str]:
    """Display names of the known drugs, sorted."""
    return sorted((d.name for d in catalog(extra).values()), key=str.lower)


def get_drug(drug: str | Drug | Mapping[str, Any],
             extra: Mapping[str, Drug] | str | Path | None = None) -> Drug:
    """Resolve a drug: a Drug, a dict definition, or a name looked up in ``extra`` and then
    the built-in catalog. An unknown name raises ValueError listing the known drugs."""
    if isinstance(drug, Drug):
        return drug
    if isinstance(drug, Mapping):
        return drug_from_dict(drug)
    if not isinstance(drug, str):
        raise ValueError(f"drug must be a name or a definition, found {type(drug).__name__}")
    cat = catalog(extra)
    found = cat.get(drug_key(drug))
    if found is None:
        raise ValueError(f"unknown drug {drug!r}; known drugs: {', '.join(known_drugs(extra))}."
                         " Define others in a drug file (CSV drug,current,ic50_nM,hill[,source,"
                         "note] or JSON) or as a dict {'name', 'blocks'}")
    return found
