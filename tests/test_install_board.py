"""The board side installs on its own: host/install.sh puts the wheel with its [board] extra into a fresh virtual
environment that holds the image's pynq, leaves that pynq as it was, and the result, without TensorFlow, hls4ml or
da4ml, serves a package on the emulated board; after requests have been answered none of them is in sys.modules
of the serving process."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from paths import ROOT

HEAVY = ("tensorflow", "keras", "qkeras", "hls4ml", "da4ml", "numba")
BUILD_TOOLCHAIN = {"tensorflow", "tensorflow-cpu", "keras", "qkeras", "hls4ml", "da4ml"}

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


def _locked(name: str) -> str:
    """The requirement line that requirements.lock gives `name` (e.g. "pynq==3.0.1")."""
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        req = line.split("#")[0].strip()
        if re.match(rf"{re.escape(name)}\b(?![-\w])", req):
            return req
    raise AssertionError(f"{name} is not in requirements.lock")


# pynq's files and version as the environment holds them: what the install must leave alone.
PYNQ_STATE = textwrap.dedent(
    """
    import importlib.metadata as md, json, os
    dist = md.distribution("pynq")
    files = {str(f): os.stat(dist.locate_file(f)).st_mtime_ns for f in dist.files}
    print(json.dumps({"version": dist.version, "files": files}))
    """
)


def _pynq_state(python: Path) -> dict:
    r = subprocess.run([str(python), "-c", PYNQ_STATE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def _skip_at_top(*names):
    return lambda folder, entries: [e for e in entries if (Path(folder) == ROOT and e in names) or e == "__pycache__"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of the checkout (a build in place leaves build/ in it)."""
    root = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, root / "src", symlinks=True,
                    ignore=_skip_at_top(".venv", ".git", "build", "dist", "out", "packages", ".pytest_cache"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        str(root / "src"), "-w", str(root / "dist")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return next((root / "dist").glob("lepton_hls-*.whl"))


def _install_env(python: Path, wheel: Path, tmp_path: Path) -> dict:
    return {
        "PATH": f"{python.parent}{os.pathsep}/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LEPTON_PYTHON": str(python),
        "LEPTON_WHEEL": str(wheel),
        "LEPTON_NOTEBOOK_DIR": str(tmp_path / "nb"),
        "LEPTON_PACKAGE_DIR": str(tmp_path / "packages"),
    }


@dataclass
class BoardVenv:
    venv: Path
    home: Path  # where the notebook and packages went
    pynq_before: dict  # _pynq_state before install.sh ran
    output: str  # install.sh's stdout


@pytest.fixture(scope="module")
def board_venv(tmp_path_factory, wheel, jet_package) -> BoardVenv:
    """A fresh virtual environment laid out like the PYNQ image (the locked pynq and numpy, from the package
    registry), then host/install.sh run on it with a package: lepton-hls and its [board] extra around that pynq."""
    root = tmp_path_factory.mktemp("board-venv")
    venv = root / "venv"
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    image = [_locked("pynq"), _locked("numpy"), _locked("pycparser")]
    r = subprocess.run([str(python), "-m", "pip", "install", "-q", *image], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, f"installing {image} failed: {r.stderr[-2000:]}"
    before = _pynq_state(python)
    r = subprocess.run(["bash", str(ROOT / "host" / "install.sh"), str(jet_package)],
                       env=_install_env(python, wheel, root), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"install.sh failed: {r.stdout[-2000:]}{r.stderr[-3000:]}"
    return BoardVenv(venv, root, before, r.stdout)


@pytest.mark.slow
def test_install_script_keeps_the_image_pynq(board_venv):
    pynq = _locked("pynq").split("==")[1]
    assert board_venv.pynq_before["version"] == pynq
    assert f"keeping the image's pynq {pynq}" in board_venv.output
    after = _pynq_state(board_venv.venv / "bin" / "python")
    assert after["version"] == pynq
    assert after["files"] == board_venv.pynq_before["files"]  # not one file rewritten


@pytest.mark.slow
def test_install_script_installs_the_cli_the_notebook_and_the_packages(board_venv, jet_package, tmp_path):
    out = board_venv.output
    assert "artifacts verified" in out and "lepton_host installed in" in out
    assert str(board_venv.venv) in out.split("lepton_host installed in", 1)[1].splitlines()[0]
    assert (board_venv.home / "nb" / "lepton_quickstart.ipynb").is_file()
    assert (board_venv.home / "packages" / jet_package.name / "manifest.json").is_file()
    cli = board_venv.venv / "bin" / "lepton-hls"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    r = subprocess.run([str(cli), "--version"], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    # The installed command predicts on the emulated board with the image's pynq, bit for bit the package's engine.
    x = np.random.default_rng(3).uniform(-2, 2, (6, 16))
    np.save(tmp_path / "x.npy", x)
    pkg = board_venv.home / "packages" / jet_package.name
    r = subprocess.run([str(cli), "predict", str(pkg), "--input", str(tmp_path / "x.npy"), "--target",
                        "emulated-board", "--output", str(tmp_path / "y.npy")], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    from lepton_host.backends import EmulatorBackend

    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), EmulatorBackend(jet_package).predict(x))
    # and describes the package, its golden vectors run on the emulator there
    r = subprocess.run([str(cli), "info", str(pkg), "--json"], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout)
    assert info["model"] == "jet_tagger" and info["self_test"].startswith("passed")


def test_install_script_dry_run_would_leave_pynq_and_numpy_alone(wheel, tmp_path):
    """In this (test) environment, which holds the locked pynq: pip's plan installs lepton-hls and nothing of
    the image. Nothing is installed."""
    python = Path(sys.executable)
    r = subprocess.run(["bash", str(ROOT / "host" / "install.sh"), "--dry-run"],
                       env=_install_env(python, wheel, tmp_path), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"keeping the image's pynq {_locked('pynq').split('==')[1]}" in r.stdout
    plan = [line for line in r.stdout.splitlines() if line.startswith("Would install ")]
    assert len(plan) == 1, r.stdout[-3000:]
    names = {re.sub(r"-[^-]+$", "", d).lower() for d in plan[0].removeprefix("Would install ").split()}
    assert "lepton-hls" in names and not names & {"pynq", "numpy"}, plan
    assert not (tmp_path / "nb").exists() and not (tmp_path / "packages").exists()


@pytest.mark.slow
def test_board_extra_has_no_build_toolchain(board_venv):
    r = subprocess.run([str(board_venv.venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
                       capture_output=True, text=True, timeout=120, check=True)
    installed = {p["name"].lower() for p in json.loads(r.stdout)}
    assert {"pynq", "starlette", "uvicorn", "numpy"} <= installed
    assert not installed & BUILD_TOOLCHAIN


@pytest.mark.slow
def test_build_command_without_build_extra_says_which_extra(board_venv, tmp_path):
    cli = board_venv.venv / "bin" / "lepton-hls"
    r = subprocess.run([str(cli), "build", "jet_tagger", "--out", str(tmp_path / "p")], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "lepton-hls[build]" in lines[0], r.stderr


@pytest.mark.slow
def test_board_venv_serves_a_package_without_the_build_side(board_venv, jet_package, tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    r = subprocess.run([str(board_venv.venv / "bin" / "python"), "-c", DRIVER, str(jet_package), str(port)],
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


# ---- the [board] extra, read from pyproject.toml (default suite; the fresh environment above is slow) ---------
def _dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(*extras: str) -> set[str]:
    """The distributions that `pip install lepton-hls[<extras>]` brings: the core and those extras'
    requirements and, through the ones installed here, theirs (without their own extras)."""
    import importlib.metadata as md
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        todo += [Requirement(r) for r in project["optional-dependencies"][extra]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = _dist(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(req.name) or []
        except md.PackageNotFoundError:
            continue
        todo += [r for r in map(Requirement, requires) if not (r.marker and "extra" in str(r.marker))]
    return seen


def _is_grpc_module(path: Path) -> bool:
    """The protocol over gRPC lives in serving/grpc_*: the [grpc] extra's, loaded only behind --grpc-port."""
    rel = path.relative_to(ROOT / "host" / "lepton_host")
    return rel.parts[0] == "serving" and rel.parts[1].startswith("grpc_")


def _board_side_imports(grpc: bool = False) -> set[str]:
    """Top-level modules outside the standard library that host/lepton_host imports, except under a
    `try: ... except ImportError` (optional); with grpc=True those of the [grpc] extra's modules, otherwise
    those of the rest."""
    import ast

    found: set[str] = set()
    for path in (ROOT / "host" / "lepton_host").rglob("*.py"):
        if _is_grpc_module(path) != grpc:
            continue
        tree = ast.parse(path.read_text())
        optional = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try)
                    and any("ImportError" in ast.unparse(h.type or ast.Name("")) for h in t.handlers)
                    for stmt in t.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "lepton_host"}


def _module_level_imports_of_grpc_modules() -> list[str]:
    """Modules outside serving/grpc_* that import one of them at module level: a board without [grpc] could not
    load them."""
    import ast

    found = []
    for path in (ROOT / "host" / "lepton_host").rglob("*.py"):
        if _is_grpc_module(path):
            continue
        for node in ast.parse(path.read_text()).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] in {"grpc", "google"} or ".grpc_" in "." + n for n in names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def _not_brought(imports: set[str], closure: set[str]) -> dict[str, list[str] | None]:
    """The imports no distribution in `closure` provides, with the distributions that do provide them here."""
    import importlib.metadata as md

    providers = md.packages_distributions()
    return {m: providers.get(m) for m in imports if not {_dist(d) for d in providers.get(m, [])} & closure}


def test_board_extra_provides_every_board_side_import_and_no_build_toolchain():
    closure = _closure("board")
    assert not closure & BUILD_TOOLCHAIN, sorted(closure & BUILD_TOOLCHAIN)
    imports = _board_side_imports()
    assert {"numpy", "pynq", "starlette", "httpx"} <= imports  # the scan sees the board side's imports
    missing = _not_brought(imports, closure)
    assert not missing, f"imported by host/lepton_host, not brought by lepton-hls[board]: {missing}"


def test_grpc_extra_provides_the_grpc_front_s_imports_and_the_board_side_loads_without_it():
    closure = _closure("board", "grpc")
    assert not closure & BUILD_TOOLCHAIN, sorted(closure & BUILD_TOOLCHAIN)
    imports = _board_side_imports(grpc=True)
    assert {"grpc", "google"} <= imports  # the scan sees the gRPC front's imports
    missing = _not_brought(imports, closure)
    assert not missing, f"imported by lepton_host.serving.grpc_*, not brought by lepton-hls[board,grpc]: {missing}"
    assert not _module_level_imports_of_grpc_modules(), "load the gRPC front lazily, behind --grpc-port"
