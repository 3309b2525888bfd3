"""The ``cardiotwin`` command and the jobs/ and tune/ scripts: every subcommand builds and prints
its help (a stray % in a help text fails here rather than in a user's terminal), the scripts are
the same commands, user errors are one line and exit code 2, bugs are tracebacks, and
TensorFlow's start-up noise stays off stderr."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cardiotwin import cli
from cardiotwin.cli import build_parser, main, one_line
from cardiotwin.runtime.quiet import filter_noise, is_startup_noise

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
SCRIPTS = {  # script -> the subcommand it runs
    "jobs/drug_screen.py": "screen", "jobs/generate_population.py": "generate",
    "jobs/hybrid_fit.py": "hybrid fit", "jobs/reconstruct_pairs.py": "reconstruct-pairs",
    "jobs/train_model.py": "train", "tune/hyperparameters.py": "tune hyperparameters",
    "tune/protocol_search.py": "protocol-search", "tune/reconstruct.py": "tune reconstruct",
    "jobs/cipa.py": "cipa",
}


def _walk(parser: argparse.ArgumentParser, path=("cardiotwin",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))


def test_every_subcommand_has_help():
    seen = {}
    for path, parser in _walk(build_parser()):
        text = parser.format_help()
        assert text.startswith("usage:"), path
        seen[" ".join(path[1:])] = text
    for cmd in ("simulate vc", "simulate ap", "features", "demo", "generate", "store verify",
                "train", "twin", "screen", "protocol-search", "hybrid fit", "reconstruct",
                "reconstruct-pairs", "tune hyperparameters", "tune reconstruct"):
        assert cmd in seen, cmd


def test_every_script_is_listed():
    found = {str(p.relative_to(ROOT)) for d in ("jobs", "tune") for p in (ROOT / d).glob("*.py")
             if not p.name.startswith("_")}
    assert found == set(SCRIPTS)


def _script(path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / path), *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_help_is_the_cli_help(script):
    r = _script(script, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: cardiotwin {SCRIPTS[script]} "), r.stdout[:200]
    assert r.stderr == ""


def test_script_user_error_is_one_line_exit_2(tmp_path):
    r = _script("jobs/generate_population.py", "--n-cells", "0", "--out", str(tmp_path / "o"))
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cardiotwin: error: "), r.stderr
    assert "n_cells" in lines[0]
    assert not (tmp_path / "o").exists()


def test_entry_finds_the_source_checkout():
    import runpy

    entry = runpy.run_path(str(ROOT / "jobs" / "_entry.py"))
    assert (entry["PLATFORM"] / "cardiotwin" / "__init__.py").is_file()


def test_user_error_is_one_line_exit_2(tmp_path, capsys):
    rc = main(["simulate", "vc", "--protocol", str(tmp_path / "missing.csv"),
               "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("cardiotwin: error: ") and err.count("\n") == 1, err
    assert "missing.csv" in err
    assert not (tmp_path / "o.csv").exists()


def test_multi_line_message_is_joined():
    assert one_line(ValueError("a: bad\n  b: worse\n")) == "a: bad; b: worse"
    assert one_line(ValueError("")) == "ValueError"


def test_bug_is_a_traceback(monkeypatch, tmp_path):
    from cardiotwin.simulate import cli_args

    def broken(a):
        raise TypeError("a bug")

    monkeypatch.setattr(cli_args, "run_features", broken)
    with pytest.raises(TypeError, match="a bug"):
        main(["features", str(tmp_path / "t.csv")])


def test_interrupt_is_exit_130(monkeypatch, tmp_path, capsys):
    from cardiotwin.simulate import cli_args

    def interrupted(a):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_args, "run_features", interrupted)
    assert main(["features", str(tmp_path / "t.csv")]) == 130
    assert capsys.readouterr().err == "cardiotwin: interrupted\n"


def test_every_stage_registers_its_commands():
    for stage in cli.STAGES:
        module = importlib.import_module(f"cardiotwin.{stage}.cli_args")
        sub = argparse.ArgumentParser().add_subparsers()
        module.register(sub)
        assert sub.choices, stage
        for name, parser in sub.choices.items():
            leaves = [p for _, p in _walk(parser, (name,))
                      if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)]
            assert all(callable(p.get_default("func")) for p in leaves), (stage, name)


def test_simulate_vc_writes_the_csv(tmp_path, capsys):
    out = tmp_path / "vc.csv"
    proto = tmp_path / "p.csv"
    proto.write_text("duration_ms,v_start_mV,v_end_mV\n50,-80,-80\n50,0,0\n")
    assert main(["simulate", "vc", "--protocol", str(proto), "--out", str(out)]) == 0
    data = np.loadtxt(out, delimiter=",", skiprows=1)
    assert out.read_text().splitlines()[0] == "t_ms,v_mV,I_total"
    assert data.shape == (1000, 3)
    assert np.allclose(data[:500, 1], -80.0) and np.allclose(data[500:, 1], 0.0)
    assert np.isfinite(data[:, 2]).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "vc.csv"]  # no temporaries
    assert "wrote" in capsys.readouterr().out


def test_output_directory_must_exist(tmp_path, capsys):
    rc = main(["simulate", "ap", "--duration-ms", "10", "--out", str(tmp_path / "no" / "a.csv")])
    assert rc == 2 and "output directory does not exist" in capsys.readouterr().err


# ---- TensorFlow start-up noise ----------------------------------------------------------------

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796114791.323170    6117 port.cc:153] oneDNN custom operations are on.\n",
    "I0000 00:00:1796114791.323456    6117 cudart_stub.cc:31] Could not find cuda drivers\n",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild\n",
    "W0000 00:00:1796114791.4   6117 gpu_device.cc:2344] Cannot dlopen some GPU libraries.\n",
]
KEPT = [
    "E0000 00:00:1796114794.812985    6117 cuda_platform.cc:52] failed call to cuInit\n",
    "<string>:7: UserWarning: a real warning\n",
    "Traceback (most recent call last):\n",
    "INFO: something a library printed\n",
]


def test_noise_filter_drops_only_startup_noise():
    assert all(is_startup_noise(ln) for ln in NOISE)
    assert not any(is_startup_noise(ln) for ln in KEPT)
    assert filter_noise(NOISE[:2] + KEPT[:1] + NOISE[2:] + KEPT[1:]) == KEPT


def test_keras_import_is_quiet():
    code = ("import sys, warnings\n"
            "from cardiotwin.runtime.quiet import quiet_tensorflow\n"
            "quiet_tensorflow()\n"
            "import keras, numpy as np\n"
            "m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])\n"
            "m.predict(np.zeros((1, 2)), verbose=0)\n"
            "import tensorflow as tf\n"
            "assert type(tf.__spec__.loader).__name__ != '_QuietLoader'\n"
            "warnings.warn('kept')\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "UserWarning: kept" in lines[0], r.stderr  # nothing else
