"""The serving scenario of `lepton-hls demo`: the reference cloud server (its own process, TensorFlow), the
edge gateway on the emulated board, and a bounded burst of mixed traffic (typical, out-of-range and unsure
samples) with a board fault injected half-way; prints which path served what and how fast, writes
`serving.json` and a latency histogram PNG."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from lepton_host.manifest import load_manifest

from lepton_host.serving import oip
from lepton_host.serving.app import ServerOptions
from lepton_host.serving.batcher import BatcherConfig
from lepton_host.serving.breaker import BreakerConfig
from lepton_host.serving.cloud_client import CloudConfig
from lepton_host.serving.edge import open_edge_backend
from lepton_host.serving.gateway import GatewayConfig, create_gateway
from lepton_host.serving.routing import RoutingPolicy
from lepton_host.serving.runner import ServerThread
from lepton_host.serving.traffic import mixed_traffic

from .serving_processes import start_cloud_process, stop_process

PHASES = (("before fault", 0.5), ("board hung", 0.25), ("recovered", 0.25))
CONFIDENCE_THRESHOLD = 0.5  # classifiers: samples the accelerator is less sure of go to the cloud model


def typical_data(manifest) -> np.ndarray | None:
    """Real raw features for the 'typical' traffic when the package is a zoo model that ships some."""
    source = manifest.model.source
    if not source.startswith("zoo:"):
        return None
    try:
        from lepton_hls import zoo

        data = zoo.get(source.split(":", 1)[1]).eval_data()
    except Exception:  # no data is fine: the traffic falls back to the model's input distribution
        return None
    return None if data is None else np.asarray(data[0], dtype=np.float64)


async def _send_all(url: str, model: str, input_name: str, samples, concurrency: int, rate: float | None = None):
    """Send every sample as one request, at most `concurrency` in flight; with `rate`, request i is not sent
    before i/rate seconds (a steady arrival rate instead of as fast as answers come back)."""
    sem = asyncio.Semaphore(concurrency)
    results = [None] * len(samples)
    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one(i, s):
            body, headers = oip.encode_infer_request([oip.Tensor(input_name, "FP32", s.x.astype(np.float32))],
                                                     request_id=str(i))
            if rate:
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            async with sem:
                t0 = time.perf_counter()
                r = await client.post(f"{url}/v2/models/{model}/infer", content=body, headers=headers)
                dt = time.perf_counter() - t0
            params = {}
            if r.status_code == 200:
                params = oip.decode_infer_response(r.content, r.headers.get(oip.HEADER_LENGTH)).parameters
                error = ""
            else:
                error = oip.error_message(r.content, r.reason_phrase)
            results[i] = {"kind": s.kind, "status": r.status_code, "latency_s": dt,
                          "served_by": params.get("served_by", "none"), "reason": params.get("route_reason", ""),
                          "degraded": bool(params.get("degraded", False)), "error": error}

        await asyncio.gather(*(one(i, s) for i, s in enumerate(samples)))
    return results


def _burst(args) -> list[dict]:
    """Runs in the client process: the load must not share the gateway's interpreter (and its GIL)."""
    return asyncio.run(_send_all(*args))


def _inject(backend, fault: str | None) -> str:
    device = getattr(getattr(backend, "accelerator", None), "device", None)
    if device is None or not hasattr(device, "inject"):
        return "none (the edge backend has no fault injection)"
    if fault is None:
        device.clear()
        reset = getattr(backend.accelerator, "reset", None)
        if reset is not None:
            reset()
        return "cleared"
    device.inject(fault)
    return fault


def summarize(records: list[dict]) -> dict:
    def pct(v):
        v = np.asarray(v) * 1e3
        return {"n": int(v.size), "p50_ms": float(np.percentile(v, 50)), "p90_ms": float(np.percentile(v, 90)),
                "p99_ms": float(np.percentile(v, 99))} if v.size else {"n": 0}

    by_path = {}
    for path in sorted({r["served_by"] for r in records}):
        by_path[path] = pct([r["latency_s"] for r in records if r["served_by"] == path])
    by_kind = {}
    for kind in sorted({r["kind"] for r in records}):
        rs = [r for r in records if r["kind"] == kind]
        paths = sorted({r["served_by"] for r in rs})
        by_kind[kind] = {p: sum(r["served_by"] == p for r in rs) / len(rs) for p in paths}
    reasons: dict[str, int] = {}
    for r in records:
        for reason in (r["reason"] or r["error"][:60] or "-").split(","):
            reasons[reason] = reasons.get(reason, 0) + 1
    return {"requests": len(records), "answered": sum(r["status"] in (200, 503, 504) for r in records),
            "ok": sum(r["status"] == 200 for r in records), "latency_by_path": by_path,
            "served_by_kind": by_kind, "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
            "all": pct([r["latency_s"] for r in records])}


