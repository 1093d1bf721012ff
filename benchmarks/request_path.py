"""The gateway's own work per request, in process: the ASGI app driven directly (a hand-built scope, receive and
send; no sockets, no HTTP client), against the raw-ASGI OIP floor (benchmarks/oip_floor.py).

The apps answer the same requests, one after another:
  floor     the raw-ASGI OIP server doing one tiny numpy op;
  instant   the gateway as `lepton-hls serve PKG --target emulator --max-queue-delay-ms 0` configures it (no
            batching window: a lone request goes straight to the backend, so what is timed is work, not the
            window's deliberate wait), on a backend whose predict returns the answer precomputed for the request:
            the backend costs ~nothing, and what remains is the gateway's own work;
  emulator  the same gateway on the package's real emulator backend, its predict time measured per call and
            subtracted.
Each runs batch-1 and batch-16 requests with the binary tensor extension (what perf_analyzer sends) and in
JSON, in short runs interleaved across the apps; the least disturbed run counts, in wall and in CPU time (on a
shared machine the CPU time is the steadier measure of work). Four concurrent callers show the queued path,
with the default batching window too. Then the gateway's stages are timed inside the whole path (exclusive
timers around each stage's own function, their own cost taken out); what no timer covers is the HTTP app layer.
`--profile` adds cProfile's view.

    python benchmarks/request_path.py --package out/bench/jet [--requests 100] [--repeats 60] [--profile]

Measures the gateway after its audit window (every answer re-computed for its first 10 s after start), at its
steady 1% audit. Prints tables and writes benchmarks/results/request_path.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import gc
import io
import json
import platform
import pstats
import statistics as st
import time
from pathlib import Path

import numpy as np

from lepton_host.backend import Health
from lepton_host.manifest import load_manifest
from lepton_host.serving import oip

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

import oip_floor  # noqa: E402  (beside this script, on its path when run as one)


# ---- driving an ASGI app without sockets -------------------------------------------------------------------
def http_scope(path: str, headers: dict[str, str], method: str = "POST") -> dict:
    """The scope uvicorn would hand the app for this request."""
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000), "state": {},
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
    }


class Exchange:
    """One request's receive and send: the body in one message, the response collected."""

    __slots__ = ("body", "sent", "status", "chunks")

    def __init__(self, body: bytes):
        self.body = body
        self.sent = False
        self.status = 0
        self.chunks: list[bytes] = []

    async def receive(self) -> dict:
        if not self.sent:
            self.sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await asyncio.Event().wait()  # a client that stays connected: never a disconnect
        raise AssertionError("unreachable")

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))


async def call(app, scope: dict, body: bytes) -> tuple[int, bytes]:
    ex = Exchange(body)
    await app(dict(scope), ex.receive, ex.send)
    return ex.status, b"".join(ex.chunks)


