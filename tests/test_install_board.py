"""The board side installs on its own: the wheel with the [board] extra, in a fresh virtual environment without
TensorFlow, hls4ml or da4ml, serves a package on the emulated board; after requests have been answered none of
them is in sys.modules of the serving process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from paths import ROOT

HEAVY = ("tensorflow", "keras", "qkeras", "hls4ml", "da4ml", "numba")

DRIVER = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import httpx
    import numpy as np

    pkg, port = sys.argv[1], int(sys.argv[2])
    base = f"http://127.0.0.1:{port}"

    def client():
        try:
            for _ in range(600):
                try:
                    if httpx.get(base + "/v2/health/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            answered = 0
            outputs = []
            from lepton_host.manifest import load_manifest
            m = load_manifest(pkg)
            shape = list(m.inputs[0].shape)
            x = np.random.default_rng(0).normal(0, 1, (8, *shape)).astype(np.float32)
            body = {"inputs": [{"name": m.inputs[0].name, "shape": [8, *shape], "datatype": "FP32",
                                "data": x.ravel().tolist()}]}
            for _ in range(5):
                r = httpx.post(f"{base}/v2/models/{m.model.name}/infer", json=body, timeout=30)
                if r.status_code == 200:
                    answered += 1
                    outputs.append(r.json()["outputs"][0]["data"][:4])
            heavy = sorted(k for k in sys.modules if k.split(".")[0] in HEAVY)
            print(json.dumps({"answered": answered, "heavy": heavy, "outputs": outputs}), flush=True)
        finally:
            os._exit(0)

    HEAVY = %s
    threading.Thread(target=client, daemon=True).start()
    from lepton_hls.cli import main
    sys.exit(main(["serve", pkg, "--target", "emulated-board", "--port", str(port)]))
    """
) % (HEAVY,)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def board_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel and its [board] extra (the package registry is reached)."""
    root = tmp_path_factory.mktemp("board-venv")
    dist = root / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
                        "-w", str(dist)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(dist.glob("lepton_hls-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[board]"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"installing {wheel.name}[board] failed: {r.stderr[-2000:]}"
    return venv


def test_board_extra_has_no_build_toolchain(board_venv):
    r = subprocess.run([str(board_venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
                       capture_output=True, text=True, timeout=120, check=True)
    installed = {p["name"].lower() for p in json.loads(r.stdout)}
    assert {"pynq", "starlette", "uvicorn", "numpy"} <= installed
    assert not installed & {"tensorflow", "tensorflow-cpu", "hls4ml", "da4ml", "qkeras", "keras"}


def test_build_command_without_build_extra_says_which_extra(board_venv, tmp_path):
    r = subprocess.run([str(board_venv / "bin" / "lepton-hls"), "build", "jet_tagger", "--out", str(tmp_path / "p")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "lepton-hls[build]" in lines[0], r.stderr


def test_board_venv_serves_a_package_without_the_build_side(board_venv, jet_package, tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    r = subprocess.run([str(board_venv / "bin" / "python"), "-c", DRIVER, str(jet_package), str(port)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    report = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else None
    assert report is not None, r.stderr[-3000:]
    assert report["answered"] == 5, r.stderr[-3000:]
    assert report["heavy"] == [], f"the board process imported {report['heavy']}"


@pytest.mark.slow
def test_build_extra_outside_the_checkout_builds_overlays_and_rtl(tmp_path):
    """`pip install '.[build]'` (not editable) into a fresh environment, then build, overlay and rtl on a zoo
    model from a folder outside the checkout: nothing is read from the repository."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{ROOT}[build]"],
                       capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, r.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    cli = str(venv / "bin" / "lepton-hls")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for args in (["build", "anomaly_ae", "--out", "pkg", "--samples", "200"],
                 ["overlay", "pkg", "--board", "pynq-z2"],
                 ["rtl", "pkg", "--check-samples", "200", "--no-vhdl"]):
        r = subprocess.run([cli, *args], capture_output=True, text=True, timeout=3000, cwd=work, env=env)
        if args[0] == "overlay":  # no Vivado here: the project is written, then the missing tool is named
            assert (work / "pkg" / "overlay" / "lepton_overlay.tcl").is_file(), r.stderr[-2000:]
            continue
        assert r.returncode == 0, f"{args[0]}: {r.stderr[-2000:]}"
