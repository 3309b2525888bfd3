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
                "model/evaluation/parameter_recovery.png", "model/evaluation/calibration.png",
                "model/evaluation/identifiability.csv", "twin/recording/example_cell_vc.abf",
                "twin/recording/example_cell_ap.abf", "twin/recording/example_cell.json",
                "twin/twin.json", "twin/twin.png", "screen/results.parquet",
                "screen/summary.json", "screen/dose_response.png", "screen/apd90_violins.png",
                "screen/ap_traces.png", "summary.json"):
        assert (out / rel).is_file(), rel
    summary = json.loads((out / "summary.json").read_text())
    html = report.read_text()
    figures = summary["figures"]
    assert len(figures) == 7   # the calibration figure of the default posterior model
    for fig in figures:
        rel = fig.split(str(out) + "/", 1)[1]
        assert f'href="{rel}"' in html, rel
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == len(figures)
    assert all(base64.b64decode(e)[:8] == b"\x89PNG\r\n\x1a\n" for e in embedded)
    twin = json.loads((out / "twin/twin.json").read_text())
    assert len(twin["parameters"]) == 52
    assert all(p["posterior"]["q05"] <= p["posterior"]["q95"] for p in twin["parameters"].values())
    assert twin["ap_prediction"]["n_samples"] == 64
    assert set(twin["out_of_distribution"]) >= {"flag", "score", "threshold", "reason"}
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


def test_demo_directory_of_another_demo_or_foreign_files_refused_before_any_work(tmp_path):
    from cardiotwin.demo.run import SUMMARY, claim_demo_dir, demo_identity
    from cardiotwin.storage.atomic import write_json_atomic
    from cardiotwin.storage.identity import identity_hash

    out = tmp_path / "demo"
    out.mkdir()
    done = demo_config("smallest", out_dir=out, seed=1)
    ident = demo_identity(done)
    write_json_atomic(out / SUMMARY, {"format": "cardiotwin.demo/1", "config": ident,
                                      "config_hash": identity_hash(ident)})
    (out / "population").mkdir()
    # the same settings (on other CPUs) may run over it; other settings are refused by name
    assert claim_demo_dir(demo_config("smallest", out_dir=out, seed=1, num_cpus=1)) == out
    with pytest.raises(ValueError, match=r"holds another demo.*seed: 1 there, 2 here"):
        run_demo(demo_config("smallest", out_dir=out, seed=2), echo=lambda s: None)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    with pytest.raises(ValueError, match="not empty.*thesis.tex"):
        run_demo(demo_config("smallest", out_dir=foreign), echo=lambda s: None)
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]


def test_demo_cli_options(tmp_path):
    import argparse

    from cardiotwin.demo.cli_args import config_from_args, register

    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(["demo", "--size", "smallest", "--out-dir", str(tmp_path), "--range", "0.3",
                      "--concentrations-nm", "0", "3"])
    cfg = config_from_args(a)
    assert (cfg.spread, cfg.concentrations_nM, cfg.n_cells) == (0.3, (0.0, 3.0), 300)
    assert a.func.__name__ == "run_demo_from_args"
    with pytest.raises(ValueError, match="demo.spread"):
        config_from_args(p.parse_args(["demo", "--range", "1.5"]))
