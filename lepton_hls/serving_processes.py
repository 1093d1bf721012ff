"""`lepton-hls cloud` and `lepton-hls serve` as child processes on free loopback ports, for the demo and the
benchmarks: each server gets its own interpreter (and GIL), as it would in deployment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lepton_host.serving.errors import ServingError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], what: str, log_path: Path, timeout_s: float = 120.0) -> tuple[subprocess.Popen, str]:
    """`lepton-hls ARGS --port P` with its output in `log_path`; returns (process, URL) once it answers ready."""
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "lepton_hls.cli", *args, "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServingError(f"the {what} exited with status {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    stop_process(proc)
    raise ServingError(f"the {what} did not become ready within {timeout_s:.0f} s; see {log_path}")


def start_cloud_process(package_dir: Path, log_path: Path, model: str | None = None,
                        timeout_s: float = 120.0) -> tuple[subprocess.Popen, str]:
    """`lepton-hls cloud DIR [--model MODEL]`."""
    extra = ["--model", model] if model else []
    return start_server(["cloud", str(package_dir), *extra], "cloud server", log_path, timeout_s)


def start_gateway_process(package_dir: Path, log_path: Path, cloud_url: str | None, *extra: str,
                          timeout_s: float = 120.0) -> tuple[subprocess.Popen, str]:
    """`lepton-hls serve DIR --target emulator [--cloud URL] EXTRA...`."""
    cloud = ["--cloud", cloud_url] if cloud_url else []
    return start_server(["serve", str(package_dir), "--target", "emulator", *cloud, *extra], "gateway", log_path,
                        timeout_s)


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
