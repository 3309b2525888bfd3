"""The HTML page of a CiPA run: scores, baselines, per-drug predictions, links to the figures,
the files and each drug's screen."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ..storage.atomic import atomic_path


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3g}"
    return html.escape(str(x))


def _scores_row(name: str, s: dict[str, Any]) -> str:
    def ci(k):
        c = s.get(f"{k}_ci")
        return "" if not c or c[0] is None else f" [{_fmt(c[0])}, {_fmt(c[1])}]"

    return (f"<tr><td>{html.escape(name)}</td><td>{_fmt(s['accuracy'])}{ci('accuracy')}</td>"
            f"<td>{_fmt(s['auc_high_vs_rest'])}{ci('auc_high_vs_rest')}</td>"
            f"<td>{_fmt(s['auc_low_vs_rest'])}{ci('auc_low_vs_rest')}</td>"
            f"<td>{html.escape(str(s['confusion_matrix']))}</td></tr>")


def write_html(summary: dict[str, Any], path: Path, figures: bool = True) -> Path:
    """index.html of a run (see the module docstring), written atomically."""
    c, b, cfg = summary["classifier"], summary["baselines"], summary["config"]
    rows = "".join(
        f"<tr><td><a href='{html.escape(d['screen'])}/summary.json'>{html.escape(d['drug'])}"
        f"</a></td><td>{d['cipa_category']}</td><td>{d['predicted_category']}</td>"
        f"<td>{_fmt(d['risk_score'])}</td><td>[{_fmt(d['risk_score_ci'][0])}, "
        f"{_fmt(d['risk_score_ci'][1])}]</td><td>{_fmt(d['cmax_free_nM'])}</td>"
        f"<td>{d['set']}</td></tr>" for d in summary["drugs"])
    figs = ("<p><img src='dose_response.png' width='100%'></p>"
            "<p><img src='risk_by_category.png' width='70%'></p>") if figures else ""
    t = summary["timing"]
    page = f"""<!doctype html><html><head><meta charset='utf-8'><title>CiPA risk</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}td,th{{padding:2px 8px;
border-bottom:1px solid #ddd;text-align:left}}</style></head><body>
<h1>CiPA torsade risk from twin populations</h1>
<p>{cfg['n_cells']} cells (+-{100 * cfg['spread']:g}% around {html.escape(cfg['twin_name'])}),
{summary['model']['pacing']}, model: {summary['model']['variant']}, doses
{', '.join(f'{m:g}' for m in cfg['multiples'])} x free Cmax. Classifier:
{html.escape(c['model'])} on {html.escape(', '.join(c['features']))} (mean over doses), scored
by leave-one-out over the drugs ({c['n_drugs']}); intervals: {html.escape(c['ci_method'])}.</p>
<table><tr><th>method</th><th>accuracy</th><th>AUC high vs rest</th><th>AUC low vs rest</th>
<th>confusion (rows CiPA low, int, high)</th></tr>
{_scores_row('twin population', c)}{_scores_row('hERG safety margin', b['herg_margin'])}
{_scores_row('block-weighted score', b['block_score'])}</table>
{figs}
<h2>Drugs</h2><table><tr><th>drug (screen)</th><th>CiPA</th><th>predicted</th><th>risk score
</th><th>95% CI</th><th>free Cmax (nM)</th><th>set</th></tr>{rows}</table>
<p>Files: <a href='risk.csv'>risk.csv</a>, <a href='summary.json'>summary.json</a>. Wall time
{t['wall_s']:.0f} s, {t['n_simulations']} simulations, {_fmt(t['simulations_per_s_per_cpu'])}
simulations/s/core.</p></body></html>
"""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return Path(path)
