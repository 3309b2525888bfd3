"""Artefact-aware twins of real recordings, end to end from the command line (what
docs/rig-operator.md tells a lab to run), on cells recorded at several amplifier settings
(../shared/data/real-ipsc-vc: one directory per cell with vc_*.csv.gz recordings, optionally
ap_pre_spont.csv.gz, and cell_metadata_<cell>.csv beside them).

Per cell: ``cardiotwin protocol import`` (the command of its first recording) -> ``cardiotwin
generate --vc-artefacts --vc-metadata`` on it -> ``cardiotwin train`` -> ``cardiotwin twin`` of
every recording (with the recording's known compensation or prediction fraction from its name,
vc_rscomp_<X> or vc_rspre_<X>, and the AP recording when there is one). Then, per parameter:
the SD of the inferred multipliers across one cell's recordings over the prior's SD, and the
between-cell difference over the within-cell SD; the beating status, CL, APD90 and MDP of the
twin's AP against the recorded AP. Prints figures and writes them as JSON.

    python benchmarks/bench_real_vc.py [--data ../shared/data/real-ipsc-vc] [--cells 3000]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from cardiotwin.cli import main


def _run(args: list[str]) -> None:
    print("$ cardiotwin " + " ".join(args), flush=True)
    code = main(args)
    if code != 0:
        raise SystemExit(f"cardiotwin {args[0]} failed with exit code {code}")


def _settings(name: str) -> list[str]:
    """The amplifier setting a recording's name states (vc_rscomp_<X>: X% compensation,
    vc_rspre_<X>: X% prediction); the other fraction is left to the fit."""
    m = re.search(r"rs(comp|pre)_(\d+)", name)
    if not m:
        return []
    field = "compensation" if m.group(1) == "comp" else "prediction"
    return ["--vc-artefact", f"{field}={int(m.group(2)) / 100:g}"]


def bench_cell(cell: Path, meta: Path | None, work: Path, n_cells: int, epochs: int
               ) -> dict:
    recs = sorted(cell.glob("vc_*.csv*"))
    if not recs:
        raise SystemExit(f"{cell}: no vc_*.csv recordings")
    w = work / cell.name
    w.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _run(["protocol", "import", str(recs[0]), "--out", str(w / "protocol.json")])
    gen = ["generate", "--n-cells", str(n_cells), "--protocol", str(w / "protocol.json"),
           "--vc-artefacts", "--prior-preset", "real_ipsc", "--out", str(w / "pop"),
           "--no-progress"]
    if meta is not None:
        gen += ["--vc-metadata", str(meta)]
    _run(gen)
    t1 = time.perf_counter()
    _run(["train", str(w / "pop"), "--out", str(w / "model"), "--preset", "small_flow",
          "--epochs", str(epochs), "--input-noise-pA-per-pF", "0.5", "--overwrite"])
    t2 = time.perf_counter()
    ap = cell / "ap_pre_spont.csv.gz"
    twins = {}
    for rec in recs:
        stem = rec.name.split(".")[0]
        args = ["twin", str(rec), "--model", str(w / "model"), "--out",
                str(w / f"{stem}.json"), "--ap-duration-ms", "6000", *_settings(stem)]
        if meta is not None:
            args += ["--vc-metadata", str(meta)]
        if ap.is_file():
            args += ["--ap-recording", str(ap)]
        _run(args)
        twins[stem] = json.loads((w / f"{stem}.json").read_text())
    t3 = time.perf_counter()
    names = list(next(iter(twins.values()))["parameters"])
    m = np.array([[tw["parameters"][n]["multiplier"] for n in names] for tw in twins.values()])
    model_meta = json.loads((w / "model" / "metadata.json").read_text())
    bounds = model_meta["data"]["prior_bounds"]
    lo, hi, log = (np.array(bounds[k]) for k in ("low", "high", "log"))
    prior_sd = np.where(log, (np.log(hi) - np.log(lo)) / np.sqrt(12.0), (hi - lo) / np.sqrt(12))
    within = np.where(log, np.log(m).std(axis=0, ddof=1), m.std(axis=0, ddof=1))
    out = {"cell": cell.name, "n_recordings": len(twins), "names": names,
           "multipliers": {k: [tw["parameters"][n]["multiplier"] for n in names]
                           for k, tw in twins.items()},
           "within_sd_over_prior_sd": (within / prior_sd).tolist(),
           "median_within_over_prior": float(np.median(within / prior_sd)),
           "recording_quality": {k: tw.get("recording_quality") for k, tw in twins.items()},
           "fit_relative_rms_ideal": {k: tw["fit"].get("relative_rms")
                                      for k, tw in twins.items()},
           "status": {k: tw.get("status") for k, tw in twins.items()},
           "comparison": {k: tw.get("comparison") for k, tw in twins.items()},
           "wall_s": {"generate": t1 - t0, "train": t2 - t1, "twins": t3 - t2}}
    return out


def main_bench(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/real-ipsc-vc")
    p.add_argument("--cells", type=int, default=3000, help="population size per cell")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--work", default="out/bench_real_vc")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    data = Path(a.data)
    if not data.is_dir():
        print(f"{data}: no such directory (the shared real recordings)", file=sys.stderr)
        return 2
    results = []
    for cell in sorted(d for d in data.iterdir() if d.is_dir()):
        key = "_".join(cell.name.split("_")[1:3])  # 5_031221_2_alex_control -> 031221_2
        meta = next(iter(data.glob(f"cell_metadata_{key}*.csv")), None)
        results.append(bench_cell(cell, meta, Path(a.work), a.cells, a.epochs))
    summary: dict = {"cells": results}
    if len(results) >= 2:
        names = results[0]["names"]
        means = []
        sds = []
        for r in results:
            m = np.log(np.array(list(r["multipliers"].values())))
            means.append(m.mean(axis=0))
            sds.append(m.std(axis=0, ddof=1))
        between = np.abs(means[0] - means[1])
        within = np.sqrt(0.5 * (sds[0] ** 2 + sds[1] ** 2))
        ratio = within / np.maximum(between, 1e-12)
        summary["within_to_between"] = dict(zip(names, ratio.tolist(), strict=True))
        summary["median_within_to_between"] = float(np.median(ratio))
    for r in results:
        print(f"{r['cell']}: {r['n_recordings']} recordings; median within-cell SD / prior SD "
              f"{r['median_within_over_prior']:.3f}; statuses {sorted(set(r['status'].values()))}"
              f"; wall {r['wall_s']}")
        for k, q in r["recording_quality"].items():
            if q:
                e = q["estimates"]
                print(f"  {k}: leak {q['leak_conductance_nS']:.2f} nS, R_s {e['rs_MOhm']:.1f} "
                      f"MOhm, Cm {e['cm_pF']:.1f} pF, alpha {e['compensation']:.2f}, beta "
                      f"{e['prediction']:.2f}, offset {e['v_offset_mV']:.1f} mV, rel RMS "
                      f"{q['relative_rms']:.3f} (ideal clamp {q['relative_rms_ideal_clamp']:.3f})"
                      f"{' FLAG ' + q['reason'] if q['flag'] else ''}")
        comp = next((c for c in r["comparison"].values() if c), None)
        if comp:
            print("  AP twin vs recorded: " + ", ".join(
                f"{k} {v['twin']} vs {v['recorded']}" for k, v in comp.items()))
    if "median_within_to_between" in summary:
        print(f"median within-cell / between-cell spread: "
              f"{summary['median_within_to_between']:.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main_bench())