@contextlib.asynccontextmanager
async def lifespan(app):
    """Run the app's startup and, on exit, its shutdown, as a server would."""
    to_app: asyncio.Queue = asyncio.Queue()
    from_app: asyncio.Queue = asyncio.Queue()
    task = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                     to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    msg = await from_app.get()
    if msg["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"app did not start: {msg}")
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await from_app.get()
        await task


# ---- the requests ------------------------------------------------------------------------------------------
class Request:
    def __init__(self, model: str, input_name: str, x: np.ndarray, binary: bool):
        self.x = x
        self.binary = binary
        body, headers = oip.encode_infer_request([oip.Tensor(input_name, "FP32", x.astype(np.float32))],
                                                 binary=binary, binary_outputs=binary)
        self.body = body
        headers = {"host": "127.0.0.1:8000", "user-agent": "request-path-bench", "accept": "*/*",
                   **headers, "content-length": str(len(body))}
        self.scope = http_scope(f"/v2/models/{model}/infer", headers)
        self.header_length = headers.get(oip.HEADER_LENGTH)


# ---- backends ------------------------------------------------------------------------------------------------
class InstantBackend:
    """A Backend whose predict returns the answer stored for the request (the real model's, computed once):
    the backend costs ~nothing, so the gateway's time is the gateway's work."""

    name = "instant"

    def __init__(self, answers: dict[int, np.ndarray]):
        self._answers = answers  # rows -> the answer to the benchmark's request of that many rows

    def predict(self, x: np.ndarray, timeout: float | None = None) -> np.ndarray:
        return self._answers[x.shape[0]].copy()  # never a buffer it will reuse (Backend's contract)

    def health(self) -> Health:
        return Health(True, "instant", "instant")

    def close(self) -> None:
        pass


class TimedBackend:
    """A real backend with the time spent in its predict counted, to subtract from the request path."""

    def __init__(self, backend):
        self._backend = backend
        self.name = backend.name
        self.reset_counts()

    def predict(self, x, timeout=None):
        t, c = time.perf_counter(), time.thread_time()
        try:
            return self._backend.predict(x, timeout)
        finally:
            self.seconds += time.perf_counter() - t
            self.cpu_seconds += time.thread_time() - c
            self.calls += 1

    def health(self):
        return self._backend.health()

    def close(self):
        self._backend.close()

    def reset_counts(self):
        self.calls, self.seconds, self.cpu_seconds = 0, 0.0, 0.0


# The batching window off (Triton's own default): a lone request goes straight to the backend, so what is timed
# is work, not the window's deliberate wait. The default window is measured with concurrent callers instead.
DIRECT = ("--max-queue-delay-ms", "0")


def serve_args(package: str, *extra: str) -> argparse.Namespace:
    """`lepton-hls serve PKG --target emulator EXTRA`, parsed by the CLI itself (its defaults are the gateway's)."""
    from lepton_hls.cli import build_parser

    return build_parser().parse_args(["serve", package, "--target", "emulator", *extra])


def gateway(package: str, backend, *extra: str):
    """The app and service `lepton-hls serve PKG --target emulator EXTRA` would run, on `backend`."""
    from lepton_hls.commands.serve import gateway_config, routing_overrides
    from lepton_host.serving.gateway import create_gateway
    from lepton_host.serving.routing import RoutingPolicy

    args = serve_args(package, *extra)
    manifest = load_manifest(package)
    policy = RoutingPolicy.for_package(manifest, package, **routing_overrides(args))
    config = gateway_config(args, policy, package, manifest)
    return create_gateway(manifest, backend, config)


# ---- measuring -----------------------------------------------------------------------------------------------
async def check(app, req: Request) -> None:
    status, body = await call(app, req.scope, req.body)
    if status != 200:
        raise RuntimeError(f"status {status}: {body[:300]!r}")


async def one_run(app, req: Request, n: int) -> tuple[float, float]:
    """`n` sequential requests -> (wall µs, CPU µs of this process) per request."""
    gc.collect()
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        await call(app, req.scope, req.body)
    return (time.perf_counter() - t) / n * 1e6, (time.process_time() - c) / n * 1e6


async def concurrent_us(app, req: Request, callers: int, n: int, repeats: int) -> dict:
    """`callers` concurrent callers, `n` requests each: wall µs and CPU µs (this process) per request."""
    async def caller():
        for _ in range(n):
            await call(app, req.scope, req.body)

    await asyncio.gather(*(caller() for _ in range(callers)))  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        gc.collect()
        t, c = time.perf_counter(), time.process_time()
        await asyncio.gather(*(caller() for _ in range(callers)))
        wall.append((time.perf_counter() - t) / (n * callers) * 1e6)
        cpu.append((time.process_time() - c) / (n * callers) * 1e6)
    return {"wall_us": round(min(wall), 2), "cpu_us": round(min(cpu), 2)}


async def steady(gateways, req: Request) -> None:
    """Past each gateway's audit window: for its first answers after start (10 s, 100 answers by default) the
    gateway re-computes every answer on the emulator; afterwards a sampled 1%, which is its steady state."""
    while any(s.auditor is not None and s.auditor.in_window for _, s in gateways):
        for app, _ in gateways:
            await check(app, req)
        await asyncio.sleep(0.05)
    for _, s in gateways:
        if s.auditor is not None:
            await asyncio.to_thread(s.auditor.wait_idle, 30.0)


def summary(runs: list[tuple[float, float]]) -> dict:
    """Per request: the least disturbed run (min) and the median, in wall and CPU µs. On a shared machine the
    CPU time is the steadier measure of the work; alone, the two agree."""
    wall, cpu = [w for w, _ in runs], [c for _, c in runs]
    return {"wall_min_us": round(min(wall), 2), "wall_median_us": round(st.median(wall), 2),
            "cpu_min_us": round(min(cpu), 2), "cpu_median_us": round(st.median(cpu), 2)}


# ---- where the time goes: exclusive timers around the request path's own functions ---------------------------
# (owner, attribute, stage): each wrapped call's time, minus the wrapped calls inside it, is its stage's. What no
# timer covers is the HTTP app layer (routing dispatch, middleware, request and response objects). Attributes the
# code does not have (it changed) are skipped and reported.
def timer_points(service) -> list[tuple[object, str, str]]:
    import prometheus_client.metrics as pm
    import starlette.routing as sr

    from lepton_host.manifest import Preprocessing
    from lepton_host.serving import gateway as gw
    from lepton_host.serving import metrics as sm
    from lepton_host.serving import routes_infer as ri
    from lepton_host.serving import routing as rt
    from lepton_host.serving import statistics as ss
    from lepton_host.serving import batcher as bt
    from lepton_host.serving import middleware as mw

    return [
        (getattr(mw, "InferFront", None), "path_params", "route match"),
        (sr.Route, "matches", "route match"),
        (ri, "read_body", "body read"),
        (ri, "receive_body", "body read"),
        (ri, "parse_infer_request", "parse (JSON header, tensors)"),
        (ri, "validate", "validate (names, shape, finite)"),
        (Preprocessing, "apply", "preprocessing"),
        (rt.Router, "in_range", "range check"),
        (rt.Router, "plan", "plan"),
        (gw, "execute", "executor"),
        (gw.EdgeService, "run_edge", "batcher handoff"),
        (bt.DynamicBatcher, "try_direct", "batcher handoff"),
        (type(service.backend), "predict", "backend (instant)"),
        (gw.EdgeService, "_account", "accounting (path, reasons)"),
        (sm.ServingMetrics, "child", "metrics (Prometheus)"),
        (pm.Counter, "inc", "metrics (Prometheus)"),
        (pm.Gauge, "set", "metrics (Prometheus)"),
        (pm.Histogram, "observe", "metrics (Prometheus)"),
        (getattr(sm, "_CounterChild", None), "inc", "metrics (Prometheus)"),
        (getattr(sm, "_GaugeChild", None), "set", "metrics (Prometheus)"),
        (getattr(sm, "_HistogramChild", None), "observe", "metrics (Prometheus)"),
        (ss.ModelStatistics, "request_done", "statistics (Triton)"),
        (ss.ModelStatistics, "batched", "statistics (Triton)"),
        (ss.ModelStatistics, "executed", "statistics (Triton)"),
        (ri, "encode_infer_response", "encode"),
    ]


class Timers:
    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[float] = []  # per open call: time spent in the timed calls inside it
        self._saved: list[tuple[object, str, object, bool]] = []
        self.missing: list[str] = []

    def _wrap(self, fn, stage: str):
        stack, seconds, calls, clock = self._stack, self.seconds, self.calls, time.perf_counter
        seconds.setdefault(stage, 0.0)
        calls.setdefault(stage, 0)

        def done(t0: float) -> None:
            elapsed = clock() - t0
            seconds[stage] += elapsed - stack.pop()
            calls[stage] += 1
            if stack:
                stack[-1] += elapsed

        if asyncio.iscoroutinefunction(fn):
            async def timed(*a, **k):
                stack.append(0.0)
                t0 = clock()
                try:
                    return await fn(*a, **k)
                finally:
                    done(t0)
        else:
            def timed(*a, **k):
                stack.append(0.0)
                t0 = clock()
                try:
                    return fn(*a, **k)
                finally:
                    done(t0)
        return timed

    def install(self, points) -> None:
        for owner, attr, stage in points:
            if owner is None:
                continue
            fn = getattr(owner, attr, None)
            if fn is None:
                self.missing.append(f"{getattr(owner, '__name__', type(owner).__name__)}.{attr}")
                continue
            own = attr in getattr(owner, "__dict__", {})
            raw = owner.__dict__[attr] if own else None
            self._saved.append((owner, attr, raw, own))
            timed = self._wrap(fn, stage)
            setattr(owner, attr, staticmethod(timed) if isinstance(raw, staticmethod) else timed)

    def remove(self) -> None:
        for owner, attr, raw, own in reversed(self._saved):
            if own:
                setattr(owner, attr, raw)
            else:
                delattr(owner, attr)
        self._saved.clear()


async def stage_breakdown(service, app, req: Request, n: int) -> dict:
    """µs per request by stage (exclusive), over `n` requests through the whole app with the timers in."""
    for _ in range(200):
        await call(app, req.scope, req.body)
    timers = Timers()
    timers.install(timer_points(service))
    try:
        gc.collect()
        t, c = time.perf_counter(), time.process_time()
        for _ in range(n):
            await call(app, req.scope, req.body)
        total, cpu = time.perf_counter() - t, time.process_time() - c
    finally:
        timers.remove()
    # A timer's own cost lands partly inside the timed call and partly in its caller; it is taken out of both.
    cost = timer_cost_s()
    stages = {k: round(max(v - timers.calls[k] * cost / 2, 0.0) / n * 1e6, 2) for k, v in timers.seconds.items()}
    timed = sum(timers.seconds.values())
    overhead = sum(timers.calls.values()) * cost
    stages["HTTP app layer (no timer: dispatch, front/middleware, request/response)"] = round(
        (total - timed - overhead / 2) / n * 1e6, 2)
    return {"stages": stages, "calls_per_request": {k: v / n for k, v in timers.calls.items()},
            "instrumented_total_us": round(total / n * 1e6, 2), "timer_cost_us": round(cost * 1e6, 3),
            "cpu_per_wall": round(cpu / total, 3),
            "missing": timers.missing}


@functools.lru_cache(maxsize=None)
def timer_cost_s(n: int = 200000) -> float:
    """What one timer adds to a call (a wrapped no-op against the bare one)."""
    def noop():
        return None

    timed = Timers()._wrap(noop, "calibration")
    best = []
    for fn in (noop, timed):
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(n):
                fn()
            runs.append((time.perf_counter() - t) / n)
        best.append(min(runs))
    return max(best[1] - best[0], 0.0)


def mean_call_us(fn, n: int, repeats: int = 5) -> float:
    """Median over `repeats` of the mean µs per call of `fn()`."""
    for _ in range(min(n, 200)):
        fn()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t) / n * 1e6)
    return round(st.median(runs), 2)


