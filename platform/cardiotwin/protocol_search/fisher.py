"""Information-based scoring of protocol pieces: the Fisher information of I_total with respect
to the 52 multipliers, from finite differences simulated in SIMD batches.

Each base cell (multipliers m, on the unit scale u = (m - (1 - spread)) / (2 spread) of the
search) travels with 52 perturbed copies, u_j + ``fd_step`` for j = 1..52: one batch of 53
cells per base cell, continued together through every piece of the protocol (the
voltage-clamp kernel continues exactly from a state, see :mod:`.cache`). The sensitivity of
sample t is J[t, j] = (I_j(t) - I_0(t)) / fd_step (pA/pF per unit), and with white recording
noise of ``noise_pA_per_pF`` (sigma, per sample at the protocol's sample interval) the Fisher
information is F = J^T J / sigma^2, summed over the samples of every piece (pieces add).

Scores (lower is better, as the search's other scores): in prior-whitened units (the unit-scale
prior is U(0, 1), variance 1/12, taken as a Gaussian of that variance: the linear-Gaussian
(Laplace) approximation around each base cell), the posterior covariance is
C = (I + F / 12)^-1; ``trace`` is the mean over base cells of trace(C) / 52 (the mean posterior
variance left, a fraction of the prior's: A-optimality), ``logdet`` the mean of
log det(C) / 52 (D-optimality). The contraction of parameter j is 1 - C_jj; per current
family (IK1, IKr, IKs, ICaL, INa, If) the mean over the family's parameters is reported.

A base cell any of whose 53 copies is numerically unstable under the protocol is dropped (its
information is unknown); ``n_unstable`` counts them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..model.parameters import INFERRED_CURRENT, N_INFERRED, N_STATES
from .scoring import GROUPS

PRIOR_VARIANCE = 1.0 / 12.0     # U(0, 1) on the unit scale
CRITERIA = ("trace", "logdet")
DEFAULT_CHUNK = 48              # base cells per simulator call (48 x 53 = 2544 cells)
_FAMILY_INDEX = {g: np.array([i for i, c in enumerate(INFERRED_CURRENT) if c == g])
                 for g in GROUPS}


@dataclass(frozen=True)
class SensitivityState:
    """A population of base cells with their perturbed copies after a protocol-so-far:
    ``unit`` (n, 52) base cells on the unit scale, ``state`` (n, 53, 23) end states (copy 0
    the base cell), ``unstable`` (n,) bool, ``fisher`` (n, 52, 52) float64 information so far
    (1/unit^2, already divided by sigma^2)."""

    unit: np.ndarray
    state: np.ndarray
    unstable: np.ndarray
    fisher: np.ndarray

    @property
    def n(self) -> int:
        return int(self.unit.shape[0])

    @classmethod
    def initial(cls, unit: np.ndarray) -> SensitivityState:
        """Every copy at the model's initial state, no information yet."""
        from ..model.parameters import INITIAL_STATE

        unit = np.asarray(unit, np.float64)
        n = unit.shape[0]
        return cls(unit, np.broadcast_to(INITIAL_STATE, (n, N_INFERRED + 1, N_STATES)).copy(),
                   np.zeros(n, bool), np.zeros((n, N_INFERRED, N_INFERRED)))

    def save(self, path) -> None:
        """Write to ``path`` (.npz) atomically."""
        from ..storage.atomic import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, unit=self.unit, state=self.state, unstable=self.unstable,
                     fisher=self.fisher)

    @classmethod
    def load(cls, path, n: int) -> SensitivityState | None:
        """The state saved at ``path``, or None when missing, unreadable or not of ``n``
        cells (the caller recomputes it)."""
        try:
            with np.load(path) as z:
                s = cls(z["unit"], z["state"], z["unstable"], z["fisher"])
        except (OSError, ValueError, KeyError, EOFError):
            return None
        ok = (s.unit.shape == (n, N_INFERRED) and s.state.shape == (n, N_INFERRED + 1, N_STATES)
              and s.unstable.shape == (n,) and s.fisher.shape == (n, N_INFERRED, N_INFERRED))
        return s if ok else None


def unit_to_multipliers(unit: np.ndarray, spread: float) -> np.ndarray:
    """Multipliers of unit-scale values: 1 - spread + 2 spread u."""
    return 1.0 - spread + 2.0 * spread * np.asarray(unit, np.float64)


def multipliers_to_unit(m: np.ndarray, spread: float) -> np.ndarray:
    """Unit scale of multipliers over [1 - spread, 1 + spread]."""
    return (np.asarray(m, np.float64) - (1.0 - spread)) / (2.0 * spread)


def perturbed_inputs(unit: np.ndarray, spread: float, fd_step: float) -> np.ndarray:
    """Model inputs (n * 53, 87) of base cells ``unit`` (n, 52) and their copies u + fd_step e_j,
    cell-major: rows 53 i .. 53 i + 52 belong to base cell i (copy 0 the base)."""
    from ..model import inputs_from_multipliers

    unit = np.asarray(unit, np.float64)
    n = unit.shape[0]
    u = np.repeat(unit[:, None, :], N_INFERRED + 1, axis=1)
    u[:, 1:, :] += fd_step * np.eye(N_INFERRED)[None]
    return inputs_from_multipliers(unit_to_multipliers(u.reshape(n * (N_INFERRED + 1),
                                                                 N_INFERRED), spread))


