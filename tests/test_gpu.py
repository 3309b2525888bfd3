"""Tests of the GPU simulator (cardiotwin.simulate.cuda).

(a) Under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, which must be set before numba.cuda
    is imported, hence a subprocess: this file run as a script) on a handful of cells and short
    protocols: the GPU kernels give the CPU path's I_total / V (relative RMS <= 1e-9) and match
    the authors' reference (tests/data) as the CPU path does. The simulator runs the kernels'
    Python on the CPU and the shared equations as CPU-compiled numba functions, so this checks
    the kernels' stepping, recording, decimation, chunking and instability handling, not the
    CUDA compilation.
(b) On a real GPU (skipped with the reason when ``gpu_available()`` is False): the same
    comparisons on compiled CUDA code, at larger batches.
(c) Without any GPU: the module imports without Ray/TensorFlow, says no GPU, and refuses to
    run with a clear message.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import read_columns, rel_rms

DATA = Path(__file__).parent / "data"
TOL = 1e-9  # relative RMS, GPU vs CPU path (float64 inside both)
ITOTAL_REF_TOL = 0.01  # as tests/test_simulator.py: measured 0.22 / 0.10 / 0.27 %
SHORT_SEGMENTS = [(200, -80, -80), (100, -120, -120), (100, 40, 40), (100, -20, -20),
                  (100, -80, 37), (200, -40, -40)]  # steps, a ramp through 0 mV, 800 ms
CC_MS = 1000.0
BAD_VC = {"scale_Vmax_up": 1e4}   # NaN in voltage clamp (tests/test_simulator.py)
BAD_CC = {"scale_k_NaCa": 1e4}    # unstable in current clamp (and in voltage clamp)






def reference_inputs() -> np.ndarray:
    from cardiotwin.model import BASELINE, inputs_from_named, read_multipliers_csv

    return np.stack([BASELINE.copy()] + [
        inputs_from_named(read_multipliers_csv(DATA / f"{c}_multipliers.csv"))
        for c in ("set1", "set2")])


def seven_cells() -> np.ndarray:
    """3 reference cells, 2 random ones, one that blows up in VC, one in CC."""
    from cardiotwin.model import BASELINE, inputs_from_multipliers
    from cardiotwin.model.parameters import PARAMETER_INDEX
    from cardiotwin.population import sample_multipliers

    rand = inputs_from_multipliers(sample_multipliers(2, seed=7))
    bad = []
    for change in (BAD_VC, BAD_CC):
        x = BASELINE.copy()
        for k, v in change.items():
            x[PARAMETER_INDEX[k]] *= v
        bad.append(x)
    return np.concatenate([reference_inputs(), rand, np.stack(bad)])




def compare(gpu, cpu) -> dict:
    """Largest error over the cells whose CPU trace is finite (relative RMS; the largest
    absolute value where the CPU trace is all zero), ``n`` such cells, and whether the NaN
    patterns agree. No finite cell: the error is inf (nothing was compared, never a pass)."""
    gpu, cpu = np.asarray(gpu, float), np.asarray(cpu, float)
    same_nan = bool(np.array_equal(np.isnan(gpu), np.isnan(cpu)))
    errs = [rel_rms(g, c) if np.any(c) else float(np.max(np.abs(g)))
            for g, c in zip(gpu, cpu, strict=True) if np.isfinite(c).all()]
    return {"same_nan": same_nan, "max_rel_rms": max(errs) if errs else math.inf,
            "n": len(errs)}


def test_compare_never_passes_without_a_finite_cell():
    nan = np.full((2, 4), np.nan)
    assert compare(nan, nan) == {"same_nan": True, "max_rel_rms": math.inf, "n": 0}
    zero = np.zeros((1, 4))
    assert compare(zero + 0.5, zero)["max_rel_rms"] == 0.5        # zero reference: absolute
    assert compare(np.ones((1, 4)) * 1.01, np.ones((1, 4)))["max_rel_rms"] == \
        pytest.approx(0.01)


def final_err(gpu, cpu) -> float:
    ok = np.isfinite(cpu)
    return float(np.max(np.abs(gpu[ok] - cpu[ok]) / np.maximum(np.abs(cpu[ok]), 1e-12)))


# ----------------------------------------------------------------------------- the worker

def simulator_worker(out_path: str) -> None:
    """Run in a subprocess with NUMBA_ENABLE_CUDASIM=1: CPU and (simulated) GPU on the same
    cells; writes a JSON of comparisons."""
    from cardiotwin.protocols import Protocol, builtin_protocol
    from cardiotwin.simulate import Pacing, simulate_current_clamp, simulate_voltage_clamp
    from cardiotwin.simulate import cuda as g

    res = {"backend": g.backend(), "gpu_available": g.gpu_available()}
    x = seven_cells()
    short = Protocol(SHORT_SEGMENTS)
    # voltage clamp with currents, in launches of 3 cells (chunking) and in one launch
    c = simulate_voltage_clamp(short, x, record_currents=True)
    gv = g.simulate_voltage_clamp_gpu(short, x, record_currents=True, max_cells_per_launch=3)
    res["vc"] = compare(gv.i_total, c.i_total)
    res["vc_currents"] = max(compare(gv.currents[k], c.currents[k])["max_rel_rms"]
                             for k in c.currents)
    res["vc_unstable"] = [gv.unstable.tolist(), c.unstable.tolist()]
    res["vc_final"] = final_err(gv.final_state, c.final_state)
    res["vc_final_nan_same"] = bool(np.array_equal(np.isnan(gv.final_state),
                                                   np.isnan(c.final_state)))
    res["vc_shapes"] = [list(gv.i_total.shape), list(c.i_total.shape), str(gv.i_total.dtype)]
    res["vc_time_same"] = bool(np.array_equal(gv.t_ms, c.t_ms)
                               and np.array_equal(gv.v_mV, c.v_mV))
    one = g.simulate_voltage_clamp_gpu(short, x[:5], record_currents=False)
    res["vc_chunking_identical"] = bool(np.array_equal(one.i_total, gv.i_total[:5]))
    dec = g.simulate_voltage_clamp_gpu(short, x[:5], decimate=7)
    res["vc_decimate"] = compare(dec.i_total, c.i_total[:5, ::7])
    res["vc_decimate_axes"] = bool(np.array_equal(dec.t_ms, c.t_ms[::7])
                                   and np.array_equal(dec.v_mV, c.v_mV[::7]))
    # the reference cells on protocol_a against the authors' implementation
    ga = g.simulate_voltage_clamp_gpu(builtin_protocol("protocol_a"), x[:3])
    res["vc_reference"] = [rel_rms(ga.i_total[k], read_columns(
        DATA / f"sim_{cell}_vc_protocol_a.csv.gz")["I_total"])
        for k, cell in enumerate(("baseline", "set1", "set2"))]
    # current clamp: free-running, with an unstable cell
    cc = simulate_current_clamp(CC_MS, x)
    gc = g.simulate_current_clamp_gpu(CC_MS, x, max_cells_per_launch=4)
    res["cc_v"] = compare(gc.v_mV, cc.v_mV)
    res["cc_cai"] = compare(gc.cai_mM, cc.cai_mM)
    res["cc_unstable"] = [gc.unstable.tolist(), cc.unstable.tolist()]
    res["cc_final"] = final_err(gc.final_state, cc.final_state)
    res["cc_time_same"] = bool(np.array_equal(gc.t_ms, cc.t_ms))
    d = g.simulate_current_clamp_gpu(CC_MS, x[:5], decimate=10, record_cai=False)
    res["cc_decimate"] = compare(d.v_mV, cc.v_mV[:5, ::10])
    res["cc_decimate_t"] = bool(np.array_equal(d.t_ms, cc.t_ms[::10])) and d.cai_mM is None
    # paced, with pre-pacing (the stimulus and the two-run path)
    pace = Pacing(period_ms=400.0)
    cp = simulate_current_clamp(600.0, x[:3], pacing=pace, prepace_ms=400.0)
    gp = g.simulate_current_clamp_gpu(600.0, x[:3], pacing=pace, prepace_ms=400.0)
    res["cc_paced"] = compare(gp.v_mV, cp.v_mV)
    # spontaneous beating for 6 s against the reference (baseline), as test_simulator does
    from cardiotwin.features import analyze_trace, load_trace_csv

    gs = g.simulate_current_clamp_gpu(6000.0, x[:1], record_cai=False)
    t_ref, v_ref = load_trace_csv(DATA / "sim_baseline_spontaneous_6s.csv.gz")
    sim, ref = analyze_trace(gs.t_ms, gs.v_mV[0]), analyze_trace(t_ref, v_ref)
    res["spont"] = {"status": [sim.status, ref.status],
                    "peaks": [[b.peak_time_ms for b in sim.beats],
                              [b.peak_time_ms for b in ref.beats]],
                    "apd90": [sim.apd90_ms, ref.apd90_ms]}
    # the population pipeline's batch (simulate_batch) on the GPU path
    try:
        from cardiotwin.population.generate import simulate_batch
    except ImportError as e:  # the GPU machine has no pydantic / pyarrow
        res["batch"] = {"skipped": str(e)}
    else:
        m = np.random.default_rng(5).uniform(0.6, 1.4, (4, 52)).astype(np.float32)
        sc, _, ic, _ = simulate_batch(short, m, 1000.0, 310.0, 10, "mean", device="cpu")
        sg, _, ig, _ = simulate_batch(short, m, 1000.0, 310.0, 10, "mean", device="gpu")
        res["batch"] = {"statuses": [sg.tolist(), sc.tolist()], "itot": compare(ig, ic)}
    Path(out_path).write_text(json.dumps(res))


def ray_simulator_worker(out_path: str, tmp: str) -> None:
    """Population generation on a local Ray with a (logical) GPU, the GPU actor running the
    kernels in the CUDA simulator, against the CPU simulation of the same cells."""
    import pyarrow.parquet as pq
    import ray

    from cardiotwin.population import GenerationConfig, generate_population
    from cardiotwin.population.generate import simulate_batch
    from cardiotwin.protocols import Protocol

    proto = Protocol([(50, -80, -80), (50, 20, 20)])
    path = Path(tmp) / "p.json"
    path.write_text(proto.to_json())
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)
    cfg = GenerationConfig(n_cells=6, seed=2, protocol=str(path), ap_duration_ms=600.0,
                           keep_rejected=True, shard_size=6, out_dir=Path(tmp) / "gpu",
                           device="auto")
    st = generate_population(cfg, progress=False, echo=None,
                             actor_env={"NUMBA_ENABLE_CUDASIM": "1"})
    ray.shutdown()
    t = pq.read_table(sorted((Path(tmp) / "gpu").glob("*.parquet"))).to_pydict()
    m = np.array(t["multipliers"], np.float32)
    sc, _, ic, _ = simulate_batch(cfg.load_protocol(), m, cfg.ap_ms, cfg.temperature_K)
    res = {"run_device": st.manifest["runs"][-1].get("device"),
           "shard_device": json.loads((Path(tmp) / "gpu" / "shard-000000.json").read_text())
           .get("device"),
           "hash_same": st.manifest["config_hash"] == cfg.model_copy(
               update={"device": "cpu"}).config_hash(proto.protocol_hash),
           "ids": t["cell_id"], "status": [t["status"], sc.tolist()],
           "itot": compare(np.array(t["I_total"], float), ic)}
    Path(out_path).write_text(json.dumps(res))


# ----------------------------------------------------------------------------- (a) simulator

@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "sim.json"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    pkg = Path(__file__).resolve().parent.parent / "platform"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pkg), env.get("PYTHONPATH")]))
    p = subprocess.run([sys.executable, __file__, "--simulator-worker", str(out)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow  # the CUDA simulator: ~30 s for the shared fixture
def test_simulator_is_used_and_is_not_a_gpu(sim):
    assert sim["backend"] == "simulator" and sim["gpu_available"] is False


@pytest.mark.slow  # the CUDA simulator: ~30 s for the shared fixture
def test_sim_voltage_clamp_equals_cpu(sim):
    assert sim["vc_shapes"][0] == sim["vc_shapes"][1] and sim["vc_shapes"][2] == "float32"
    assert sim["vc"]["n"] == 5 and sim["vc"]["same_nan"], sim["vc"]
    assert sim["vc"]["max_rel_rms"] <= TOL, sim["vc"]
    assert sim["vc_currents"] <= TOL
    assert sim["vc_final"] <= TOL and sim["vc_final_nan_same"]
    assert sim["vc_time_same"]


@pytest.mark.slow  # the CUDA simulator: ~30 s for the shared fixture
def test_sim_unstable_cells_flagged_as_on_cpu(sim):
    for key in ("vc_unstable", "cc_unstable"):  # both bad cells fail in both modes
        g, c = sim[key]
        assert g == c == [False] * 5 + [True, True], key


@pytest.mark.slow  # the CUDA simulator: ~30 s for the shared fixture
def test_sim_chunking_and_decimation(sim):
    assert sim["vc_chunking_identical"]
    assert sim["vc_decimate"]["max_rel_rms"] <= TOL and sim["vc_decimate_axes"]
    assert sim["cc_decimate"]["max_rel_rms"] <= TOL and sim["cc_decimate_t"]


@pytest.mark.slow  # the CUDA simulator: ~30 s for the shared fixture
def test_sim_vc_matches_reference(sim):
    errs = sim["vc_reference"]
    assert max(errs) <= ITOTAL_REF_TOL, errs


@pytest.mark.slow  # the CUDA simulator: ~30 s for the shared fixture
def test_sim_current_clamp_equals_cpu(sim):
    for key in ("cc_v", "cc_cai", "cc_paced"):
        assert sim[key]["same_nan"] and sim[key]["max_rel_rms"] <= TOL, (key, sim[key])
    assert sim["cc_v"]["n"] == 5
    assert sim["cc_final"] <= TOL and sim["cc_time_same"]


@pytest.mark.slow  # the CUDA simulator: ~30 s for the shared fixture
def test_sim_spontaneous_beating_matches_reference(sim):
    s = sim["spont"]
    assert s["status"] == ["ok", "ok"]
    ps, pr = map(np.array, s["peaks"])
    assert ps.size == pr.size >= 5
    np.testing.assert_allclose(ps, pr, rtol=0.01)
    assert s["apd90"][0] == pytest.approx(s["apd90"][1], rel=0.02)


@pytest.mark.slow  # the CUDA simulator: ~30 s for the shared fixture
def test_sim_population_batch_equals_cpu(sim):
    b = sim["batch"]
    if "skipped" in b:
        pytest.skip(b["skipped"])
    assert b["statuses"][0] == b["statuses"][1]
    assert b["itot"]["same_nan"] and b["itot"]["max_rel_rms"] <= TOL, b


@pytest.mark.slow
def test_population_on_gpu_actors_in_simulator(tmp_path):
    """generate_population with device auto on a Ray cluster that has a GPU: a GPU actor (the
    kernels in the simulator) writes the cells, statuses and (to rounding) I_total that the
    CPU simulation gives, under the config hash of a CPU run."""
    pytest.importorskip("ray")
    pytest.importorskip("pydantic")
    out = tmp_path / "ray.json"
    env = dict(os.environ)
    pkg = Path(__file__).resolve().parent.parent / "platform"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pkg), env.get("PYTHONPATH")]))
    env.pop("RAY_ADDRESS", None)
    p = subprocess.run([sys.executable, __file__, "--ray-simulator-worker", str(out),
                        str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["run_device"] == "gpu" and r["shard_device"] == "gpu" and r["hash_same"]
    assert r["ids"] == list(range(6)) and r["status"][0] == r["status"][1], r
    assert r["itot"]["same_nan"] and r["itot"]["max_rel_rms"] <= TOL, r


def test_device_resolution():
    pytest.importorskip("pydantic")
    from cardiotwin.population import GenerationConfig
    from cardiotwin.population.generate import resolve_device

    assert resolve_device("auto", 0) == "cpu" and resolve_device("auto", 2) == "gpu"
    assert resolve_device("cpu", 4) == "cpu" and resolve_device("gpu", 1) == "gpu"
    with pytest.raises(ValueError, match="requested but the Ray cluster has no GPU"):
        resolve_device("gpu", 0)
    a = GenerationConfig(n_cells=10, out_dir="x")
    b = GenerationConfig(n_cells=10, out_dir="x", device="gpu")
    assert a.device == "auto" and a.config_hash("h") == b.config_hash("h")
    with pytest.raises(ValueError):
        GenerationConfig(n_cells=10, out_dir="x", device="tpu")


# ----------------------------------------------------------------------------- (c) no GPU

def test_import_without_ray_tensorflow_and_no_gpu_message():
    code = ("import sys; sys.modules['ray'] = None; sys.modules['tensorflow'] = None\n"
            "import cardiotwin.simulate.cuda as g\n"
            "from cardiotwin.protocols import Protocol\n"
            "assert 'ray' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
            "print(g.gpu_available(), g.backend())\n"
            "if not g.gpu_available():\n"
            "    try:\n"
            "        g.simulate_voltage_clamp_gpu(Protocol([(10, -80, -80)]))\n"
            "    except RuntimeError as e:\n"
            "        print('refused:', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    first = p.stdout.splitlines()[0]
    if first.startswith("False"):
        assert "refused: no CUDA GPU available" in p.stdout, p.stdout


# ----------------------------------------------------------------------------- (b) real GPU

def _gpu():
    from cardiotwin.simulate import cuda as g

    if not g.gpu_available():
        pytest.skip(f"no CUDA GPU (numba CUDA backend: {g.backend()}); these tests run on a "
                    "GPU machine with numba-cuda")
    return g


def test_gpu_voltage_clamp_equals_cpu_and_reference():
    g = _gpu()
    from cardiotwin.protocols import builtin_protocol
    from cardiotwin.simulate import simulate_voltage_clamp

    x = seven_cells()
    proto = builtin_protocol("protocol_a")
    c = simulate_voltage_clamp(proto, x, record_currents=True)
    gv = g.simulate_voltage_clamp_gpu(proto, x, record_currents=True)
    r = compare(gv.i_total, c.i_total)
    assert r["same_nan"] and r["max_rel_rms"] <= TOL, r
    assert gv.unstable.tolist() == c.unstable.tolist()
    for k, cell in enumerate(("baseline", "set1", "set2")):
        ref = read_columns(DATA / f"sim_{cell}_vc_protocol_a.csv.gz")["I_total"]
        assert rel_rms(gv.i_total[k], ref) <= ITOTAL_REF_TOL


def test_gpu_current_clamp_equals_cpu():
    g = _gpu()
    from cardiotwin.simulate import simulate_current_clamp

    x = seven_cells()
    c = simulate_current_clamp(2000.0, x)
    gc = g.simulate_current_clamp_gpu(2000.0, x)
    r = compare(gc.v_mV, c.v_mV)
    assert r["same_nan"] and r["max_rel_rms"] <= TOL, r
    assert gc.unstable.tolist() == c.unstable.tolist()


def test_gpu_batch_of_many_cells_equals_cpu_and_launches():
    g = _gpu()
    from cardiotwin.model import inputs_from_multipliers
    from cardiotwin.population import sample_multipliers
    from cardiotwin.protocols import Protocol
    from cardiotwin.simulate import simulate_voltage_clamp

    x = inputs_from_multipliers(sample_multipliers(1000, seed=3))
    short = Protocol(SHORT_SEGMENTS)
    c = simulate_voltage_clamp(short, x)
    whole = g.simulate_voltage_clamp_gpu(short, x)
    parts = g.simulate_voltage_clamp_gpu(short, x, max_cells_per_launch=300)
    np.testing.assert_array_equal(whole.i_total, parts.i_total)
    r = compare(whole.i_total, c.i_total)
    assert r["same_nan"] and r["max_rel_rms"] <= TOL, r


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--simulator-worker":
        simulator_worker(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "--ray-simulator-worker":
        ray_simulator_worker(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: test_gpu.py --simulator-worker OUT.json (run by pytest)")
