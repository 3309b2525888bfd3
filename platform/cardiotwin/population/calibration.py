"""Population calibration: keep a synthetic cell as 'ok' only when its AP phenotype lies near one
of a set of target phenotypes (real cells' or a lab's experimental values), the
population-of-models idea (Britton et al. 2013) with the coverage criterion of
:mod:`cardiotwin.coverage.match` at wider tolerances. A beating ('ok') cell near no target gets
the status 'off_target' (stored only with keep_rejected); other statuses are unchanged. The
targets are numbers in the config (so in the manifest and the dataset's identity), whatever
files they were read from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import Field

from ..features import STATUSES
from ..settings import NonEmptyStr, Settings

OFF_TARGET = "off_target"
#: every status a population cell can have: the classifier's, then calibration's
POPULATION_STATUSES = (*STATUSES, OFF_TARGET)


class PhenotypeTarget(Settings):
    """One target phenotype: cycle length (ms), APD90 (ms), MDP (mV)."""

    name: str = ""
    cycle_length_ms: float = Field(gt=0, description="cycle length (ms)")
    apd90_ms: float = Field(gt=0, description="APD90 (ms)")
    mdp_mV: float = Field(ge=-150, le=50, description="maximum diastolic potential (mV)")


class Calibration(Settings):
    """Keep 'ok' cells within ``cl_rel`` of a target's cycle length AND ``apd90_rel`` of its
    APD90 AND ``mdp_abs_mV`` of its MDP (any one target)."""

    targets: list[PhenotypeTarget] = Field(min_length=1, description="target phenotypes")
    cl_rel: float = Field(0.2, gt=0, le=10, description="cycle-length tolerance (fraction)")
    apd90_rel: float = Field(0.2, gt=0, le=10, description="APD90 tolerance (fraction)")
    mdp_abs_mV: float = Field(6.0, gt=0, le=100, description="MDP tolerance (mV)")
    source: NonEmptyStr = Field("user", description="where the targets came from")

    def criterion(self):
        """The tolerances as a :class:`cardiotwin.coverage.match.MatchCriterion`."""
        from ..coverage.match import MatchCriterion

        return MatchCriterion(self.cl_rel, self.apd90_rel, self.mdp_abs_mV)

    def near_target(self, cycle_length_ms, apd90_ms, mdp_mV) -> np.ndarray:
        """(n,) bool: which cells (biomarker arrays (n,)) lie near some target (NaN: never)."""
        cells = np.stack([np.asarray(x, np.float64) for x in (cycle_length_ms, apd90_ms,
                                                               mdp_mV)], axis=1)
        t = np.array([[x.cycle_length_ms, x.apd90_ms, x.mdp_mV] for x in self.targets])
        return self.criterion().near_any(t, cells)

    def apply(self, statuses: np.ndarray, biomarkers: dict[str, np.ndarray]) -> np.ndarray:
        """Statuses with 'ok' cells near no target turned 'off_target'."""
        near = self.near_target(biomarkers["cycle_length_ms"], biomarkers["apd90_ms"],
                                biomarkers["mdp_mV"])
        return np.where((statuses == "ok") & ~near, OFF_TARGET, statuses)


def calibration_from_real(paths: Iterable[str] | str, include: str | None = None, *,
                          cl_rel: float = 0.2, apd90_rel: float = 0.2,
                          mdp_abs_mV: float = 6.0) -> Calibration:
    """A calibration whose targets are the beating real recordings among ``paths`` (traces or
    directories, ``include`` a glob on the file names): their CL, APD90 and MDP by
    :func:`cardiotwin.features.analyze_trace`. ValueError when none beats."""
    from ..coverage.phenotypes import read_real_phenotypes

    cells = read_real_phenotypes(paths, include=include)
    targets = [PhenotypeTarget(name=c.name, cycle_length_ms=c.values["cycle_length_ms"],
                               apd90_ms=c.values["apd90_ms"], mdp_mV=c.values["mdp_mV"])
               for c in cells if c.beating and all(
                   np.isfinite(c.values[k]) for k in ("cycle_length_ms", "apd90_ms", "mdp_mV"))]
    if not targets:
        raise ValueError(f"calibration: none of the {len(cells)} real recordings beats with a "
                         "defined cycle length, APD90 and MDP")
    names = sorted({c.path for c in cells})
    return Calibration(targets=targets, cl_rel=cl_rel, apd90_rel=apd90_rel,
                       mdp_abs_mV=mdp_abs_mV, source=_source(names, include))


def _source(paths: Sequence[str], include: str | None) -> str:
    shown = ", ".join(p.rsplit("/", 1)[-1] for p in paths[:3])
    more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
    return f"real recordings {shown}{more}" + (f" (include {include!r})" if include else "")