def print_summary(summary: dict, phases: dict) -> None:
    print()
    print(f"edge gateway, mixed traffic: {summary['requests']} requests, {summary['ok']} answered 200, "
          f"{summary['requests'] - summary['answered']} lost or unanswered")
    print(f"{'path':12s} {'requests':>8s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s}")
    for path, s in summary["latency_by_path"].items():
        print(f"{path:12s} {s['n']:8d} {s['p50_ms']:8.2f} {s['p90_ms']:8.2f} {s['p99_ms']:8.2f}")
    print(f"{'input kind':14s} served by")
    for kind, frac in summary["served_by_kind"].items():
        print(f"{kind:14s} " + ", ".join(f"{p} {f:.0%}" for p, f in frac.items()))
    print(f"{'phase':14s} served by")
    for phase, frac in phases.items():
        print(f"{phase:14s} " + ", ".join(f"{p} {f:.0%}" for p, f in frac.items()))
    print("reasons: " + ", ".join(f"{k} {v}" for k, v in list(summary["reasons"].items())[:8]))


def plot_histogram(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    lat = np.asarray([r["latency_s"] for r in records]) * 1e3
    bins = np.logspace(np.log10(max(lat.min(), 0.05)), np.log10(max(lat.max(), 1.0)), 40)
    for p in sorted({r["served_by"] for r in records}):
        ax.hist([r["latency_s"] * 1e3 for r in records if r["served_by"] == p], bins=bins, alpha=0.6, label=p)
    ax.set_xscale("log")
    ax.set_xlabel("request latency at the client (ms)")
    ax.set_ylabel("requests")
    ax.set_title("edge gateway: latency by the path that answered")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_serving_demo(package_dir, out_dir, requests: int = 600, rate: float = 100.0, concurrency: int = 16,
                     board: str = "emulated-board", fault: str = "hang") -> dict:
    """Cloud server + gateway on the emulated board + a bounded mixed burst with an injected board fault."""
    package_dir, out_dir = Path(package_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(package_dir)
    cloud_proc, cloud_url = start_cloud_process(package_dir, out_dir / "cloud.log")
    backend = None
    try:
        try:
            backend = open_edge_backend(package_dir, board, "fast")
        except Exception as e:  # no pynq here: the emulator still shows the routing, without the fault
            print(f"note: {board} unavailable ({e}); serving on the emulator", file=sys.stderr)
            backend = open_edge_backend(package_dir, "emulator", "fast")
        policy = RoutingPolicy.for_package(
            manifest, package_dir,
            confidence_threshold=CONFIDENCE_THRESHOLD if manifest.model.task == "classifier" else None,
        )
        config = GatewayConfig(
            batcher=BatcherConfig(max_batch_size=32, max_queue_delay_s=0.0005, compute_timeout_s=0.25),
            policy=policy,
            cloud=CloudConfig(cloud_url, breaker=BreakerConfig(failure_threshold=5, reset_timeout_s=2.0)),
            request_timeout_s=5.0, health_interval_s=0.1, server=ServerOptions(server_name="lepton-hls-gateway"),
        )
        samples = mixed_traffic(manifest, backend, requests, seed=0, unsure_below=CONFIDENCE_THRESHOLD,
                                typical=typical_data(manifest))
        app, service = create_gateway(manifest, backend, config)
        records, phase_fracs, start = [], {}, 0
        client = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        with ServerThread(app) as gw, client:
            for (phase, share), action in zip(PHASES, (None, fault, "clear")):
                if action == "clear":
                    _inject(backend, None)
                    deadline = time.monotonic() + 5
                    while not service.edge_healthy and time.monotonic() < deadline:
                        time.sleep(0.05)
                elif action is not None:
                    _inject(backend, action)
                n = round(requests * share) if phase != PHASES[-1][0] else len(samples) - start
                part = client.submit(_burst, (gw.url, service.name, service.input.name, samples[start : start + n],
                                              concurrency, rate)).result(timeout=600)
                for r in part:
                    r["phase"] = phase
                records += part
                phase_fracs[phase] = {p: sum(r["served_by"] == p for r in part) / len(part)
                                      for p in sorted({r["served_by"] for r in part})}
                start += n
            metrics_text = httpx.get(gw.url + "/metrics").text
        summary = summarize(records)
        summary["phases"] = phase_fracs
        summary["edge_backend"] = backend.name
        summary["fault"] = fault
        summary["routing"] = policy.to_dict()
        print_summary(summary, phase_fracs)
        plot_histogram(records, out_dir / "latency_histogram.png")
        (out_dir / "metrics.txt").write_text(metrics_text)
        (out_dir / "serving.json").write_text(json.dumps({"summary": summary, "requests": records}, indent=1))
        summary["histogram_png"] = str(out_dir / "latency_histogram.png")
        return summary
    finally:
        if backend is not None:
            backend.close()
        stop_process(cloud_proc)
