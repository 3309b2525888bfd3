"""The end-to-end demo at its smallest size on local Ray: every stage's artifacts exist and the
HTML report embeds and references every figure."""

import base64
import json
import re

import pytest

from cardiotwin.demo import demo_config, run_demo


def test_demo_smallest_end_to_end(ray_session, tmp_path):
    cfg = demo_config("smallest", out_dir=tmp_path / "demo")
    lines = []
    report = run_demo(cfg, echo=lines.append)
    out = tmp_path / "demo"
    assert report == out / "report.html"
    for rel in ("population/manifest.json", "population/population.png", "model/model.keras",
                "model/metadata.json", "model/evaluation/parameter_errors.csv",
                "model/evaluation/parameter_recovery.png", "twin/recording/example_cell_vc.abf",
                "twin/recording/example_cell_ap.abf", "twin/recording/example_cell.json",
                "twin/twin.json", "twin/twin.png", "screen/results.parquet",
                "screen/summary.json", "screen/dose_response.png", "screen/apd90_violins.png",
                "screen/ap_traces.png", "summary.json"):
        assert (out / rel).is_file(), rel
    summary = json.loads((out / "summary.json").read_text())
    html = report.read_text()
    figures = summary["figures"]
    assert len(figures) == 6
    for fig in figures:
        rel = fig.split(str(out) + "/", 1)[1]
        assert f'href="{rel}"' in html, rel
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == len(figures)
    assert all(base64.b64decode(e)[:8] == b"\x89PNG\r\n\x1a\n" for e in embedded)
    twin = json.loads((out / "twin/twin.json").read_text())
    assert len(twin["parameters"]) == 52
    assert lines[-1].startswith("done in") and str(report) in lines[-1]
    # the stages went in order, with progress lines
    assert [ln[:5] for ln in lines if ln.startswith("[")] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]


def test_demo_settings_refused_with_the_field_named():
    with pytest.raises(ValueError, match="demo.n_cells"):
        demo_config("smallest", n_cells=0)
    with pytest.raises(ValueError, match="unknown demo size 'huge'"):
        demo_config("huge")
    with pytest.raises(ValueError, match="concentrations"):
        demo_config(concentrations_nM=(-1.0,))
