"""Triton's perf_analyzer against the edge gateway, the cloud server and the raw-ASGI OIP floor
(benchmarks/oip_floor.py), each in its own process on a free loopback port, measured interleaved: for every
(protocol, batch, concurrency) the three servers take turns, so drift on a shared machine lands on all of them.

    python benchmarks/perf_analyzer.py [--package out/bench/jet] [--batches 1 16] [--concurrency 1 4 16]

perf_analyzer 2.51 runs from a scratch virtual environment outside the project's own (default
out/bench/perf-venv, never committed), built on first use: `tritonclient[http]==2.51.0` (its wheel carries
bin/perf_analyzer) and `nvidia-cuda-runtime-cu12` from PyPI, and Debian's libb64 fetched with `apt-get download`.
When it cannot be built the script says what to run by hand. The package is built when missing
(`lepton-hls build jet_tagger --out DIR --samples 300`). gRPC is measured when `lepton-hls serve` and `cloud`
have a `--grpc-port` (the floor speaks HTTP only).

Prints infer/s, p50 and p99 per server and the gateway/floor ratio; writes benchmarks/results/perf_analyzer.json.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
DEFAULT_VENV = REPO / "out" / "bench" / "perf-venv"
DEFAULT_PACKAGE = REPO / "out" / "bench" / "jet"
PERF_PACKAGES = ("tritonclient[http]==2.51.0", "nvidia-cuda-runtime-cu12")
LIBB64 = "libb64-0d"


class PerfToolUnavailable(RuntimeError):
    """perf_analyzer cannot be set up here; the message says what to run by hand."""


def _instructions(venv: Path) -> str:
    return (f"to set it up by hand: {sys.executable} -m venv {venv} && {venv}/bin/pip install "
            f"{' '.join(repr(p) for p in PERF_PACKAGES)}; then (cd {venv} && apt-get download {LIBB64} && "
            f"dpkg-deb -x {LIBB64}_*.deb libb64)")


# ---- perf_analyzer itself -----------------------------------------------------------------------------------
@dataclass
class PerfTool:
    binary: Path
    env: dict

    def version(self) -> str:
        r = subprocess.run([str(self.binary), "--version"], env=self.env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise PerfToolUnavailable(f"{self.binary} --version failed: {(r.stdout + r.stderr).strip()[-300:]}")
        return (r.stdout + r.stderr).strip()


def perf_tool(venv: Path = DEFAULT_VENV, log=print) -> PerfTool:
    """perf_analyzer from `venv`, built there first when missing. Raises PerfToolUnavailable."""
    binary = venv / "bin" / "perf_analyzer"
    if not binary.exists():
        log(f"setting up perf_analyzer in {venv} (pip: {', '.join(PERF_PACKAGES)}) ...")
        try:
            if not (venv / "bin" / "pip").exists():
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, text=True,
                               timeout=300)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *PERF_PACKAGES], check=True,
                           capture_output=True, text=True, timeout=1800)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            detail = getattr(e, "stderr", "") or str(e)
            raise PerfToolUnavailable(f"could not install perf_analyzer: {detail.strip()[-400:]}; "
                                      f"{_instructions(venv)}") from None
        if not binary.exists():
            raise PerfToolUnavailable(f"tritonclient installed but {binary} is missing; {_instructions(venv)}")
    libb64 = venv / "libb64" / "usr" / "lib" / "x86_64-linux-gnu"
    if not (libb64 / "libb64.so.0d").exists():
        _fetch_libb64(venv / "libb64", log, venv)
    cudart = glob.glob(str(venv / "lib" / "python*" / "site-packages" / "nvidia" / "cuda_runtime" / "lib"))
    if not cudart:
        raise PerfToolUnavailable(f"nvidia-cuda-runtime-cu12 is missing from {venv}; {_instructions(venv)}")
    paths = [str(libb64), cudart[0], os.environ.get("LD_LIBRARY_PATH", "")]
    tool = PerfTool(binary, {**os.environ, "LD_LIBRARY_PATH": ":".join(p for p in paths if p)})
    tool.version()
    return tool


def _fetch_libb64(dest: Path, log, venv: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise PerfToolUnavailable(f"perf_analyzer needs {LIBB64} and this machine has no apt-get/dpkg-deb to fetch "
                                  f"it; {_instructions(venv)}")
    log(f"fetching {LIBB64} with apt-get download ...")
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in range(2):
            r = subprocess.run(["apt-get", "download", LIBB64], cwd=tmp, capture_output=True, text=True, timeout=300)
            if r.returncode == 0:
                break
            if attempt == 0:  # the package lists may be empty on a fresh machine
                subprocess.run(["apt-get", "update"], capture_output=True, text=True, timeout=600)
        debs = glob.glob(os.path.join(tmp, f"{LIBB64}_*.deb"))
        if not debs:
            raise PerfToolUnavailable(f"apt-get download {LIBB64} failed: {(r.stdout + r.stderr).strip()[-300:]}; "
                                      f"{_instructions(venv)}")
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", debs[0], str(dest)], check=True, capture_output=True, timeout=120)


@dataclass
class Measurement:
    server: str
    protocol: str
    batch: int
    concurrency: int
    infer_per_s: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    stable: bool = True
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error and self.infer_per_s is not None


PASS_RE = re.compile(r"Pass \[\d+\] throughput: ([\d.]+) infer/sec\. Avg latency: (\d+) usec")


def measure(tool: PerfTool, server: str, target: str, model: str, protocol: str, batch: int, concurrency: int,
            interval_ms: int = 3000, max_trials: int = 6, stability: int = 30) -> Measurement:
    """One perf_analyzer run (time windows). An unstable run reports its last pass (throughput, and the average
    latency in place of p50) and says so."""
    m = Measurement(server, protocol, batch, concurrency)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.csv"
        cmd = [str(tool.binary), "-m", model, "-u", target, "-i", protocol, "-b", str(batch),
               "--concurrency-range", str(concurrency), "--measurement-mode", "time_windows",
               "--measurement-interval", str(interval_ms), "--max-trials", str(max_trials), "-s", str(stability),
               "-f", str(report), "-v"]
        start = time.monotonic()
        try:
            r = subprocess.run(cmd, env=tool.env, capture_output=True, text=True,
                               timeout=30 + interval_ms / 1000 * (max_trials + 2) * 2)
            out = r.stdout + r.stderr
        except subprocess.TimeoutExpired as e:
            m.error = f"perf_analyzer did not finish: {(e.stdout or '')[-300:]}"
            return m
        m.seconds = round(time.monotonic() - start, 1)
        errors = [ln.strip() for ln in out.splitlines() if "error" in ln.lower()]
        if report.exists():
            rows = list(csv.DictReader(report.open()))
            if rows:
                row = rows[-1]
                m.infer_per_s = float(row["Inferences/Second"])
                m.p50_us, m.p99_us = float(row["p50 latency"]), float(row["p99 latency"])
        if m.infer_per_s is None:
            passes = PASS_RE.findall(out)
            if passes and "stable" in out.lower():
                m.stable = False
                m.infer_per_s, m.p50_us = float(passes[-1][0]), float(passes[-1][1])
        if r.returncode != 0 and m.infer_per_s is None or errors:
            m.error = (errors[0] if errors else out.strip().splitlines()[-1] if out.strip() else
                       f"exit status {r.returncode}")[:300]
    return m


# ---- the servers --------------------------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    http: str  # host:port
    grpc: str | None  # host:port, when it speaks gRPC


def has_grpc(command: str) -> bool:
    """`lepton-hls COMMAND` takes --grpc-port."""
    r = subprocess.run([sys.executable, "-m", "lepton_hls.cli", command, "--help"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return "--grpc-port" in r.stdout


def start_lepton(name: str, args: list[str], log: Path, grpc: bool) -> Server:
    from lepton_hls.serving_processes import free_port, start_server

    grpc_port = free_port() if grpc else None
    extra = ["--grpc-port", str(grpc_port)] if grpc else []
    proc, url = start_server([*args, *extra], name, log)
    return Server(name, proc, url.split("//")[1], f"127.0.0.1:{grpc_port}" if grpc else None)


def start_floor(package: Path, log: Path) -> Server:
    import httpx

    from lepton_hls.serving_processes import free_port, stop_process

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "oip_floor.py"), "--package", str(package), "--port", str(port)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the floor server exited with status {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return Server("floor", proc, f"127.0.0.1:{port}", None)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_process(proc)
    raise RuntimeError(f"the floor server did not become ready; see {log}")


def warm(server: Server, model: str, input_name: str, input_shape: tuple[int, ...], seconds: float) -> None:
    """Traffic for `seconds` (and at least 120 requests): first-call costs, and the gateway's audit window after
    start (every answer re-computed for its first 10 s and 100 answers), stay out of the measurement."""
    import httpx
    import numpy as np

    from lepton_host.serving import oip

    x = np.zeros((1, *input_shape), np.float32)
    body, headers = oip.encode_infer_request([oip.Tensor(input_name, "FP32", x)])
    end, n = time.monotonic() + seconds, 0
    with httpx.Client(base_url=f"http://{server.http}", timeout=30) as c:
        while time.monotonic() < end or n < 120:
            r = c.post(f"/v2/models/{model}/infer", content=body, headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"{server.name} answered {r.status_code} while warming up: {r.text[:200]}")
            n += 1


def ensure_package(package: Path, log=print) -> Path:
    if (package / "manifest.json").exists():
        return package
    log(f"building {package} (lepton-hls build jet_tagger --samples 300) ...")
    subprocess.run([sys.executable, "-m", "lepton_hls.cli", "build", "jet_tagger", "--out", str(package),
                    "--samples", "300"], check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return package


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as uptime shows them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


# ---- the run ------------------------------------------------------------------------------------------------
def run(package: Path, batches: list[int], concurrencies: list[int], protocols: list[str], interval_ms: int,
        max_trials: int, stability: int, venv: Path, log_dir: Path, warm_s: float = 11.0) -> dict:
    from lepton_hls.serving_processes import stop_process
    from lepton_host.manifest import load_manifest

    tool = perf_tool(venv)
    manifest = load_manifest(package)
    model = manifest.model.name
    grpc = "grpc" in protocols and has_grpc("serve") and has_grpc("cloud")
    log_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"perf_analyzer": tool.version(), "package": str(package), "model": model,
                    "grpc": "measured" if grpc else ("not run: lepton-hls serve/cloud have no --grpc-port"
                                                     if "grpc" in protocols else "not asked"),
                    "load_before": load_average(), "machine": machine(), "runs": []}
    servers: list[Server] = []
    try:
        servers.append(start_floor(package, log_dir / "floor.log"))
        servers.append(start_lepton("gateway", ["serve", str(package), "--target", "emulator"],
                                    log_dir / "gateway.log", grpc))
        servers.append(start_lepton("cloud", ["cloud", str(package)], log_dir / "cloud.log", grpc))
        for s in servers:
            warm(s, model, manifest.input.name, tuple(manifest.input.shape), warm_s if s.name == "gateway" else 2.0)
        configs = [(p, b, c) for p in protocols if p == "http" or grpc for b in batches for c in concurrencies]
        for i, (protocol, batch, conc) in enumerate(configs):
            order = servers[i % len(servers):] + servers[:i % len(servers)]  # who goes first rotates
            for s in order:
                target = s.http if protocol == "http" else s.grpc
                if target is None:
                    continue
                m = measure(tool, s.name, target, model, protocol, batch, conc, interval_ms, max_trials, stability)
                print(f"  {protocol:<4} b{batch:<3} c{conc:<3} {s.name:<8} "
                      + (f"{m.infer_per_s:9.1f} infer/s  p50 {m.p50_us or 0:8.0f} us  p99 {m.p99_us or 0:8.0f} us"
                         + ("" if m.stable else "  (not stable)") if m.infer_per_s is not None else "")
                      + (f"  ERROR {m.error}" if m.error else ""), flush=True)
                result["runs"].append(asdict(m))
    finally:
        for s in servers:
            stop_process(s.proc)
    result["load_after"] = load_average()
    return result


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def table(result: dict) -> str:
    """Markdown: per (protocol, batch, concurrency), each server's infer/s, p50 and p99, and gateway/floor."""
    runs = result["runs"]
    keys = sorted({(r["protocol"], r["batch"], r["concurrency"]) for r in runs}, key=lambda k: (k[0] != "http", k[1:]))
    by = {(r["protocol"], r["batch"], r["concurrency"], r["server"]): r for r in runs}

    def cell(r):
        if r is None:
            return "—"
        if r["infer_per_s"] is None:
            return f"error: {r['error'][:60]}"
        star = "" if r["stable"] else "*"
        p99 = f"{r['p99_us'] / 1000:.2f}" if r["p99_us"] is not None else "?"
        return f"{r['infer_per_s']:,.0f}{star} ({r['p50_us'] / 1000:.2f} / {p99})"

    lines = ["| protocol | batch | concurrency | floor infer/s (p50 / p99 ms) | gateway | cloud | gateway / floor |",
             "|---|---|---|---|---|---|---|"]
    for p, b, c in keys:
        f, g, cl = by.get((p, b, c, "floor")), by.get((p, b, c, "gateway")), by.get((p, b, c, "cloud"))
        ratio = (f"{g['infer_per_s'] / f['infer_per_s']:.2f}x" if f and g and f["infer_per_s"] and g["infer_per_s"]
                 else "—")
        lines.append(f"| {p.upper()} | {b} | {c} | {cell(f)} | {cell(g)} | {cell(cl)} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--package", type=Path, default=DEFAULT_PACKAGE, help="a built jet_tagger package (built if missing)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--protocols", nargs="+", default=["http", "grpc"], choices=["http", "grpc"])
    p.add_argument("--measurement-interval", type=int, default=3000, help="ms per measurement window")
    p.add_argument("--max-trials", type=int, default=6)
    p.add_argument("--stability", type=int, default=30, help="perf_analyzer -s (percent)")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="where perf_analyzer's environment lives")
    p.add_argument("--logs", type=Path, default=REPO / "out" / "bench" / "perf-logs")
    a = p.parse_args()
    try:
        package = ensure_package(a.package)
        result = run(package, a.batches, a.concurrency, a.protocols, a.measurement_interval, a.max_trials,
                     a.stability, a.venv, a.logs)
    except PerfToolUnavailable as e:
        raise SystemExit(f"perf_analyzer is not available: {e}") from None
    result["command"] = " ".join(["python benchmarks/perf_analyzer.py", *sys.argv[1:]])
    print()
    print(table(result))
    print(f"\ngRPC: {result['grpc']}; load average before {result['load_before']}, after {result['load_after']}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "perf_analyzer.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
