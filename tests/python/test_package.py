"""The installed package as a user meets it: the demo and info commands, the stubs and markers
that ship with it, every exported name documented with an example, the calibration docstring
examples runnable."""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys

import pytest

import otcal
import otcal.calibration


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otcal", *args], capture_output=True, text=True, timeout=300)


def test_demo_runs_and_reports_both_halves(seed):
    r = run_module("demo", "--n", "300", "--records", "3000", "--seed", str(seed % 1000), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "converged" in r.stdout and "NOT converged" not in r.stdout
    for line in ("marginals", "sparsify", "raking", "gradient"):
        assert line in r.stdout, r.stdout


def test_demo_rejects_a_bad_size():
    r = run_module("demo", "--n", "0")
    assert r.returncode != 0 and "n" in r.stderr


def test_info_is_json_describing_the_build():
    r = run_module("info")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info == otcal.system_info()
    assert info["cpu_threads"] >= 1 and info["host_memory_bytes"] > 0


def test_stubs_and_typing_marker_ship_with_the_package():
    folder = os.path.dirname(otcal.__file__)
    assert os.path.isfile(os.path.join(folder, "py.typed"))
    with open(os.path.join(folder, "_otcal.pyi"), encoding="utf-8") as fh:
        stub = fh.read()
    for name in ("class Context", "def system_info", "def data_address"):
        assert name in stub


def test_every_exported_name_exists_and_is_documented():
    for name in otcal.__all__:
        obj = getattr(otcal, name)
        assert obj.__doc__, name
    for name in otcal.calibration.__all__:
        doc = getattr(otcal, name).__doc__
        assert doc and "Example" in doc, name


def test_calibration_docstring_examples_run():
    pytest.importorskip("pandas")
    results = doctest.testmod(otcal.calibration, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert results.attempted > 5 and results.failed == 0
