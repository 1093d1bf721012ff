"""The cascade scenario of `lepton-hls demo`: the digits accelerator at the edge, its stronger float partner in
the cloud (`lepton-hls cloud --model zoo:digits_cloud`, its own process), the threshold calibrated on the
held-out digits, and those digits replayed through the gateway one request each: edge-only, cloud-only and
system accuracy, the offload fraction by reason, and the latency of each path."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from lepton_host.manifest import load_manifest
from lepton_host.serving.edge import open_edge_backend

from .cascade_calibration import HeldOut, calibrate, oip_cloud
from .cascade_frontier import Target
from .cascade_replay import replay
from .frontier_plot import plot_frontier
from .serving_processes import start_cloud_process, start_gateway_process, stop_process


def run_cascade_demo(package_dir, out_dir, cloud_model: str | None = None) -> dict:
    from . import zoo
    from .commands.serving_policy import install_policy

    package_dir, out_dir = Path(package_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(package_dir)
    entry = zoo.get(manifest.model.name)
    cloud_model = cloud_model or f"zoo:{entry.partner}"
    x, labels = entry.eval_data()
    procs = []
    try:
        cloud_proc, cloud_url = start_cloud_process(package_dir, out_dir / "cloud.log", model=cloud_model)
        procs.append(cloud_proc)
        backend = open_edge_backend(package_dir, "emulator", "fast")
        cloud = oip_cloud(cloud_url, manifest.model.name, manifest.input.name, manifest.output.name)
        try:
            cal = calibrate(package_dir, manifest, HeldOut(x, labels, f"zoo:{entry.name}"), backend.predict, cloud,
                            Target())
        finally:
            backend.close()
            cloud.close()
        install_policy(package_dir, cal.routing(), where="the calibrated policy", extra={"calibration": cal.summary()})
        plot = plot_frontier(cal, out_dir / "cascade_frontier.png")
        gw_proc, gw_url = start_gateway_process(package_dir, out_dir / "gateway.log", cloud_url)
        procs.append(gw_proc)
        replay(gw_url, manifest.model.name, manifest.input.name, x[:20], labels[:20])  # connections, first calls
        served = replay(gw_url, manifest.model.name, manifest.input.name, x, labels)
        counters = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                    for line in httpx.get(gw_url + "/metrics").text.splitlines()
                    if line.startswith("lepton_gateway_samples_total{")}
    finally:
        for proc in procs:
            stop_process(proc)
    summary = {
        "edge_model": manifest.model.name, "cloud_model": cloud_model, "n": int(labels.size),
        "edge_accuracy": cal.edge_accuracy, "cloud_accuracy": cal.cloud_accuracy,
        "calibrated": cal.summary(), "frontier_png": str(plot),
        "served_accuracy": served.accuracy(), "served_offload_fraction": served.offload_fraction(),
        "served_reasons": served.reason_counts(), "latency_by_path": served.latency_by_path(),
        "gateway_sample_counters": counters,
    }
    (out_dir / "cascade.json").write_text(json.dumps(summary, indent=2))
    _print(summary, cal)
    return summary


def _print(s: dict, cal) -> None:
    c = cal.chosen
    print()
    print(f"cascade: {s['edge_model']} on the edge, {s['cloud_model']} in the cloud, {s['n']} held-out digits "
          "replayed through the gateway")
    print(f"  edge only   {s['edge_accuracy']:7.2%}")
    print(f"  cloud only  {s['cloud_accuracy']:7.2%}")
    print(f"  system      {s['served_accuracy']:7.2%}  with {s['served_offload_fraction']:.1%} answered by the cloud "
          f"(calibrated: {c.criterion} < {c.threshold:.4g}, predicted {c.cascade_accuracy:.2%} at "
          f"{c.offload_fraction:.1%})")
    print("  reasons: " + ", ".join(f"{k} {v}" for k, v in s["served_reasons"].items()))
    for path, v in s["latency_by_path"].items():
        if v["n"]:
            print(f"  {path:6s} {v['n']:4d} requests: mean {v['mean_ms']:.2f} ms, p50 {v['p50_ms']:.2f} ms, "
                  f"p99 {v['p99_ms']:.2f} ms")
