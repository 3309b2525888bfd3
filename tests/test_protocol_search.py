"""Tests of the greedy protocol search (cardiotwin.protocol_search): exact state continuation,
configuration errors, the Fisher score (against finite differences done by hand, additive over
pieces, ranking an informative step above an uninformative one), a tiny Fisher search (resumed,
and beating the naive protocol of equal length on a fresh population), a tiny network-scored
search on local Ray (2 cycles x 3 candidates, 200 cells, a small network), resuming a stopped
search, the comparison and the command line.

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

from cardiotwin.protocol_search import (
    CacheEntry,
    SearchConfig,
    StateCache,
    continue_simulation,
    naive_protocol,
    run_search,
)
from cardiotwin.protocol_search.cells import build_cells
from cardiotwin.protocol_search.cli_args import (
    add_search_arguments,
    config_from_args,
    run_from_args,
)
from cardiotwin.protocol_search.config import parse_candidates
from cardiotwin.protocols import Protocol, load_protocol
from cardiotwin.simulate import simulate_voltage_clamp

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(scorer="network", candidates_mV=(-120.0, -40.0, 20.0), n_cells=200, epochs=4,
            seed=3,
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


def test_damaged_cache_entry_is_a_miss_and_is_recomputed(tmp_path):
    from cardiotwin.protocol_search.cache import CacheDamaged
    from cardiotwin.protocol_search.search import _load_entry
    from cardiotwin.protocol_search.state import SearchState

    cfg = SearchConfig(n_cells=24, seed=5)
    cells = build_cells(cfg)
    cache = StateCache(tmp_path / "cache")
    good, _, _ = continue_simulation(CacheEntry.initial(cells.n), cfg.cycle_protocol(-80.0),
                                     cells.inputs())
    d = cache.save(good)
    assert not [p.name for p in cache.root.iterdir() if p.name != good.key]   # no leftovers
    state = SearchState(cfg.config_hash(), good.protocol_json)
    npy = d / "i_total.npy"
    size = npy.stat().st_size
    with open(npy, "r+b") as fh:                       # a torn write: half the file
        fh.truncate(size // 2)
    with pytest.raises(CacheDamaged, match=r"i_total\.npy: unreadable"):
        cache.load(good.key)
    log = []
    assert cache.get(good.key, cells.n, log.append) is None
    assert "damaged" in log[0]
    entry = _load_entry(cache, state, cells, log.append)   # resume: recomputed, overwritten
    assert np.array_equal(entry.i_total, good.i_total, equal_nan=True)
    assert np.array_equal(entry.state, good.state, equal_nan=True)
    assert npy.stat().st_size == size
    assert np.array_equal(cache.load(good.key, cells.n).i_total, good.i_total, equal_nan=True)
    # a complete file of the wrong shape (another population) is a miss too
    np.save(d / "state.npy", good.state[:10])
    with pytest.raises(CacheDamaged, match=r"state\.npy: shape \(10, 23\) float64, expected "
                                           r"\(24, 23\)"):
        cache.load(good.key)
    np.save(d / "state.npy", good.state)
    with pytest.raises(CacheDamaged, match=r"unstable\.npy: .*expected \(30,\) bool for 30 cel"):
        cache.load(good.key, 30)
    assert cache.get(good.key, 30) is None and cache.get(good.key, cells.n) is not None


def test_search_directory_is_claimed_and_locked(tmp_path):
    from cardiotwin.storage import DirectoryLock, LockHeldError

    cfg = SearchConfig(**TINY, max_steps=1)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no state.json .*notes.txt"):
        run_search(cfg, foreign, log=lambda s: None)
    busy = tmp_path / "busy"
    with DirectoryLock(busy):                          # another search writes there
        with pytest.raises(LockHeldError, match="being written by another run") as e:
            run_search(cfg, busy, log=lambda s: None)
        assert "\n" not in str(e.value)
    assert sorted(os.listdir(busy)) == []              # refused before anything was written
    (busy / "state.json").write_text('{"format": "cardiotwin.protocol_search/1", "conf')
    with pytest.raises(ValueError, match=r"cannot read search state .*state\.json"):
        run_search(cfg, busy, log=lambda s: None)


def test_protocol_search_subcommand_registers():
    from cardiotwin.protocol_search.cli_args import register, run

    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(["protocol-search", "--out", "x", "--n-cells", "50", "--max-steps", "3"])
    assert a.func is run
    cfg = config_from_args(a)
    assert (cfg.n_cells, cfg.max_steps) == (50, 3)


# ---- configuration ----------------------------------------------------------------------

@pytest.mark.parametrize("fields, match", [
    (dict(candidates_mV=()), "candidates_mV is empty"),
    (dict(candidates_mV=(-40, -40)), "duplicates"),
    (dict(candidates_mV=(-250,)), r"^candidates_mV\.0: .*greater than or equal to -200"),
    (dict(step_ms=250.05), "whole number of sample_interval_ms"),
    (dict(step_ms=0), r"^step_ms: Input should be greater than 0, found 0$"),
    (dict(holding_mV=float("nan")), r"^holding_mV: Input should be a finite number"),
    (dict(holding_mV=-300), r"^holding_mV: .*greater than or equal to -200"),
    (dict(n_cells=5), r"^n_cells: Input should be greater than or equal to 20, found 5$"),
    (dict(spread=1.5), r"^spread: Input should be less than 1"),
    (dict(temperature_K=10), r"^temperature_K: .*greater than or equal to 250"),
    (dict(min_improvement=1.0), r"^min_improvement: .*less than 1"),
    (dict(gpus_per_trial=-1), r"^gpus_per_trial: .*greater than or equal to 0"),
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
    pairs = zip(p.segments[::2], p.segments[1::2], strict=False)
    for c, (hold, step) in zip(hist["cycles"], pairs, strict=False):
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


def test_each_cycle_appends_the_candidate_that_scores_best_when_recomputed(uninterrupted):
    """The scores in history.json are recomputed independently, on the search population
    (same cells, same network and seed, one Ray task each, as the trials): the chosen step of
    each cycle is the argmin of the recomputed scores, and each recorded score is reproduced."""
    from cardiotwin.protocol_search import compare_protocols
    from cardiotwin.protocols import concatenate

    _, s = uninterrupted
    cfg = SearchConfig(**TINY, max_steps=2)
    so_far = None
    for cycle in s["history"]:
        recomputed = {}
        for v in TINY["candidates_mV"]:
            p = cfg.cycle_protocol(v) if so_far is None else concatenate(so_far,
                                                                        cfg.cycle_protocol(v))
            r = compare_protocols({"p": p}, cfg, n_cells=TINY["n_cells"], seed=TINY["seed"],
                                  use_ray=True, log=lambda m: None)["results"]["p"]
            recomputed[v] = r["test_mse"]
        recorded = {r["candidate_mV"]: r["score"] for r in cycle["candidates"]}
        assert recomputed == pytest.approx(recorded, rel=1e-4), (cycle["cycle"], recomputed)
        best = min(recomputed, key=recomputed.get)
        assert cycle["best_mV"] == best and cycle["appended"]
        so_far = cfg.cycle_protocol(best) if so_far is None else concatenate(
            so_far, cfg.cycle_protocol(best))
    assert so_far.protocol_hash == s["protocol_hash"]


def test_stopped_search_resumes_and_matches_the_uninterrupted_run(uninterrupted, tmp_path):
    out_full, full = uninterrupted
    out = tmp_path / "resumed"
    first = run_search(SearchConfig(**TINY, max_steps=1), out, log=lambda s: None)
    assert first["n_steps"] == 1 and first["stop_reason"] == "max_steps"
    again = run_search(SearchConfig(**TINY, max_steps=2), out, log=lambda s: None)
    assert again["protocol_hash"] == full["protocol_hash"]
    assert [c["cycle"] for c in again["history"]] == [1, 2]
    for a, b in zip(again["history"], full["history"], strict=True):
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
    a = p.parse_args(["--out", str(out), "--scorer", "network", "--candidates=-120,-40,20",
                      "--n-cells", "200",
                      "--epochs", "4", "--seed", "3", "--network-overrides",
                      '{"width": 32, "patience": 3}', "--no-stop-when-no-improvement",
                      "--max-steps", "2", "--no-figure"])
    assert config_from_args(a) == SearchConfig(**TINY, max_steps=2)
    assert run_from_args(a)["protocol_hash"] == full["protocol_hash"]
    bad = subprocess.run([sys.executable, str(ROOT / "tune" / "protocol_search.py"), "--out",
                          str(out), "--n-cells", "5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "n_cells: Input should be greater than or equal to 20" \
        in bad.stderr


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
    assert comp["n_kept"] == comp["n_train"] + comp["n_val"] + comp["n_test"]


# ---- the Fisher score (the default scorer) ----------------------------------------------

FISHER = dict(candidates_mV=(-120.0, -80.0, -40.0, 0.0, 20.0, 40.0), fisher_cells=10, seed=5,
              stop_when_no_improvement=False)


def _info(protocol, unit, cfg):
    from cardiotwin.protocol_search.fisher import protocol_information

    return protocol_information(protocol, unit, spread=cfg.spread, fd_step=cfg.fd_step,
                                noise_pA_per_pF=cfg.noise_pA_per_pF, criterion=cfg.criterion)


def test_fisher_information_is_the_finite_difference_sensitivity_done_by_hand():
    """One base cell: J from 53 separate simulations equals the batched one; F = J^T J /
    sigma^2; pieces add (continuing the copies equals simulating the whole protocol)."""
    from cardiotwin.model import inputs_from_multipliers
    from cardiotwin.protocol_search.fisher import (
        SensitivityState,
        base_cells,
        piece_information,
        unit_to_multipliers,
    )

    cfg = SearchConfig(**FISHER)
    u = base_cells(cfg, n_cells=2)
    p1, p2 = cfg.cycle_protocol(-40.0), cfg.cycle_protocol(20.0)
    whole = p1.extended(p2.segments)
    kw = dict(spread=cfg.spread, fd_step=cfg.fd_step, noise_pA_per_pF=cfg.noise_pA_per_pF)
    one, _ = piece_information(SensitivityState.initial(u), whole, **kw)
    a, _ = piece_information(SensitivityState.initial(u), p1, **kw)
    b, _ = piece_information(a, p2, **kw)
    assert np.allclose(b.fisher, one.fisher, rtol=1e-10, atol=0)
    assert np.array_equal(b.state, one.state)
    base = simulate_voltage_clamp(whole, inputs_from_multipliers(
        unit_to_multipliers(u[:1], cfg.spread))).i_total[0].astype(float)
    jac = []
    for j in (0, 17, 51):
        uj = u[:1].copy()
        uj[0, j] += cfg.fd_step
        ij = simulate_voltage_clamp(whole, inputs_from_multipliers(
            unit_to_multipliers(uj, cfg.spread))).i_total[0].astype(float)
        jac.append((ij - base) / cfg.fd_step)
    jac = np.array(jac)
    by_hand = jac @ jac.T / cfg.noise_pA_per_pF ** 2
    idx = np.array([0, 17, 51])
    assert np.allclose(one.fisher[0][np.ix_(idx, idx)], by_hand, rtol=1e-6)
    assert np.allclose(one.fisher, np.swapaxes(one.fisher, 1, 2))


def test_fisher_score_ranks_an_informative_step_above_an_uninformative_one():
    """Known answers: a step to -100 mV after the -100 mV hold changes nothing (least
    information), INa and ICaL do not open at -120 mV but do at -20 mV, If opens at -120 mV
    and not at -40 mV; quadrupling the noise lowers every contraction."""
    from cardiotwin.protocol_search.fisher import base_cells

    cfg = SearchConfig(**FISHER)
    u = base_cells(cfg, n_cells=8)
    m = {v: _info(cfg.cycle_protocol(v), u, cfg) for v in (-120.0, -100.0, -40.0, -20.0)}
    assert m[-100.0]["score"] > max(m[v]["score"] for v in (-120.0, -40.0, -20.0))
    assert m[-120.0]["contraction_INa"] < 0.01 < 0.1 < m[-20.0]["contraction_INa"]
    assert m[-120.0]["contraction_ICaL"] + 0.2 < m[-20.0]["contraction_ICaL"]
    assert m[-120.0]["contraction_If"] > m[-40.0]["contraction_If"] + 0.05
    noisy = SearchConfig(**FISHER, noise_pA_per_pF=2.0)
    worse = _info(cfg.cycle_protocol(-20.0), u, noisy)
    assert worse["contraction"] < m[-20.0]["contraction"]
    assert all(worse[f"contraction_{g}"] <= m[-20.0][f"contraction_{g}"] + 1e-12
               for g in ("IK1", "IKr", "IKs", "ICaL", "INa", "If"))
    lo = _info(cfg.cycle_protocol(-20.0), u, SearchConfig(**FISHER, criterion="logdet"))
    assert lo["score"] == lo["logdet"] < 0 and lo["trace"] == pytest.approx(
        m[-20.0]["trace"])


@pytest.fixture(scope="module")
def fisher_search(tmp_path_factory):
    out = tmp_path_factory.mktemp("fisher") / "full"
    return out, run_search(SearchConfig(**FISHER, max_steps=3), out, figure=False,
                           log=lambda s: None)


def test_fisher_search_writes_its_protocol_and_resumes(fisher_search, tmp_path):
    out, s = fisher_search
    assert s["n_steps"] == 3 and s["stop_reason"] == "max_steps"
    p = load_protocol(out / "protocol.json")
    assert p.protocol_hash == s["protocol_hash"] and p.duration_ms == 1500.0
    hist = json.loads((out / "history.json").read_text())
    for c, step in zip(hist["cycles"], p.segments[1::2], strict=True):
        scores = [r["score"] for r in c["candidates"]]
        assert c["best_mV"] == FISHER["candidates_mV"][int(np.argmin(scores))]
        assert step.v_start_mV == c["best_mV"] and c["score_metric"] == "fisher_trace"
        assert all(r["n_unstable"] == 0 and 0 < r["contraction"] < 1 for r in c["candidates"])
    best = [c["best_score"] for c in hist["cycles"]]
    assert best == sorted(best, reverse=True)            # information only accumulates
    assert (out / "fisher_state.npz").is_file()
    # stopped after one cycle and resumed: the same protocol and scores
    part = tmp_path / "resumed"
    run_search(SearchConfig(**FISHER, max_steps=1), part, figure=False, log=lambda m: None)
    (part / "fisher_state.npz").unlink()                 # a lost checkpoint is recomputed
    again = run_search(SearchConfig(**FISHER, max_steps=3), part, figure=False,
                       log=lambda m: None)
    assert again["protocol_hash"] == s["protocol_hash"]
    assert [c["best_score"] for c in again["history"]] == pytest.approx(best, rel=1e-12)
    with pytest.raises(ValueError, match="another configuration .*fisher_cells"):
        run_search(SearchConfig(**{**FISHER, "fisher_cells": 11}), part, log=lambda m: None)


def test_searched_protocol_beats_the_naive_protocol_of_equal_length(fisher_search):
    """On a fresh population (other cells, more of them) the searched protocol leaves at
    least 5% less posterior variance than the naive protocol of the same length."""
    from cardiotwin.protocol_search.fisher import base_cells

    _, s = fisher_search
    cfg = SearchConfig(**FISHER)
    naive = naive_protocol(s["protocol"], cfg)
    assert naive.duration_ms == s["protocol"].duration_ms
    fresh = base_cells(cfg, n_cells=16, seed=99)
    searched, plain = _info(s["protocol"], fresh, cfg), _info(naive, fresh, cfg)
    assert searched["score"] < 0.95 * plain["score"], (searched["score"], plain["score"])
    assert searched["contraction"] > plain["contraction"] + 0.02


def test_scorer_options_and_identity():
    assert SearchConfig().scorer == "fisher"
    assert SearchConfig(scorer="network").identity().get("fisher_cells") is None
    assert SearchConfig(fisher_cells=50).config_hash() != SearchConfig().config_hash()
    p = argparse.ArgumentParser()
    add_search_arguments(p)
    a = p.parse_args(["--out", "x", "--fisher-cells", "30", "--noise-pa-per-pf", "1.5",
                      "--criterion", "logdet", "--fd-step", "0.01"])
    cfg = config_from_args(a)
    assert (cfg.fisher_cells, cfg.noise_pA_per_pF, cfg.criterion, cfg.fd_step) == \
        (30, 1.5, "logdet", 0.01)
    with pytest.raises(ValueError, match="fd_step"):
        SearchConfig.create(fd_step=0.5)
    with pytest.raises(ValueError, match="noise_pA_per_pF"):
        SearchConfig.create(noise_pA_per_pF=0)
