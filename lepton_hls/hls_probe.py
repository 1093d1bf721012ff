"""Small C++ programs compiled against a written hls4ml project's own headers.

The C simulation's definitions (types, lookup tables, activation functions) answer questions about what the
hardware computes more reliably than any re-implementation: the engine exporter asks them here.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from lepton_host.errors import EmulationError

COMPILE_TIMEOUT_S = 600
RUN_TIMEOUT_S = 600


def firmware_dir(hls_model) -> Path:
    firmware = Path(hls_model.config.get_output_dir()).resolve() / "firmware"
    if not (firmware / "defines.h").is_file():
        raise EmulationError(f"{firmware}/defines.h is missing: write and compile the hls4ml project first")
    return firmware


@contextlib.contextmanager
def compiled(hls_model, body: str, what: str, optimize: str = "-O0"):
    """Compile `body` against the project's headers; yields the executable's path (removed afterwards)."""
    firmware = firmware_dir(hls_model)
    gxx = shutil.which("g++")
    if gxx is None:
        raise EmulationError(f"g++ not found on PATH: it is needed to read {what} from hls4ml's C++")
    with tempfile.TemporaryDirectory(prefix="lepton-probe-") as tmp:
        cpp, exe = Path(tmp) / "probe.cpp", Path(tmp) / "probe"
        cpp.write_text(body)
        cmd = [
            gxx, optimize, "-std=c++14", f"-I{firmware}", f"-I{firmware / 'ap_types'}",
            f'-DWEIGHTS_DIR="{firmware / "weights"}"', str(cpp), "-o", str(exe),
        ]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise EmulationError(f"compiling hls4ml's C++ for {what} took over {COMPILE_TIMEOUT_S} s") from None
        if r.returncode != 0:
            raise EmulationError(f"compiling hls4ml's C++ for {what} failed: {r.stderr.strip()[-800:]}")
        yield exe


def run(exe: Path, args: list[str], what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise EmulationError(f"reading {what} from hls4ml's C++ took over {RUN_TIMEOUT_S} s") from None


def compile_and_run(hls_model, body: str, what: str) -> str:
    """What a probe program prints."""
    with compiled(hls_model, body, what) as exe:
        r = run(exe, [], what)
        if r.returncode != 0:
            raise EmulationError(f"hls4ml's C++ for {what} exited with {r.returncode}: {r.stderr.strip()[-400:]}")
        return r.stdout


def layer_call(hls_model, layer_name: str) -> tuple[str, list[str]]:
    """The statement that computes `layer_name` in the project's top function, and the weight-loading
    statements of the arrays it passes (they load from text files in the C simulation)."""
    firmware = firmware_dir(hls_model)
    top = (firmware / f"{hls_model.config.get_project_name()}.cpp").read_text()
    m = re.search(rf"^\s*(nnet::[^\n]*\);)\s*//\s*{re.escape(layer_name)}\s*$", top, re.M)
    if not m:
        raise EmulationError(f"layer {layer_name!r}: its call is not found in hls4ml's generated top function")
    call = m.group(1)
    loads = [
        line.strip()
        for line in top.splitlines()
        if "load_weights_from_txt" in line
        and (arr := re.search(r"\((\w+),", line))
        and re.search(rf"\b{arr.group(1)}\b", call)
    ]
    return call, loads
