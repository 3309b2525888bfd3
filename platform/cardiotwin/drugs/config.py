"""Configuration of a drug screen (:func:`cardiotwin.drugs.screen.run_screen`) and its
command-line options.

Units: ms, mV, K, nM; ``spread`` a fraction (0.2 = +-20%). ``ScreenConfig`` validates on
construction (pydantic; ``ScreenConfig.create`` gives one plain ValueError line per problem).
The drug is a catalog name (matched ignoring case and punctuation), a definition dict, or a name
defined in ``drug_file``; it is resolved once (:meth:`ScreenConfig.resolve_drug`) and the
screen's identity holds the resolved IC50s, not the file path.

The population: cell i = twin x multipliers_i, multipliers_i ~ U(1 - spread, 1 + spread) on the
52 inferred parameters (cell i from (seed, i), as ``cardiotwin.population``). The twin is the
model baseline, or ``twin_multipliers``: 52 values in ``model.INFERRED_NAMES`` order or
{parameter name: multiplier} over any of the 87 inputs.

Each (cell, concentration) is simulated from the model's initial state: ``prepace_ms``
free-running (or paced at ``pacing_period_ms``) at that concentration towards steady state, not
recorded, then ``record_ms`` recorded every ``record_interval_ms``. Defaults (5 s + 5 s,
0.5 ms), measured on 200 cells at +-20%: statuses after 5 s of pre-pacing agree with 10 s in
99% of cells at 0 nM and 97.5% at 50 nM E-4031 (5 s vs 2 s: 97.5% and 94.5%); against 0.1 ms
sampling (at 10 nM), 0.5 ms gives the same outcome for every cell, APD90 within 1.2 ms (median
0.05 ms) and a quarter of the analysis time (0.7 vs 2.6 ms per cell).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..validation import plain_errors
from .catalog import Drug, get_drug

FORMAT = "cardiotwin.screen/1"
TEMPERATURE_RANGE_K = (250.0, 330.0)
RUN_ONLY_FIELDS = ("out_dir", "batch_cells", "figures", "drug_file", "overwrite")
MAX_CONCENTRATIONS = 64


def _positive(v: float, name: str) -> float:
    if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive number, found {v!r}")
    return float(v)


class ScreenConfig(BaseModel):
    """A population drug screen (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drug: str | Drug = Field(description="catalog name, or a definition {'name', 'blocks'}")
    concentrations_nM: tuple[float, ...] = Field(
        (0.0, 10.0, 30.0, 50.0, 100.0), description="concentrations (nM, >= 0, distinct)")
    n_cells: int = Field(200, description="cells in the population (> 0)")
    spread: float = Field(0.2, description="multiplier range r: [1 - r, 1 + r]")
    seed: int = Field(0, description="sampling seed (>= 0)")
    sampler: Literal["uniform", "lhs", "sobol"] = Field("uniform")
    twin_multipliers: tuple[float, ...] | dict[str, float] | None = Field(
        None, description="the twin: 52 multipliers (INFERRED_NAMES order) or {name: mult}; "
                          "None: model baseline")
    twin_name: str = Field("baseline", description="label of the twin")
    temperature_K: float = Field(310.0)
    prepace_ms: float = Field(5000.0, description="unrecorded run at each concentration (ms)")
    record_ms: float = Field(5000.0, description="recorded run (ms)")
    record_interval_ms: float = Field(0.5, description="sampling of the recorded run (ms)")
    pacing_period_ms: float | None = Field(None, description="None: free-running")
    pacing_amplitude: float = Field(3.0, description="stimulus (pA/pF)")
    pacing_width_ms: float = Field(5.0, description="stimulus width (ms)")
    depolarized_mdp_mV: float | None = Field(
        -60.0, description="beats with a higher MDP are depolarized oscillations, not full "
                           "APs (None: no split)")
    ead_min_repolarization: float = Field(
        0.3, description="EADs count only after the AP has repolarized this fraction of its "
                         "amplitude (0.3: from the APD30 level; excludes the phase-1 notch)")
    n_keep_traces: int = Field(4, description="AP traces kept per concentration for figures")
    trace_interval_ms: float = Field(1.0, description="sampling of the kept traces (ms)")
    batch_cells: int = Field(250, description="cells per Ray task (one kernel call)")
    drug_file: Path | None = Field(None, description="user drugs (.csv/.json)")
    out_dir: Path | None = Field(None, description="output directory; None: nothing written")
    figures: bool = Field(True, description="write the PNG figures")
    overwrite: bool = Field(False, description="replace a finished screen in out_dir")

    @field_validator("drug", mode="before")
    @classmethod
    def _drug(cls, v: Any) -> Any:
        from collections.abc import Mapping

        from .catalog import drug_from_dict

        return drug_from_dict(v) if isinstance(v, Mapping) else v

    @field_validator("concentrations_nM", mode="before")
    @classmethod
    def _concs(cls, v: Any) -> tuple[float, ...]:
        if isinstance(v, (int, float, str)):
            v = [v]
        out = []
        for x in v:
            try:
                c = float(x)
            except (TypeError, ValueError):
                raise ValueError(f"concentration {x!r} is not a number of nM") from None
            if not math.isfinite(c) or c < 0:
                raise ValueError(f"concentrations must be finite and >= 0 nM, found {x!r}")
            out.append(c)
        if not out:
            raise ValueError("give at least one concentration (nM)")
        if len(set(out)) != len(out):
            raise ValueError(f"concentrations must be distinct, found {out}")
        if len(out) > MAX_CONCENTRATIONS:
            raise ValueError(f"at most {MAX_CONCENTRATIONS} concentrations, found {len(out)}")
        return tuple(sorted(out))

    @field_validator("n_cells", "batch_cells")
    @classmethod
    def _count(cls, v: int, info) -> int:
        if v <= 0:
            raise ValueError(f"{info.field_name} must be a positive integer, found {v}")
        return v

    @field_validator("n_keep_traces", "seed")
    @classmethod
    def _nonneg(cls, v: int, info) -> int:
        if v < 0:
            raise ValueError(f"{info.field_name} must be >= 0, found {v}")
        return v

    @field_validator("spread")
    @classmethod
    def _spread(cls, v: float) -> float:
        if not (math.isfinite(v) and 0.0 < v < 1.0):
            raise ValueError(f"range (spread) must be in (0, 1) (0.2 for +-20%), found {v}")
        return v

    @field_validator("temperature_K")
    @classmethod
    def _temperature(cls, v: float) -> float:
        lo, hi = TEMPERATURE_RANGE_K
        if not (math.isfinite(v) and lo <= v <= hi):
            raise ValueError(f"temperature_K must be in [{lo}, {hi}] K (e.g. 310), found {v}")
        return v

    @field_validator("prepace_ms")
    @classmethod
    def _prepace(cls, v: float) -> float:
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"prepace_ms must be >= 0 ms, found {v}")
        return float(v)

    @field_validator("record_ms", "record_interval_ms", "pacing_amplitude", "pacing_width_ms",
                     "trace_interval_ms")
    @classmethod
    def _pos(cls, v: float, info) -> float:
        return _positive(v, info.field_name)

    @field_validator("ead_min_repolarization")
    @classmethod
    def _ead_repol(cls, v: float) -> float:
        if not (math.isfinite(v) and 0.0 <= v < 0.9):
            raise ValueError(f"ead_min_repolarization must be in [0, 0.9), found {v}")
        return v

    @field_validator("pacing_period_ms")
    @classmethod
    def _period(cls, v: float | None) -> float | None:
        return None if v is None else _positive(v, "pacing_period_ms")

    @field_validator("twin_multipliers")
    @classmethod
    def _twin(cls, v):
        if v is None:
            return v
        from ..model.parameters import N_INFERRED, inputs_from_multipliers, inputs_from_named

        if isinstance(v, dict):
            inputs_from_named(v)
            return {str(k): float(x) for k, x in v.items()}
        if len(v) != N_INFERRED:
            raise ValueError(f"twin_multipliers: expected {N_INFERRED} values in "
                             f"INFERRED_NAMES order (or a name -> multiplier dict), found "
                             f"{len(v)}")
        inputs_from_multipliers(list(v))
        return tuple(float(x) for x in v)

    def model_post_init(self, __context: Any) -> None:
        n_rec = round(self.record_ms / self.record_interval_ms)
        if abs(n_rec * self.record_interval_ms - self.record_ms) > 1e-9 * self.record_ms:
            raise ValueError(f"record_ms ({self.record_ms}) must be a whole number of "
                             f"record_interval_ms ({self.record_interval_ms})")
        if self.pacing_period_ms is not None and self.pacing_width_ms >= self.pacing_period_ms:
            raise ValueError(f"pacing_width_ms ({self.pacing_width_ms}) must be shorter than "
                             f"pacing_period_ms ({self.pacing_period_ms})")
        self.resolve_drug()    # unknown names and bad definitions fail here

    @classmethod
    def create(cls, **fields: Any) -> ScreenConfig:
        """Like the constructor, with plain one-line messages (for command lines)."""
        try:
            return cls(**fields)
        except ValidationError as e:
            raise plain_errors(e, "screen") from None

    # ---- derived ---------------------------------------------------------------------------

    def resolve_drug(self) -> Drug:
        """The drug, with its IC50s (a name is looked up in ``drug_file``, then the catalog)."""
        return get_drug(self.drug, self.drug_file)

    def twin_inputs(self):
        """The twin's model inputs (87,)."""
        from ..model.parameters import BASELINE, inputs_from_multipliers, inputs_from_named

        if self.twin_multipliers is None:
            return BASELINE.copy()
        if isinstance(self.twin_multipliers, dict):
            return inputs_from_named(self.twin_multipliers)
        return inputs_from_multipliers(list(self.twin_multipliers))[0]

    def identity(self) -> dict[str, Any]:
        """Every field that changes the results, canonical (the drug resolved)."""
        from ..model.parameters import REGISTRY_VERSION

        d = self.model_dump(mode="json", exclude=set(RUN_ONLY_FIELDS))
        d["drug"] = self.resolve_drug().model_dump(mode="json")
        d["registry_version"] = REGISTRY_VERSION
        d["format"] = FORMAT
        return d

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of :meth:`identity`."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"),
                          allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()


