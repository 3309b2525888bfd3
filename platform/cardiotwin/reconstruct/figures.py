"""Figures (matplotlib, Agg): overlays of reconstructed iAPs with the 90 % band, APD error
boxplots, and a recording's reconstruction (windows and APD over time). Each returns PNG
bytes."""

from __future__ import annotations

import io

import numpy as np

from .windows import APD_LEVELS


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_overlays(eap: np.ndarray, target: np.ndarray, pred: np.ndarray, dt_ms: float,
                  quantiles=None, n: int = 6, title: str = "") -> bytes:
    """Up to ``n`` windows: normalized eAP (top, grey), true iAP (black) and predicted median
    with its 90 % (and 50 %, with 5 quantiles) band (blue)."""
    plt = _plt()
    n = min(n, len(target))
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 4.2), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [1, 2]})
    t = np.arange(target.shape[1]) * dt_ms
    med = pred.shape[-1] // 2 if quantiles is None else list(quantiles).index(0.5)
    for i in range(n):
        axes[0, i].plot(t, eap[i], color="0.4", lw=0.6)
        ax = axes[1, i]
        if pred.shape[-1] >= 3:
            ax.fill_between(t, pred[i, :, 0], pred[i, :, -1], color="tab:blue", alpha=0.3,
                            lw=0, label="90 % band")
        if pred.shape[-1] >= 5:
            ax.fill_between(t, pred[i, :, 1], pred[i, :, -2], color="tab:blue", alpha=0.3,
                            lw=0, label="50 % band")
        ax.plot(t, target[i], color="k", lw=1.0, label="true iAP")
        ax.plot(t, pred[i, :, med], color="tab:blue", lw=1.0, ls="--", label="median")
        ax.set_xlabel("ms")
    axes[0, 0].set_ylabel("eAP (norm.)")
    axes[1, 0].set_ylabel("iAP (norm.)")
    axes[1, 0].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)


def plot_apd_errors(errors: dict[str, np.ndarray], title: str = "") -> bytes:
    """Boxplots of |APDx error| (%) per level, one box group per model (``errors``: name ->
    (n_windows, 10) array)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.8))
    k = len(errors)
    width = 0.8 / max(k, 1)
    for j, (name, e) in enumerate(errors.items()):
        data = [c[np.isfinite(c)] for c in np.asarray(e).T]
        pos = np.arange(len(APD_LEVELS)) + (j - (k - 1) / 2) * width
        bp = ax.boxplot(data, positions=pos, widths=width * 0.9, showfliers=False,
                        patch_artist=True)
        color = plt.cm.tab10(j)
        for b in bp["boxes"]:
            b.set_facecolor(color)
            b.set_alpha(0.6)
        ax.plot([], [], color=color, lw=6, alpha=0.6, label=name)
    ax.set_xticks(np.arange(len(APD_LEVELS)))
    ax.set_xticklabels([f"APD{x}" for x in APD_LEVELS])
    ax.set_ylabel("|error| (%)")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _png(fig)


def plot_recording(res) -> bytes:
    """A reconstruction (:class:`.infer.Reconstruction`): up to 4 windows with bands, and
    APD50/APD90 over time (median, band edges as error bars)."""
    plt = _plt()
    n = min(4, len(res.anchor_ms))
    fig = plt.figure(figsize=(11, 6))
    gs = fig.add_gridspec(2, max(n, 1))
    w = res.window
    t = (np.arange(w.length) - w.pre_samples) * w.sample_interval_ms
    q = list(res.quantiles)
    for i in range(n):
        ax = fig.add_subplot(gs[0, i])
        ax.plot(t, res.eap_norm[i] / max(1e-9, np.abs(res.eap_norm[i]).max()) * 0.3 + 0.5,
                color="0.6", lw=0.5, label="eAP (scaled)")
        if len(q) >= 3:
            ax.fill_between(t, res.iap[i, :, 0], res.iap[i, :, -1], color="tab:blue",
                            alpha=0.3, lw=0, label="90 % band")
        if len(q) >= 5:
            ax.fill_between(t, res.iap[i, :, 1], res.iap[i, :, -2], color="tab:blue",
                            alpha=0.3, lw=0, label="50 % band")
        ax.plot(t, res.iap[i, :, q.index(0.5)], color="tab:blue", lw=1, label="iAP median")
        ax.set_title(f"beat {i} at {res.anchor_ms[i] / 1000:.2f} s", fontsize=8)
        ax.set_xlabel("ms from spike")
    if n:
        fig.axes[0].legend(fontsize=6)
    ax = fig.add_subplot(gs[1, :])
    ts = res.anchor_ms / 1000.0
    for level, color in ((50, "tab:orange"), (90, "tab:red")):
        j = APD_LEVELS.index(level)
        m = res.apd_ms["q50"][:, j]
        if "q05" in res.apd_ms and "q95" in res.apd_ms:
            lo = np.fmin(res.apd_ms["q05"][:, j], res.apd_ms["q95"][:, j])
            hi = np.fmax(res.apd_ms["q05"][:, j], res.apd_ms["q95"][:, j])
            ax.errorbar(ts, m, yerr=[np.clip(m - lo, 0, None), np.clip(hi - m, 0, None)],
                        fmt="o-", color=color, ms=3, lw=1, capsize=2, label=f"APD{level}")
        else:
            ax.plot(ts, m, "o-", color=color, ms=3, label=f"APD{level}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("APD (ms)")
    ax.legend(fontsize=8)
    fig.suptitle(f"reconstructed iAP: {res.source}", fontsize=9)
    fig.tight_layout()
    return _png(fig)