def piece_information(sens: SensitivityState, piece, *, spread: float, fd_step: float,
                      noise_pA_per_pF: float, chunk: int = DEFAULT_CHUNK
                      ) -> tuple[SensitivityState, float]:
    """Continue every base cell and its copies through ``piece`` (a Protocol) and add the
    piece's Fisher information. Returns (the new state, simulation seconds)."""
    from ..simulate import simulate_voltage_clamp

    n, k = sens.n, N_INFERRED + 1
    state = np.empty_like(sens.state)
    unstable = sens.unstable.copy()
    fisher = sens.fisher.copy()
    sim_s = 0.0
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        inputs = perturbed_inputs(sens.unit[a:b], spread, fd_step)
        y0 = sens.state[a:b].reshape((b - a) * k, N_STATES)
        bad = np.repeat(unstable[a:b], k)
        y0 = np.where(bad[:, None], np.asarray(_initial_state())[None, :], y0)  # NaN-free
        t0 = time.perf_counter()
        r = simulate_voltage_clamp(piece, inputs, initial_state=y0)
        sim_s += time.perf_counter() - t0
        itot = r.i_total.astype(np.float64).reshape(b - a, k, -1)
        jac = (itot[:, 1:, :] - itot[:, :1, :]) / fd_step          # (m, 52, T)
        fisher[a:b] += np.matmul(jac, jac.transpose(0, 2, 1)) / noise_pA_per_pF ** 2
        state[a:b] = r.final_state.reshape(b - a, k, N_STATES)
        unstable[a:b] |= r.unstable.reshape(b - a, k).any(axis=1) | \
            ~np.isfinite(fisher[a:b]).all(axis=(1, 2))
    fisher[unstable] = 0.0
    return SensitivityState(sens.unit, state, unstable, fisher), sim_s


def _initial_state():
    from ..model.parameters import INITIAL_STATE

    return INITIAL_STATE


def posterior_covariance(fisher: np.ndarray) -> np.ndarray:
    """(n, 52, 52) posterior covariance in prior-whitened units, (I + F prior_var)^-1."""
    f = np.asarray(fisher, np.float64) * PRIOR_VARIANCE
    eye = np.eye(f.shape[-1])
    return np.linalg.inv(eye + 0.5 * (f + np.swapaxes(f, -1, -2)))


def information_metrics(fisher: np.ndarray, unstable: np.ndarray | None = None,
                        criterion: str = "trace") -> dict[str, float]:
    """Score and contraction of the stable cells' information (module docstring): ``score``
    (by ``criterion``), ``trace``, ``logdet``, ``contraction`` (mean over parameters and cells),
    ``contraction_<family>``, ``n_used``, ``n_unstable``."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, found {criterion!r}")
    fisher = np.asarray(fisher, np.float64)
    bad = np.zeros(fisher.shape[0], bool) if unstable is None else np.asarray(unstable, bool)
    f = fisher[~bad]
    if f.shape[0] == 0:
        return {"score": float("inf"), "trace": float("inf"), "logdet": float("inf"),
                "contraction": 0.0, "n_used": 0, "n_unstable": int(bad.sum())}
    cov = posterior_covariance(f)
    diag = np.diagonal(cov, axis1=1, axis2=2)                          # (n, 52)
    trace = float(np.mean(diag.mean(axis=1)))
    sign, logdet = np.linalg.slogdet(cov)
    logdet_mean = float(np.mean(logdet) / f.shape[-1])
    out = {"score": trace if criterion == "trace" else logdet_mean, "trace": trace,
           "logdet": logdet_mean, "contraction": float(1.0 - trace)}
    for g, idx in _FAMILY_INDEX.items():
        out[f"contraction_{g}"] = float(1.0 - np.mean(diag[:, idx]))
    out["n_used"] = int(f.shape[0])
    out["n_unstable"] = int(bad.sum())
    return out


def protocol_information(protocol, unit: np.ndarray, *, spread: float, fd_step: float,
                         noise_pA_per_pF: float, criterion: str = "trace",
                         chunk: int = DEFAULT_CHUNK) -> dict[str, float]:
    """The information metrics (:func:`information_metrics`) of a whole protocol on base cells
    ``unit`` (n, 52), from the model's initial state; adds ``sim_s``."""
    sens, sim_s = piece_information(SensitivityState.initial(unit), protocol, spread=spread,
                                    fd_step=fd_step, noise_pA_per_pF=noise_pA_per_pF,
                                    chunk=chunk)
    return {**information_metrics(sens.fisher, sens.unstable, criterion), "sim_s": sim_s}


def base_cells(config, *, n_cells: int | None = None, seed: int | None = None) -> np.ndarray:
    """Unit-scale base cells (n, 52) of a search's Fisher population (``fisher_cells`` of the
    config's sampler, spread and seed unless given), kept ``fd_step`` away from the upper
    edge so every perturbed copy stays inside the prior's range."""
    from ..population import sample_population

    n = config.fisher_cells if n_cells is None else int(n_cells)
    s = config.seed if seed is None else int(seed)
    m = sample_population(config.sampler, n, config.spread, s)
    u = multipliers_to_unit(m, config.spread)
    return np.clip(u, 0.0, 1.0 - config.fd_step)