# ---- command line (for `cardiotwin screen` and jobs/drug_screen.py) --------------------------

def _floats(text: str) -> list[float]:
    return [float(x) for x in text.replace(",", " ").split()]


def add_screen_arguments(p) -> None:
    """Add the screen options to an argparse parser."""
    d = p.add_argument_group("drug")
    d.add_argument("--drug", default=None, metavar="NAME",
                   help="drug name from the catalog (see --list-drugs) or from --drug-file")
    d.add_argument("--drug-file", default=None, metavar="FILE",
                   help="user-defined drugs: CSV drug,current,ic50_nM,hill[,source,note] or "
                        "JSON {'drugs': [{'name', 'blocks': [{'current', 'ic50_nM', 'hill'}]}]}")
    d.add_argument("--concentrations-nm", "--concentrations", dest="concentrations",
                   nargs="+", default=["0", "10", "30", "50", "100"], metavar="C",
                   help="concentrations in nM (space or comma separated; default 0 10 30 50 "
                        "100)")
    d.add_argument("--list-drugs", action="store_true",
                   help="print the drug catalog (currents, IC50, Hill, source) and exit")
    g = p.add_argument_group("population")
    g.add_argument("--n-cells", type=int, default=200, metavar="N",
                   help="cells around the twin (default 200)")
    g.add_argument("--range", "--spread", dest="spread", type=float, default=0.2, metavar="R",
                   help="multiplier range r of the 52 parameters: [1-r, 1+r] (default 0.2)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    g.add_argument("--sampler", choices=("uniform", "lhs", "sobol"), default="uniform")
    g.add_argument("--twin-multipliers", default=None, metavar="FILE",
                   help="the twin: its JSON (cardiotwin twin --out, /twin) or a "
                        "name,multiplier CSV (default: the model baseline)")
    g.add_argument("--twin-name", default=None, help="label of the twin in the outputs")
    s = p.add_argument_group("simulation")
    s.add_argument("--temperature-k", type=float, default=310.0, metavar="K")
    s.add_argument("--prepace-ms", type=float, default=5000.0, metavar="MS",
                   help="unrecorded run at each concentration towards steady state "
                        "(default 5000)")
    s.add_argument("--record-ms", type=float, default=5000.0, metavar="MS",
                   help="recorded run analysed for APs and EADs (default 5000)")
    s.add_argument("--record-interval-ms", type=float, default=0.5, metavar="MS")
    s.add_argument("--pacing-period-ms", type=float, default=None, metavar="MS",
                   help="pace at this period (default: free-running)")
    s.add_argument("--pacing-amplitude", type=float, default=3.0, metavar="PA_PER_PF")
    s.add_argument("--depolarized-mdp-mv", default="-60", metavar="MV",
                   help="beats with an MDP above this are depolarized oscillations, excluded "
                        "from APD90 ('none' to disable; default -60)")
    s.add_argument("--ead-min-repolarization", type=float, default=0.3, metavar="F",
                   help="count a re-depolarization as an EAD only after the AP has repolarized "
                        "this fraction of its amplitude (default 0.3, the APD30 level: excludes "
                        "the phase-1 notch of spike-and-dome APs; 0: from the peak)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (results.parquet, cells.parquet, traces.parquet, "
                        "summary.json, figures)")
    o.add_argument("--keep-traces", type=int, default=4, metavar="N",
                   help="AP traces kept per concentration for the overlay figure (default 4)")
    o.add_argument("--no-figures", action="store_true")
    o.add_argument("--overwrite", action="store_true",
                   help="replace a finished screen in --out")
    r = p.add_argument_group("Ray")
    r.add_argument("--batch-cells", type=int, default=250, metavar="N",
                   help="cells per Ray task (default 250)")
    r.add_argument("--ray-address", default=None, metavar="ADDR")
    r.add_argument("--num-cpus", type=int, default=None, metavar="N",
                   help="CPUs of a local cluster started here (default: all)")
    r.add_argument("--ship-package", choices=("auto", "yes", "no"), default="auto")
    r.add_argument("--no-progress", action="store_true")


def config_from_args(a) -> ScreenConfig:
    """The ScreenConfig of parsed arguments (ValueError on invalid values)."""
    from ..model.parameters import read_multipliers_csv

    if not a.drug:
        raise ValueError("--drug is required (see --list-drugs)")
    if a.out is None:
        raise ValueError("--out is required")
    try:
        concs = [c for x in a.concentrations for c in _floats(x)]
    except ValueError:
        raise ValueError(f"--concentrations-nm: not numbers: {' '.join(a.concentrations)}"
                         ) from None
    dep = str(a.depolarized_mdp_mv).strip().lower()
    twin = None
    if a.twin_multipliers:
        from ..twin.inference import read_twin_multipliers

        twin = (read_twin_multipliers(a.twin_multipliers)
                if str(a.twin_multipliers).lower().endswith(".json")
                else read_multipliers_csv(a.twin_multipliers))
    name = a.twin_name or (Path(a.twin_multipliers).stem if a.twin_multipliers else "baseline")
    return ScreenConfig.create(
        drug=a.drug, drug_file=a.drug_file, concentrations_nM=concs, n_cells=a.n_cells,
        spread=a.spread, seed=a.seed, sampler=a.sampler, twin_multipliers=twin, twin_name=name,
        temperature_K=a.temperature_k, prepace_ms=a.prepace_ms, record_ms=a.record_ms,
        record_interval_ms=a.record_interval_ms, pacing_period_ms=a.pacing_period_ms,
        pacing_amplitude=a.pacing_amplitude,
        depolarized_mdp_mV=None if dep in ("none", "off") else float(dep),
        ead_min_repolarization=a.ead_min_repolarization,
        n_keep_traces=a.keep_traces, batch_cells=a.batch_cells, out_dir=a.out,
        figures=not a.no_figures, overwrite=a.overwrite)
