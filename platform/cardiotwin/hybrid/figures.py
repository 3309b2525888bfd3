"""Figure of a fitted hybrid (matplotlib, Agg): ground truth vs forecast from one initial state,
and the F_p and F_dl contributions to dv/dt along the forecast (as in APHYN-EP)."""

from __future__ import annotations

import io

import numpy as np

from .data import BeatSet
from .fit import HybridFit, forecast


def plot_fit(fit: HybridFit, beats: BeatSet, horizon_ms: float = 300.0, beat: int = 0,
             title: str | None = None) -> bytes:
    """PNG bytes: (top) observed normalized v, the clean trace when known, the hybrid and the
    physics-only forecasts over ``horizon_ms`` from the beat's initial state; (middle) F_p,v and
    F_dl,v along the hybrid forecast (normalized/ms); (bottom) the training curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = fit.config
    b = beats.beats[beat]
    n = min(int(round(horizon_ms / cfg.data.output_ms)), b.v_obs.size - 1)
    horizon = n * cfg.data.output_ms
    t = np.arange(n + 1) * cfg.data.output_ms
    fc_p = forecast(fit.physics_only, cfg, b.v0, horizon)
    fc_h = forecast(fit.hybrid, cfg, b.v0, horizon) if fit.hybrid is not None else None

    fig, ax = plt.subplots(3, 1, figsize=(8, 9), height_ratios=(3, 2, 1.5))
    ax[0].plot(t, b.v_obs[:n + 1], ".", ms=2, color="0.6", label="observed")
    if b.v_clean is not None:
        ax[0].plot(t, b.v_clean[:n + 1], color="k", lw=1.2, label="ground truth (clean)")

    def mse(fc):
        ref = b.v_clean if b.v_clean is not None else b.v_obs
        return float(np.mean((fc.v[1:, 0] - ref[1:n + 1]) ** 2))

    ax[0].plot(fc_p.t_ms, fc_p.v[:, 0], "--", color="tab:blue",
               label=f"physics only (MSE {mse(fc_p):.2e})")
    if fc_h is not None:
        ax[0].plot(fc_h.t_ms, fc_h.v[:, 0], color="tab:red",
                   label=f"hybrid F_p + F_dl (MSE {mse(fc_h):.2e})")
    ax[0].set_ylabel("v (normalized)")
    ax[0].legend(fontsize=8)
    ax[0].set_title(title or f"{beats.name}, beat {b.index}: forecast from one initial state")
    src = fc_h if fc_h is not None else fc_p
    ax[1].plot(src.t_ms, src.fp_v[:, 0], color="tab:blue", label="F_p (Mitchell-Schaeffer)")
    ax[1].plot(src.t_ms, src.fdl_v[:, 0], color="tab:orange", label="F_dl (residual network)")
    ax[1].set_yscale("symlog", linthresh=1e-3)
    ax[1].set_ylabel("dv/dt contribution (1/ms)")
    ax[1].legend(fontsize=8)
    hp, hh = fit.history_physics, fit.history_hybrid
    ax[2].semilogy(hp["l_traj"], color="tab:blue", label="L_traj, physics stage")
    if hh:
        k0 = len(hp["l_traj"])
        ax[2].semilogy(np.arange(k0, k0 + len(hh["l_traj"])), hh["l_traj"], color="tab:red",
                       label="L_traj, joint stage")
        ax[2].semilogy(np.arange(k0, k0 + len(hh["fdl_norm"])), hh["fdl_norm"],
                       color="tab:orange", label="||F_dl||")
    ax[2].set_xlabel("iteration")
    ax[2].legend(fontsize=8)
    ax[1].set_xlabel("time since beat start (ms)")
    phys = fit.final.physics
    fig.text(0.01, 0.005, "tau_in {:.3g} ms, tau_out {:.3g} ms, tau_open {:.3g} ms, tau_close "
             "{:.3g} ms, h0 {:.3f}".format(phys["tau_in_ms"], phys["tau_out_ms"],
                                           phys["tau_open_ms"], phys["tau_close_ms"],
                                           fit.final.h0), fontsize=8)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
