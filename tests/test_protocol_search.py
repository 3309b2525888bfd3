"""Tests of the greedy protocol search (cardiotwin.protocol_search): exact state continuation,
configuration errors, a tiny search on local Ray (2 cycles x 3 candidates, 200 cells, a small
network), resuming a stopped search, the comparison and the command line.

The uninterrupted search runs once for the module; the resumed one stops after cycle 1 and is
started again with a budget of 2 cycles.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("keras")

from cardiotwin.protocol_search import (CacheEntry, SearchConfig, StateCache,  # noqa: E402
                                        continue_simulation, naive_protocol, run_search)
from cardiotwin.protocol_search.cells import build_cells  # noqa: E402
from cardiotwin.protocol_search.cli_args import (add_search_arguments,  # noqa: E402
                                                 config_from_args, run_from_args)
from cardiotwin.protocol_search.config import parse_candidates  # noqa: E402
from cardiotwin.protocols import Protocol, load_protocol  # noqa: E402
from cardiotwin.simulate import simulate_voltage_clamp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(candidates_mV=(-120.0, -40.0, 20.0), n_cells=200, epochs=4, seed=3,
            network_overrides={"width": 32, "patience": 3}, stop_when_no_improvement=False)


@pytest.fixture(scope="module")
def uninterrupted(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "full"
    return out, run_search(SearchConfig(**TINY, max_steps=2), out, log=lambda s: None)


# ---- state continuation -----------------------------------------------------------------

def test_continuing_from_cached_state_equals_simulating_from_the_start(tmp_path):
    cfg = SearchConfig(n_cells=40, seed=5)
    cells = build_cells(cfg)
    inputs = cells.inputs()
    cache = StateCache(tmp_path / "cache")
    entry = CacheEntry.initial(cells.n)
    for v in (-120.0, 20.0):                      # protocol-so-far: two cycles, checkpointed
        entry, _, _ = continue_simulation(entry, cfg.cycle_protocol(v), inputs)
        cache.save(entry)
        entry = cache.load(entry.key)
    so_far = entry.protocol()
    assert entry.key == so_far.protocol_hash and cache.has(so_far.protocol_hash)
    new, seg, _ = continue_simulation(entry, cfg.cycle_protocol(-40.0), inputs)
    full = simulate_voltage_clamp(new.protocol(), inputs)
    assert new.protocol().duration_ms == 1500.0
    assert new.i_total.shape == full.i_total.shape == (40, 15000)
    assert np.array_equal(new.i_total, full.i_total, equal_nan=True)      # bitwise
    assert np.array_equal(seg, full.i_total[:, 10000:], equal_nan=True)
    assert np.array_equal(new.state, full.final_state, equal_nan=True)
    assert np.array_equal(new.unstable, full.unstable)
    cache.prune({new.key})
    assert not cache.has(so_far.protocol_hash)


# ---- configuration ----------------------------------------------------------------------

@pytest.mark.parametrize("fields, match", [
    (dict(candidates_mV=()), "candidates_mV is empty"),
    (dict(candidates_mV=(-40, -40)), "duplicates"),
    (dict(candidates_mV=(-250,)), "within"),
    (dict(step_ms=250.05), "whole number of sample_interval_ms"),
    (dict(step_ms=0), "step_ms must be > 0"),
    (dict(holding_mV=float("nan")), "holding_mV must be finite"),
    (dict(n_cells=5), "n_cells must be >= 20"),
    (dict(spread=1.5), "spread must be in"),
    (dict(network="huge"), "unknown network preset"),
    (dict(network_overrides={"epochs": 3}), "may not set 'epochs'"),
    (dict(network_overrides={"depthh": 3}), "depthh"),
    (dict(network_overrides={"input_pool": 3}), "may not set 'input_pool'"),
    (dict(statuses=("ok", "unstable")), "unknown"),
    (dict(max_duration_ms=300), "shorter than one cycle"),
    (dict(max_steps=0), "max_steps"),
    (dict(cycles=3), "cycles"),
])
def test_bad_config_gives_a_clear_error(fields, match):
    with pytest.raises(ValueError, match=match):
        SearchConfig.create(**fields)


def test_defaults_are_the_study_design():
    cfg = SearchConfig()
    assert cfg.candidates_mV == tuple(float(v) for v in range(-120, 51, 10))
    assert (cfg.holding_mV, cfg.holding_ms, cfg.step_ms) == (-100.0, 250.0, 250.0)
    p = cfg.cycle_protocol(-120)
    assert [(s.duration_ms, s.v_start_mV) for s in p.segments] == [(250, -100), (250, -120)]
    tc = cfg.train_config()                                    # small network by default
    assert (tc.architecture, tc.depth, tc.width, tc.input_pool) == ("ridge_mlp", 2, 256, 20)
    assert parse_candidates("-120:50:10") == cfg.candidates_mV
    assert parse_candidates("-80, 0") == (-80.0, 0.0)
    with pytest.raises(ValueError, match="START:STOP:STEP"):
        parse_candidates("-120:50:0")
    # budget and resources are not part of the search's identity
    assert SearchConfig(max_steps=3, cpus_per_trial=2).config_hash() == cfg.config_hash()
    assert SearchConfig(seed=1).config_hash() != cfg.config_hash()


# ---- the search -------------------------------------------------------------------------

def test_tiny_search_writes_a_valid_protocol_and_history(uninterrupted):
    out, s = uninterrupted
    assert s["n_steps"] == 2 and s["stop_reason"] == "max_steps"
    p = load_protocol(out / "protocol.json")
    assert p.protocol_hash == s["protocol_hash"] == (out / "protocol_hash.txt").read_text().strip()
    assert (out / "protocol.json").read_text().strip() == p.to_json()          # canonical
    assert Protocol.from_csv(out / "protocol.csv").protocol_hash == p.protocol_hash
    assert p.duration_ms == 1000.0 and len(p.segments) == 4
    hist = json.loads((out / "history.json").read_text())
    assert [c["cycle"] for c in hist["cycles"]] == [1, 2]
    for c, (hold, step) in zip(hist["cycles"], zip(p.segments[::2], p.segments[1::2])):
        scores = [r["score"] for r in c["candidates"]]
        assert [r["candidate_mV"] for r in c["candidates"]] == list(TINY["candidates_mV"])
        assert c["best_mV"] == c["candidates"][int(np.argmin(scores))]["candidate_mV"]
        assert c["best_score"] == min(scores) and c["appended"] and c["digest_match"]
        assert (hold.v_start_mV, hold.duration_ms) == (-100.0, 250.0)
        assert step.v_start_mV == step.v_end_mV == c["best_mV"]
        r = c["candidates"][0]
        assert r["score"] == r["test_mse"] > 0 and 0 < r["test_median_mae"] < 0.5
        assert {f"mae_{g}" for g in ("IK1", "IKr", "IKs", "ICaL", "INa", "If")} <= set(r)
        assert r["n_train"] + r["n_val"] + r["n_test"] == 200 - r["n_unstable"]
        assert c["timing"]["trials_sim_s"] > 0 and c["timing"]["trials_train_s"] > 0
    assert (out / "search.png").stat().st_size > 10_000
    assert set(os.listdir(out / "cache")) == {p.protocol_hash}       # only the current entry


def test_stopped_search_resumes_and_matches_the_uninterrupted_run(uninterrupted, tmp_path):
    out_full, full = uninterrupted
    out = tmp_path / "resumed"
    first = run_search(SearchConfig(**TINY, max_steps=1), out, log=lambda s: None)
    assert first["n_steps"] == 1 and first["stop_reason"] == "max_steps"
    again = run_search(SearchConfig(**TINY, max_steps=2), out, log=lambda s: None)
    assert again["protocol_hash"] == full["protocol_hash"]
    assert [c["cycle"] for c in again["history"]] == [1, 2]
    for a, b in zip(again["history"], full["history"]):
        assert [r["score"] for r in a["candidates"]] == [r["score"] for r in b["candidates"]]
        assert [r["digest"] for r in a["candidates"]] == [r["digest"] for r in b["candidates"]]
    # a finished search is not run again; another identity in the same directory is refused
    log = []
    same = run_search(SearchConfig(**TINY, max_steps=2), out, figure=False, log=log.append)
    assert same["history"] == again["history"] and not any("cycle" in m for m in log)
    with pytest.raises(ValueError, match="another configuration .*n_cells"):
        run_search(SearchConfig(**{**TINY, "n_cells": 300}), out, log=lambda s: None)


def test_command_line_resumes_a_finished_search(uninterrupted, capsys):
    out, full = uninterrupted
    p = argparse.ArgumentParser()
    add_search_arguments(p)
    a = p.parse_args(["--out", str(out), "--candidates=-120,-40,20", "--n-cells", "200",
                      "--epochs", "4", "--seed", "3", "--network-overrides",
                      '{"width": 32, "patience": 3}', "--no-stop-when-no-improvement",
                      "--max-steps", "2", "--no-figure"])
    assert config_from_args(a) == SearchConfig(**TINY, max_steps=2)
    assert run_from_args(a)["protocol_hash"] == full["protocol_hash"]
    bad = subprocess.run([sys.executable, str(ROOT / "tune" / "protocol_search.py"), "--out",
                          str(out), "--n-cells", "5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "n_cells must be >= 20" in bad.stderr


def test_naive_protocol_and_comparison(uninterrupted):
    from cardiotwin.protocol_search import compare_protocols

    _, s = uninterrupted
    cfg = SearchConfig(**TINY)
    naive = naive_protocol(s["protocol"], cfg)
    assert naive.duration_ms == s["protocol"].duration_ms
    assert [seg.v_start_mV for seg in naive.segments] == [-100.0, -120.0, -100.0, 20.0]
    comp = compare_protocols({"optimized": s["protocol"], "naive": naive}, cfg, n_cells=120,
                             use_ray=False, log=lambda m: None)
    assert comp["seed"] == 4 and set(comp["results"]) == {"optimized", "naive"}
    n_test = {r["n_test"] for r in comp["results"].values()}
    assert n_test == {comp["n_test"]}                     # the same held-out cells
    assert all(r["test_median_mae"] > 0 for r in comp["results"].values())
