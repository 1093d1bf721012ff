"""Serving benchmark: latency percentiles and throughput of the bare backend call, the edge gateway at batch 1,
the gateway with dynamic batching, and the cloud fallback; plus offload fractions under the demo's mixed
traffic. Servers run in their own processes (`lepton-hls serve`, `lepton-hls cloud`); load comes from this
process (and its worker processes) over loopback, at fixed request rates, for bounded durations.

    python benchmarks/serve.py --package out/demo/jet_tagger [--board emulator] [--duration 3]

Prints a table and writes benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing as mp
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lepton_host.manifest import load_manifest
from lepton_host.serving import oip

RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], url: str, log: Path, timeout_s: float = 120.0) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "lepton_hls.cli", *cmd], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{' '.join(cmd)} exited with {proc.returncode}; see {log}")
        try:
            c = http.client.HTTPConnection(url.split("//")[1], timeout=1)
            c.request("GET", "/v2/health/ready")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{' '.join(cmd)} did not become ready; see {log}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def pct(lat_s) -> dict:
    v = np.asarray(lat_s, dtype=float) * 1e3
    if not v.size:
        return {"n": 0}
    return {"n": int(v.size), "p50_ms": float(np.percentile(v, 50)), "p90_ms": float(np.percentile(v, 90)),
            "p99_ms": float(np.percentile(v, 99))}


def request_body(name: str, x: np.ndarray) -> tuple[bytes, dict]:
    return oip.encode_infer_request([oip.Tensor(name, "FP32", x.astype(np.float32))])


# ---- load generators -------------------------------------------------------------------------------------------
def sequential(url: str, path: str, body: bytes, headers: dict, n: int) -> dict:
    """One keep-alive connection, one request at a time: the latency a lone caller sees."""
    c = http.client.HTTPConnection(url.split("//")[1], timeout=30)
    c.connect()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lat, errors = [], 0
    for i in range(n + n // 10):
        t0 = time.perf_counter()
        c.request("POST", path, body, headers)
        r = c.getresponse()
        r.read()
        dt = time.perf_counter() - t0
        if i >= n // 10:  # the first tenth warms up
            lat.append(dt)
            errors += r.status != 200
    return pct(lat) | {"errors": errors}


def _thread_load(url: str, path: str, body: bytes, headers: dict, threads: int, duration: float,
                 rate: float | None) -> tuple[list[float], int]:
    """`threads` keep-alive connections. With `rate` (per thread), each request has a scheduled start and its
    latency counts from that schedule, so a server that falls behind is charged for the wait (no coordinated
    omission); without, each thread sends as fast as answers come back."""
    import threading

    lat: list[float] = []
    errors = [0]
    ends: list[float] = []
    lock = threading.Lock()
    host = url.split("//")[1]

    def worker(k: int):
        c = http.client.HTTPConnection(host, timeout=30)
        c.connect()
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mine, bad = [], 0
        start = time.perf_counter() + (k / (rate * threads) if rate else 0)
        i = 0
        while True:
            due = start + i / rate if rate else time.perf_counter()
            if due - start > duration:
                break
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            c.request("POST", path, body, headers)
            r = c.getresponse()
            r.read()
            mine.append(time.perf_counter() - due)
            bad += r.status != 200
            i += 1
        c.close()
        with lock:
            lat.extend(mine)
            errors[0] += bad
            ends.append(time.perf_counter() - start)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return lat, errors[0], max(ends)


def _load_worker(args):
    return _thread_load(*args)


def load(url, path, body, headers, duration, rate=None, processes=2, threads=4) -> dict:
    """Load from `processes` client processes of `threads` connections each; `rate` is the total offered
    request rate (None: closed loop, as fast as the server answers)."""
    per_thread = None if rate is None else rate / (processes * threads)
    with mp.get_context("spawn").Pool(processes) as pool:
        t0 = time.perf_counter()
        parts = pool.map(_load_worker, [(url, path, body, headers, threads, duration, per_thread)] * processes)
        wall = time.perf_counter() - t0
    lat = [v for p in parts for v in p[0]]
    # Answers per second over the time it took to get them all (a server that falls behind takes longer).
    elapsed = max(duration, max(p[2] for p in parts))
    return pct(lat) | {"rate": rate, "connections": processes * threads, "errors": sum(p[1] for p in parts),
                       "throughput_rps": len(lat) / elapsed, "wall_s": wall}


# ---- the runs -------------------------------------------------------------------------------------------------
def bare_backend(package: Path, board: str, engine: str, n: int, batch: int, duration: float) -> dict:
    from lepton_host.serving.edge import open_edge_backend

    m = load_manifest(package)
    backend = open_edge_backend(package, board, engine)
    try:
        x1 = np.random.default_rng(0).standard_normal((1, *m.input.shape))
        for _ in range(50):
            backend.predict(x1)
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            backend.predict(x1)
            lat.append(time.perf_counter() - t0)
        xb = np.random.default_rng(1).standard_normal((batch, *m.input.shape))
        calls, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < duration:
            backend.predict(xb)
            calls += 1
        elapsed = time.perf_counter() - t0
        return {"name": backend.name, "batch1": pct(lat),
                "batched": {"batch": batch, "samples_per_s": calls * batch / elapsed}}
    finally:
        backend.close()


def offload_fractions(url: str, package: Path, board: str, engine: str, n: int) -> dict:
    from lepton_hls.demo_serving import CONFIDENCE_THRESHOLD, _send_all, summarize, typical_data
    from lepton_host.serving.edge import open_edge_backend
    from lepton_host.serving.traffic import mixed_traffic

    m = load_manifest(package)
    backend = open_edge_backend(package, "emulator", "fast")  # only to pick the unsure samples
    samples = mixed_traffic(m, backend, n, seed=1, unsure_below=CONFIDENCE_THRESHOLD, typical=typical_data(m))
    backend.close()
    records = asyncio.run(_send_all(url, m.model.name, m.input.name, samples, concurrency=8))
    s = summarize(records)
    return {"requests": s["requests"], "ok": s["ok"], "served_by_kind": s["served_by_kind"],
            "latency_by_path": s["latency_by_path"],
            "offload_fraction": sum(r["served_by"] != "edge" for r in records) / len(records)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package", required=True, help="a built package (lepton-hls build ... --out DIR)")
    ap.add_argument("--board", default="emulator", choices=("emulator", "emulated-board", "board"))
    ap.add_argument("--engine", default="fast", choices=("fast", "csim"))
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per fixed-rate or throughput run")
    ap.add_argument("--rates", default="100,300,1000", help="request rates for the open-loop runs (req/s)")
    ap.add_argument("--sequential", type=int, default=2000, help="requests in the one-at-a-time latency run")
    ap.add_argument("--concurrency", type=int, default=32, help="connections in the closed-loop throughput runs")
    ap.add_argument("--request-batch", type=int, default=16,
                    help="samples per request in the second throughput run (clients that batch a little)")
    ap.add_argument("--out", default=str(RESULTS / "serve.json"))
    args = ap.parse_args()
    package = Path(args.package)
    m = load_manifest(package)
    rates = [float(r) for r in args.rates.split(",") if r]
    logs = Path("/tmp") / f"lepton-serve-bench-{os.getpid()}"
    logs.mkdir(exist_ok=True)
    x1 = np.random.default_rng(0).standard_normal((1, *m.input.shape))
    body, headers = request_body(m.input.name, x1)
    path = f"/v2/models/{m.model.name}/infer"
    result = {"package": str(package), "model": m.model.name, "board": args.board, "engine": args.engine,
              "machine": f"{platform.machine()} {os.cpu_count()} cpus", "python": platform.python_version()}

    print("bare backend call ...", file=sys.stderr)
    result["bare"] = bare_backend(package, args.board, args.engine, args.sequential, args.concurrency, args.duration)

    cloud_port = free_port()
    cloud_url = f"http://127.0.0.1:{cloud_port}"
    cloud = start(["cloud", str(package), "--port", str(cloud_port)], cloud_url, logs / "cloud.log")
    try:
        common = ["serve", str(package), "--target", args.board, "--engine", args.engine]
        runs = {
            "gateway_batch1": common + ["--max-batch-size", "1", "--max-queue-delay-ms", "0", "--mode", "edge"],
            "gateway_dynamic": common + ["--max-batch-size", str(args.concurrency), "--max-queue-delay-ms", "1",
                                         "--max-queue", "1024", "--mode", "edge"],
            "cloud_fallback": common + ["--cloud", cloud_url, "--mode", "cloud"],
        }
        for name, cmd in runs.items():
            print(f"{name} ...", file=sys.stderr)
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            proc = start(cmd + ["--port", str(port)], url, logs / f"{name}.log")
            try:
                r = {"sequential": sequential(url, path, body, headers, args.sequential)}
                r["rates"] = [load(url, path, body, headers, args.duration, rate) for rate in rates]
                if name == "gateway_dynamic":
                    r["throughput"] = load(url, path, body, headers, args.duration, None, 2, args.concurrency // 2)
                    xb = np.random.default_rng(2).standard_normal((args.request_batch, *m.input.shape))
                    bb, bh = request_body(m.input.name, xb)
                    t = load(url, path, bb, bh, args.duration, None, 2, args.concurrency // 2)
                    t["request_batch"] = args.request_batch
                    t["samples_per_s"] = t["throughput_rps"] * args.request_batch
                    r["throughput_batched_requests"] = t
                result[name] = r
            finally:
                stop(proc)
        print("mixed traffic ...", file=sys.stderr)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = common + ["--cloud", cloud_url, "--confidence-threshold", "0.5", "--port", str(port)]
        proc = start(cmd, url, logs / "mixed.log")
        try:
            result["mixed_traffic"] = offload_fractions(url, package, args.board, args.engine, 1000)
        finally:
            stop(proc)
    finally:
        stop(cloud)

    bare_p50 = result["bare"]["batch1"]["p50_ms"]
    result["gateway_overhead_p50_ms"] = result["gateway_batch1"]["sequential"]["p50_ms"] - bare_p50
    bare_thr = result["bare"]["batched"]["samples_per_s"]
    result["dynamic_vs_bare_batched"] = result["gateway_dynamic"]["throughput"]["throughput_rps"] / bare_thr
    result["dynamic_batched_requests_vs_bare_batched"] = (
        result["gateway_dynamic"]["throughput_batched_requests"]["samples_per_s"] / bare_thr)
    print_table(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
    return 0


def print_table(r: dict) -> None:
    def row(label, s, extra=""):
        print(f"{label:42s} {s['p50_ms']:8.3f} {s['p90_ms']:8.3f} {s['p99_ms']:8.3f} {extra}")

    print(f"\nmodel {r['model']}, edge backend {r['bare']['name']}, {r['machine']}")
    print(f"{'run':42s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} throughput")
    row("bare backend call, batch 1 (in-process)", r["bare"]["batch1"])
    print(f"{'bare backend call, batch ' + str(r['bare']['batched']['batch']):42s} {'':8s} {'':8s} {'':8s} "
          f"{r['bare']['batched']['samples_per_s']:.0f} samples/s")
    for name in ("gateway_batch1", "gateway_dynamic", "cloud_fallback"):
        row(f"{name}, one caller", r[name]["sequential"])
        for s in r[name]["rates"]:
            row(f"{name}, {s['rate']:.0f} req/s offered", s, f"{s['throughput_rps']:.0f} req/s, {s['errors']} errors")
        if "throughput" in r[name]:
            t = r[name]["throughput"]
            row(f"{name}, {t['connections']} conns, closed loop", t,
                f"{t['throughput_rps']:.0f} req/s, {t['errors']} errors")
            t = r[name]["throughput_batched_requests"]
            row(f"{name}, same, {t['request_batch']} samples/request", t,
                f"{t['samples_per_s']:.0f} samples/s, {t['errors']} errors")
    print(f"gateway overhead over the bare call at p50: {r['gateway_overhead_p50_ms']:.3f} ms (target <= 0.5)")
    print(f"dynamic batching throughput / bare batched throughput: {r['dynamic_vs_bare_batched']:.1%} with 1-sample "
          f"requests, {r['dynamic_batched_requests_vs_bare_batched']:.1%} with "
          f"{r['gateway_dynamic']['throughput_batched_requests']['request_batch']}-sample requests (target >= 50%)")
    mt = r["mixed_traffic"]
    print(f"mixed traffic ({mt['requests']} requests, {mt['ok']} ok): "
          f"offloaded to the cloud {mt['offload_fraction']:.1%}")
    for kind, frac in mt["served_by_kind"].items():
        print(f"  {kind:14s} " + ", ".join(f"{p} {f:.0%}" for p, f in frac.items()))


if __name__ == "__main__":
    sys.exit(main())
