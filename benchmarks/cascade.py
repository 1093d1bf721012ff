"""Big/LITTLE cascade benchmark: for each model pair of the zoo (an edge QKeras model and a stronger float cloud
model, trained on real data that ships), the accuracy–offload trade-off on the edge model's held-out split, the
threshold `lepton-hls calibrate` picks, and the latency it predicts set against the same traffic measured
through the gateway.

    python benchmarks/cascade.py [--pairs digits_cnn,cancer_mlp] [--out out/bench/cascade] [--passes 3]

Per pair, in one run:
1. the edge package is built with `lepton-hls build` when missing;
2. `lepton-hls cloud PKG --model zoo:<cloud>` starts in its own process;
3. calibration on the whole held-out split (target: cloud-only accuracy - 0.3 pp, the least offload that
   reaches it), written to the package's serving.json; and 2-fold cross-validation (threshold chosen on one
   stratified half, scored on the other, both ways, pooled), the honest estimate of that choice;
4. three servers answer the held-out samples one request at a time, interleaved over --passes passes: a gateway
   forced to the edge (`--mode edge`), the cloud server directly, and the gateway with the calibrated policy.
   The first two give the latency model's inputs; its prediction for the chosen point is compared with the third,
   whose answers also give the system accuracy and offload as served (and its per-reason sample counters).
Writes benchmarks/results/cascade.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_PAIRS = ("digits_cnn", "cancer_mlp")


def stratified_halves(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = np.zeros(labels.size, bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        a[idx[: (idx.size + 1) // 2]] = True
    return a, ~a


def cross_validate(cal, labels: np.ndarray) -> dict:
    """Choose on one half, score on the other, both ways; pooled over the whole split."""
    from lepton_host.serving.cascade_criteria import CRITERIA
    from lepton_hls.cascade_frontier import Target, choose, frontier

    ps = cal.per_sample
    a, b = stratified_halves(labels)
    served_right = np.zeros(labels.size, bool)
    offloaded = np.zeros(labels.size, bool)
    folds = []
    for fit, test in ((a, b), (b, a)):
        fs = [frontier(CRITERIA[name], s[fit], ps["edge_ok"][fit], ps["cloud_ok"][fit], ps["pre_routed"][fit])
              for name, s in ps["scores"].items()]
        target = Target(accuracy=max(0.0, float(ps["cloud_ok"][fit].mean()) - 0.003))
        p, _ = choose(fs, target, float(ps["pre_routed"][fit].mean()))
        crit = CRITERIA[p.criterion]
        s = ps["scores"][p.criterion][test]
        esc = (s > p.threshold if crit.escalate_above else s < p.threshold) | ps["pre_routed"][test]
        served_right[test] = np.where(esc, ps["cloud_ok"][test], ps["edge_ok"][test])
        offloaded[test] = esc
        folds.append({"criterion": p.criterion, "threshold": p.threshold, "test_accuracy": float(served_right[test].mean()),
                      "test_offload": float(esc.mean())})
    return {"cascade_accuracy": float(served_right.mean()), "offload_fraction": float(offloaded.mean()),
            "folds": folds}


def gateway_counters(url: str) -> dict:
    out = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("lepton_gateway_samples_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels[len("lepton_gateway_samples_total"):]] = int(float(value))
    return out


def run_pair(edge: str, out_dir: Path, passes: int) -> dict:
    from lepton_host.manifest import load_manifest
    from lepton_host.serving.edge import open_edge_backend

    from lepton_hls import zoo
    from lepton_hls.cascade_calibration import HeldOut, calibrate, oip_cloud
    from lepton_hls.cascade_frontier import Target
    from lepton_hls.cascade_latency import LatencyModel, summarize
    from lepton_hls.cascade_replay import replay
    from lepton_hls.commands.serving_policy import install_policy
    from lepton_hls.frontier_plot import plot_frontier
    from lepton_hls.serving_processes import start_cloud_process, start_gateway_process, stop_process

    entry = zoo.get(edge)
    cloud_name = entry.partner
    pkg = out_dir / edge
    if not (pkg / "manifest.json").is_file():
        print(f"building {pkg} ...", flush=True)
        from lepton_hls.build import build_package
        from lepton_hls.build_config import load_config
        from lepton_hls.progress import Progress

        build_package(edge, pkg, load_config(), verify_samples=500, force=True, progress=Progress(False))
    manifest = load_manifest(pkg)
    x, labels = entry.eval_data()
    procs = []
    try:
        cloud_proc, cloud_url = start_cloud_process(pkg, out_dir / f"{edge}-cloud.log", model=f"zoo:{cloud_name}")
        procs.append(cloud_proc)
        backend = open_edge_backend(pkg, "emulator", "fast")
        cloud = oip_cloud(cloud_url, manifest.model.name, manifest.input.name, manifest.output.name)
        try:
            cal = calibrate(pkg, manifest, HeldOut(x, labels, f"zoo:{edge}"), backend.predict, cloud, Target())
        finally:
            backend.close()
            cloud.close()
        install_policy(pkg, {"confidence_threshold": cal.chosen.threshold, "cascade_criterion": cal.chosen.criterion},
                       extra={"calibration": cal.summary()})
        plot = plot_frontier(cal, RESULTS / f"cascade_{edge}.png")
        cv = cross_validate(cal, labels)

        edge_proc, edge_url = start_gateway_process(pkg, out_dir / f"{edge}-edge-gw.log", cloud_url, "--mode", "edge")
        procs.append(edge_proc)
        auto_proc, auto_url = start_gateway_process(pkg, out_dir / f"{edge}-auto-gw.log", cloud_url)
        procs.append(auto_proc)
        name, inp = manifest.model.name, manifest.input.name
        # One warm-up pass each (connection set-up, first-call costs), then interleaved measured passes.
        for url in (edge_url, cloud_url, auto_url):
            replay(url, name, inp, x[:20], labels[:20])
        runs = {"edge": [], "cloud": [], "cascade": []}
        for p in range(passes):
            print(f"{edge}: pass {p + 1}/{passes}", flush=True)
            for key, url in (("edge", edge_url), ("cloud", cloud_url), ("cascade", auto_url)):
                runs[key].append(replay(url, name, inp, x, labels))
        lat = {k: np.concatenate([r.latency_s for r in v]) for k, v in runs.items()}
        model = LatencyModel(lat["edge"], lat["cloud"])
        measured = runs["cascade"]
        offload = float(np.mean([r.offload_fraction() for r in measured]))
        counters = gateway_counters(auto_url)
    finally:
        for proc in procs:
            stop_process(proc)
    return {
        "edge_model": edge, "cloud_model": cloud_name, "n": int(labels.size),
        "edge_accuracy": cal.edge_accuracy, "cloud_accuracy": cal.cloud_accuracy,
        "in_sample": {"cascade_accuracy": cal.chosen.cascade_accuracy, "offload_fraction": cal.chosen.offload_fraction,
                      "criterion": cal.chosen.criterion, "threshold": cal.chosen.threshold},
        "cross_validated": cv,
        "frontier": {f.criterion: {f"{o:.2f}": float(f.accuracy[f.offload <= o + 1e-12].max())
                                   for o in (0.0, 0.02, 0.05, 0.1, 0.2)} for f in cal.frontiers},
        "served": {"accuracy": float(np.mean([r.accuracy() for r in measured])), "offload_fraction": offload,
                   "edge_only_accuracy": float(np.mean([r.accuracy() for r in runs["edge"]])),
                   "cloud_only_accuracy": float(np.mean([r.accuracy() for r in runs["cloud"]])),
                   "latency_by_path": measured[-1].latency_by_path(), "samples_counters": counters},
        "latency": {
            "edge_only": summarize(lat["edge"]).to_dict(), "cloud_only": summarize(lat["cloud"]).to_dict(),
            "predicted": model.predict(cal.chosen.escalated_fraction, cal.chosen.pre_routed_fraction).to_dict(),
            "measured": summarize(lat["cascade"]).to_dict(),
        },
        "plot": str(plot.relative_to(ROOT)),
    }


def print_tables(rows: list[dict]) -> None:
    print()
    print(f"{'edge / cloud':28s} {'n':>4s} {'edge':>7s} {'cloud':>7s} {'cascade':>8s} {'offload':>8s} "
          f"{'CV casc.':>8s} {'CV off.':>8s} {'served':>7s} {'srv off.':>8s}  criterion")
    for r in rows:
        print(f"{r['edge_model'] + ' / ' + r['cloud_model']:28s} {r['n']:4d} {r['edge_accuracy']:7.2%} "
              f"{r['cloud_accuracy']:7.2%} {r['in_sample']['cascade_accuracy']:8.2%} "
              f"{r['in_sample']['offload_fraction']:8.1%} {r['cross_validated']['cascade_accuracy']:8.2%} "
              f"{r['cross_validated']['offload_fraction']:8.1%} {r['served']['accuracy']:7.2%} "
              f"{r['served']['offload_fraction']:8.1%}  {r['in_sample']['criterion']} "
              f"{r['in_sample']['threshold']:.4g}")
    print()
    print(f"{'latency (ms, batch 1)':28s} {'mean':>8s} {'p50':>8s} {'p99':>8s}")
    for r in rows:
        for key in ("edge_only", "cloud_only", "predicted", "measured"):
            v = r["latency"][key]
            print(f"{r['edge_model'] + ' ' + key:28s} {v['mean_ms']:8.3f} {v['p50_ms']:8.3f} {v['p99_ms']:8.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default=",".join(DEFAULT_PAIRS), help="edge zoo models (each has a cloud partner)")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "cascade"))
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [run_pair(name, out, args.passes) for name in args.pairs.split(",") if name]
    print_tables(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"command": " ".join(["python", "benchmarks/cascade.py", *sys.argv[1:]]),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "pairs": rows}
    (RESULTS / "cascade.json").write_text(json.dumps(result, indent=2))
    print(f"\nwritten: {RESULTS / 'cascade.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
