"""The CiPA drug table: ion-channel block, free Cmax and clinical risk of the 28 CiPA drugs
(and flecainide).

``drugs/data/cipa_28_drugs.csv`` is a verbatim copy of the FDA CiPA repository's
``AP_simulation/data/newCiPA.csv`` (Li Z et al. 2019 Clin Pharmacol Ther 105:466-475; the
patch-clamp panel of Crumb WJ et al. 2016 J Pharmacol Toxicol Methods 81:251-262 and the CiPA
in silico working group), one row per drug: ``<channel>h`` (Hill coefficient) and
``<channel>IC50`` (nM) for CaL, hERG, Ito, IK1, IKs, Late_sodium and Peak_sodium; a pair of 0, 0
means no block was measured (no block). ``CiPA``: the torsade risk category (0 low,
1 intermediate, 2 high).

Free Cmax: the table's ``therapeutic`` column (nM) is the free Cmax of Li et al. 2019 (e.g.
sotalol 14690, dofetilide 2, ibutilide 100 nM). Its ``freedrug`` column is not in one unit: for
the 12 training drugs, risperidone and metoprolol it is in uM (sotalol 14.69, quinidine 3.237:
therapeutic / 1000, rounded), for the other 14 in nM (equal to therapeutic, or close:
droperidol 16 vs 6.33). So ``cmax_free_nM`` is ``therapeutic``; for flecainide, which has none,
``freedrug`` read as uM (0.753 uM = 753 nM, as its ``freedrugStrauss``, 0.7529, is).
``cmax_note`` says which, per drug. The built-in catalog's entries of these drugs are this
table (:func:`cipa_drugs`); :func:`read_cipa_table` reads a file of the same format (e.g. an
updated table) into drugs and their clinical data.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .catalog import Drug, make_drug

TABLE = "cipa_28_drugs.csv"
SOURCE = ("FDA CiPA drug table (github.com/FDA/CiPA AP_simulation/data/newCiPA.csv; Li Z et al. "
          "2019 Clin Pharmacol Ther 105:466-475), compiling the manual patch-clamp panel of "
          "Crumb WJ et al. 2016 J Pharmacol Toxicol Methods 81:251-262")
#: table column prefix -> model current
CHANNELS = {"CaL": "ICaL", "hERG": "IKr", "Ito": "Ito", "IK1": "IK1", "IKs": "IKs",
            "Late_sodium": "INaL", "Peak_sodium": "INa"}
CATEGORIES = ("low", "intermediate", "high")
#: the 12 CiPA training drugs (Colatsky T et al. 2016 J Pharmacol Toxicol Methods 81:15-20);
#: the other 16 of the 28 are the validation set; flecainide is in neither
TRAINING = ("dofetilide", "bepridil", "sotalol", "quinidine", "cisapride", "terfenadine",
            "ondansetron", "chlorpromazine", "verapamil", "ranolazine", "mexiletine",
            "diltiazem")
NOT_IN_28 = ("flecainide",)


@dataclass(frozen=True)
class CipaDrug:
    """One row of the CiPA table: the drug (its blocks), free Cmax (nM), risk category (0 low,
    1 intermediate, 2 high) and its CiPA set (training, validation, or extra)."""

    drug: Drug
    cmax_free_nM: float
    category: int
    set: str
    cmax_note: str = ""

    @property
    def name(self) -> str:
        return self.drug.name

    @property
    def category_name(self) -> str:
        return CATEGORIES[self.category]

    def block(self, current: str) -> tuple[float, float]:
        """(IC50 nM, Hill) of ``current``; (0, 0) when the drug does not block it."""
        for b in self.drug.blocks:
            if b.current == current:
                return b.ic50_nM, b.hill
        return 0.0, 0.0


def _number(row: dict[str, str], col: str, origin: str, line: int) -> float:
    try:
        x = float(row[col])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{origin}, line {line}: column {col!r} must be a number, found "
                         f"{row.get(col)!r}") from None
    if not x >= 0 or x == float("inf"):
        raise ValueError(f"{origin}, line {line}: column {col!r} must be finite and >= 0, "
                         f"found {row[col]!r}")
    return x


def _cmax(row: dict[str, str], origin: str, line: int, name: str) -> tuple[float, str]:
    """(free Cmax in nM, where it came from): ``therapeutic`` (nM) when given, else
    ``freedrug`` read as uM (module docstring)."""
    free = _number(row, "freedrug", origin, line)
    ther = _number(row, "therapeutic", origin, line) if row.get("therapeutic") else 0.0
    if ther > 0:
        unit = ("uM" if abs(math.log10(max(free, 1e-12) * 1000.0 / ther)) < 0.5 else
                "nM" if abs(math.log10(max(free, 1e-12) / ther)) < 0.5 else "?")
        return ther, f"therapeutic column (nM); freedrug {free:g} ({unit})"
    if free <= 0:
        raise ValueError(f"{origin}, line {line} ({name}): no free Cmax: therapeutic and "
                         f"freedrug are both 0")
    return free * 1000.0, f"freedrug column read as uM ({free:g} uM; no therapeutic value)"


def _parse(text: str, origin: str, source: str) -> dict[str, CipaDrug]:
    reader = csv.DictReader(io.StringIO(text))
    cols = reader.fieldnames or []
    need = ["drug", "freedrug", "CiPA"] + [f"{c}{s}" for c in CHANNELS for s in ("h", "IC50")]
    missing = [c for c in need if c not in cols]
    if missing:
        raise ValueError(f"{origin}: missing column(s) {missing} of the CiPA table format "
                         f"(drug, <channel>h, <channel>IC50, freedrug, CiPA); found {cols}")
    out: dict[str, CipaDrug] = {}
    for line, row in enumerate(reader, start=2):
        name = (row["drug"] or "").strip()
        if not name:
            raise ValueError(f"{origin}, line {line}: empty drug name")
        blocks = []
        for ch, current in CHANNELS.items():
            h = _number(row, f"{ch}h", origin, line)
            ic50 = _number(row, f"{ch}IC50", origin, line)
            if h == 0 and ic50 == 0:
                continue                        # 0, 0: no block
            if h == 0 or ic50 == 0:
                raise ValueError(f"{origin}, line {line} ({name}): {ch} has IC50 {ic50:g} and "
                                 f"Hill {h:g}; expected both > 0, or 0, 0 for no block")
            blocks.append({"current": current, "ic50_nM": ic50, "hill": h, "source": source})
        cat = _number(row, "CiPA", origin, line)
        if cat not in (0.0, 1.0, 2.0):
            raise ValueError(f"{origin}, line {line} ({name}): CiPA must be 0, 1 or 2, found "
                             f"{row['CiPA']!r}")
        cmax, note = _cmax(row, origin, line, name)
        drug = make_drug(name, blocks)
        if drug.key in out:
            raise ValueError(f"{origin}: drug {name!r} listed twice")
        kind = ("training" if name.lower() in TRAINING else
                "extra" if name.lower() in NOT_IN_28 else "validation")
        out[drug.key] = CipaDrug(drug, cmax, int(cat), kind, note)
    if not out:
        raise ValueError(f"{origin}: no drug rows")
    return out


def read_cipa_table(path: str | Path, source: str | None = None) -> dict[str, CipaDrug]:
    """A table in the CiPA format (see the module docstring): {drug key: CipaDrug}.
    ``source`` is recorded on every block (default: the file's path)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"CiPA table not found: {p}")
    return _parse(p.read_text(encoding="utf-8"), str(p), source or f"CiPA-format table {p}")


@functools.lru_cache(maxsize=1)
def cipa_drugs() -> dict[str, CipaDrug]:
    """The built-in CiPA table {drug key: CipaDrug} (the 28 drugs and flecainide)."""
    text = resources.files("cardiotwin.drugs").joinpath("data", TABLE).read_text(
        encoding="utf-8")
    return _parse(text, f"built-in {TABLE}", SOURCE)


def cipa28() -> list[CipaDrug]:
    """The 28 CiPA drugs (training then validation, table order)."""
    rows = [d for d in cipa_drugs().values() if d.set != "extra"]
    return sorted(rows, key=lambda d: d.set != "training")