def profile_text(prof: cProfile.Profile, top: int = 30) -> str:
    s = io.StringIO()
    pstats.Stats(prof, stream=s).strip_dirs().sort_stats("tottime").print_stats(top)
    return s.getvalue()


async def measure(package: str, n: int, repeats: int, with_profile: bool) -> dict:
    from lepton_host.serving.edge import open_edge_backend

    manifest = load_manifest(package)
    name, in_name = manifest.model.name, manifest.input.name
    rng = np.random.default_rng(0)
    xs = {b: rng.normal(0, 1, (b, *manifest.input.shape)).astype(np.float32) for b in (1, 16)}
    reqs = {(b, kind): Request(name, in_name, xs[b], kind == "binary") for b in xs for kind in ("binary", "json")}

    real = open_edge_backend(package, "emulator", "fast")
    answers = {b: real.predict(x.astype(np.float64)) for b, x in xs.items()}
    instant = InstantBackend(answers)
    timed = TimedBackend(real)
    backend_us = {b: mean_call_us(lambda b=b: instant.predict(xs[b]), 20000) for b in xs}
    emulator_us = {b: mean_call_us(lambda b=b: real.predict(xs[b].astype(np.float64)), 5000) for b in xs}

    floor = oip_floor.app_for_package(package)
    gw_instant, svc_instant = gateway(package, instant, *DIRECT)
    gw_emulator, svc_emulator = gateway(package, timed, *DIRECT)
    gw_window, svc_window = gateway(package, instant)

    results: dict = {"floor": {}, "instant": {}, "emulator": {}, "backend_us": backend_us,
                     "emulator_predict_us": emulator_us}
    async with lifespan(floor), lifespan(gw_instant), lifespan(gw_emulator), lifespan(gw_window):
        await steady(((gw_instant, svc_instant), (gw_emulator, svc_emulator), (gw_window, svc_window)),
                     reqs[(1, "binary")])
        # Runs interleaved, so drift on a shared machine lands on every app alike.
        for key, req in reqs.items():
            label = f"batch {key[0]}, {key[1]}"
            apps = {"floor": floor, "instant": gw_instant, "emulator": gw_emulator}
            runs: dict = {k: [] for k in apps}
            minus_predict, predict = [], []  # the emulator's runs less their own predict time, per request
            for app in apps.values():
                for _ in range(200):
                    await check(app, req)
            for _ in range(repeats):
                for k, app in apps.items():
                    timed.reset_counts()
                    runs[k].append(await one_run(app, req, n))
                    if k == "emulator":
                        p_wall, p_cpu = timed.seconds / n * 1e6, timed.cpu_seconds / n * 1e6
                        predict.append((p_wall, p_cpu))
                        minus_predict.append((runs[k][-1][0] - p_wall, runs[k][-1][1] - p_cpu))
            results["floor"][label] = summary(runs["floor"])
            results["instant"][label] = summary(runs["instant"])
            g = summary(minus_predict)
            results["emulator"][label] = {**summary(runs["emulator"]),
                                          "predict_us": round(st.median(w for w, _ in predict), 2),
                                          "predict_cpu_us": round(st.median(c for _, c in predict), 2),
                                          "gateway_wall_us": g["wall_min_us"], "gateway_cpu_us": g["cpu_min_us"]}
        results["concurrent"] = {}
        for b in (1, 16):
            req = reqs[(b, "binary")]
            results["concurrent"][f"batch {b}, binary, 4 callers"] = {
                "floor": await concurrent_us(floor, req, 4, max(n // 4, 25), repeats),
                "gateway, direct path": await concurrent_us(gw_instant, req, 4, max(n // 4, 25), repeats),
                "gateway, default window": await concurrent_us(gw_window, req, 4, max(n // 4, 25), repeats),
            }
        results["stages"] = {}
        for key in ((1, "binary"), (1, "json"), (16, "binary")):
            # the least disturbed of three instrumented runs
            tries = [await stage_breakdown(svc_instant, gw_instant, reqs[key], n) for _ in range(max(repeats // 4, 3))]
            results["stages"][f"batch {key[0]}, {key[1]}"] = min(tries, key=lambda t: t["instrumented_total_us"])
        profiles = {}
        if with_profile:
            for key in ((1, "binary"), (1, "json")):
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(n):
                    await call(gw_instant, reqs[key].scope, reqs[key].body)
                prof.disable()
                profiles[f"batch {key[0]}, {key[1]}"] = profile_text(prof)
        results["profiles"] = profiles
    return results


def report(r: dict) -> None:
    print("\nPer request, in process, sequential (least disturbed run; µs wall / µs CPU):")
    print(f"{'request':<18} {'floor':>13} {'gateway':>13} {'gateway':>13} {'emulator':>9} {'gateway on':>13}")
    print(f"{'':<18} {'':>13} {'(instant)':>13} {'- backend':>13} {'predict':>9} {'emulator':>13}")
    for label, f in r["floor"].items():
        b = int(label.split()[1].rstrip(","))
        g, e, be = r["instant"][label], r["emulator"][label], r["backend_us"][b]
        pair = lambda w, c: f"{w:6.1f}/{c:6.1f}"  # noqa: E731
        print(f"{label:<18} {pair(f['wall_min_us'], f['cpu_min_us']):>13} {pair(g['wall_min_us'], g['cpu_min_us']):>13}"
              f" {pair(g['wall_min_us'] - be, g['cpu_min_us'] - be):>13} {e['predict_us']:>9.1f}"
              f" {pair(e['gateway_wall_us'], e['gateway_cpu_us']):>13}")
    print("\n4 concurrent callers (least disturbed run; µs per request: wall, and CPU of this process):")
    for label, apps in r["concurrent"].items():
        print(f"  {label}: " + "; ".join(f"{k} {v['wall_us']:.1f} wall / {v['cpu_us']:.1f} CPU"
                                        for k, v in apps.items()))
    for label, b in r["stages"].items():
        whole = r["instant"][label]["wall_min_us"]
        print(f"\nStages, gateway, {label} (exclusive wall µs per request, timers in; whole path without timers "
              f"{whole:.1f} µs, with them {b['instrumented_total_us']:.1f}; this process had "
              f"{b['cpu_per_wall']:.0%} of a core meanwhile):")
        for name, us in sorted(b["stages"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:<66} {us:>8.2f}")
        if b["missing"]:
            print(f"  (no longer in the code, not timed: {', '.join(b['missing'])})")
    for label, text in r.get("profiles", {}).items():
        print(f"\ncProfile, gateway, {label} (tottime):\n{text}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--package", required=True)
    p.add_argument("--requests", type=int, default=100, help="requests per timed run (short runs: on a shared "
                   "machine the least disturbed of many short runs is the closest to the undisturbed cost)")
    p.add_argument("--repeats", type=int, default=60, help="timed runs per app and request")
    p.add_argument("--profile", action="store_true", help="also print cProfile's view of the whole path")
    a = p.parse_args()
    r = asyncio.run(measure(a.package, a.requests, a.repeats, a.profile))
    report(r)
    r["machine"] = {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "request_path.json"
    out.write_text(json.dumps(r, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
