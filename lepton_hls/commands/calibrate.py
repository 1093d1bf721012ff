"""`lepton-hls calibrate DIR --cloud URL|MODEL --data HELDOUT`: choose the cascade's escalation threshold on
labelled held-out data, write it into the package's serving.json, and plot the accuracy–offload frontier."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .serve import CLOUD_TOKEN_ENV  # the gateway's and calibration's token for the same cloud


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="choose the cascade threshold on labelled held-out data (edge vs a stronger cloud model)",
        description="Runs the package's bit-exact edge and the cloud model on labelled held-out data, computes "
        "system accuracy against the fraction of samples answered by the cloud for each escalation criterion "
        "(max_probability, margin, entropy; reconstruction_error for autoencoders), picks the threshold that "
        "meets the target, records it in DIR/serving.json and writes a PNG of the frontier. Without a target: "
        "the least offload whose accuracy is within 0.3 percentage points of the cloud's.",
    )
    p.add_argument("package", metavar="DIR", help="overlay package directory")
    p.add_argument("--cloud", required=True, metavar="URL|MODEL",
                   help="the cloud: an OIP server URL (lepton-hls cloud, Triton, KServe), or a Keras model "
                   "(.h5, .json with weights beside it, SavedModel folder, or zoo:NAME) run here")
    p.add_argument("--cloud-model", default="", help="model name on the cloud server (default: the package's)")
    p.add_argument("--cloud-weights", metavar="FILE.h5", default=None,
                   help="weights of a --cloud architecture .json (default: <stem>_weights.h5 or <stem>.h5 beside it)")
    p.add_argument("--data", required=True, metavar="HELDOUT",
                   help="labelled held-out data: an .npz with x (raw features) and y (labels), or zoo:NAME")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--target-accuracy", type=float, metavar="A",
                   help="least offload whose system accuracy is at least A (a fraction, 0.985)")
    t.add_argument("--max-offload", type=float, metavar="F",
                   help="best system accuracy with at most this fraction answered by the cloud (0.2)")
    t.add_argument("--latency-budget-ms", type=float, metavar="L",
                   help="best system accuracy whose predicted MEAN request latency is at most L ms")
    p.add_argument("--criterion", action="append", default=None,
                   help="only this escalation criterion (repeatable; default: every one for the model's task)")
    p.add_argument("--edge-latency-ms", type=float, default=None,
                   help="the edge's latency per request as measured on the board (default: the bit-exact "
                   "engine's batch-1 time here)")
    p.add_argument("--plot", metavar="PNG", default=None,
                   help="where to write the frontier (default: DIR/calibration/frontier.png)")
    p.add_argument("--dry-run", action="store_true", help="report the choice; leave serving.json as it is")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from lepton_host.manifest import load_manifest
    from lepton_host.serving.edge import open_edge_backend

    from lepton_hls.cascade_calibration import calibrate, load_heldout, oip_cloud
    from lepton_hls.cascade_frontier import CalibrationError, Target, check_target
    from lepton_hls.frontier_plot import plot_frontier
    from lepton_hls.progress import Progress

    from .predict import check_package_verified

    target = Target(accuracy=args.target_accuracy, max_offload=args.max_offload,
                    mean_latency_s=None if args.latency_budget_ms is None else args.latency_budget_ms / 1e3)
    check_target(target)
    if args.edge_latency_ms is not None and not args.edge_latency_ms > 0:
        raise CalibrationError(f"--edge-latency-ms must be positive, got {args.edge_latency_ms:g}")
    pkg = Path(args.package)
    manifest = load_manifest(pkg)
    check_package_verified(pkg, False, "calibrate")
    from lepton_host.serving.cascade_criteria import DEFAULT_CRITERION, criterion

    if manifest.model.task not in DEFAULT_CRITERION:
        raise CalibrationError(f"{pkg} holds a {manifest.model.task} model: the cascade escalates classifiers "
                               "(on confidence) and autoencoders (on reconstruction error) only")
    for name in args.criterion or ():
        criterion(name, manifest.model.task)  # a wrong name fails before anything is run
    data = load_heldout(args.data, manifest)
    progress = Progress()
    if args.cloud.startswith(("http://", "https://")):
        cloud = oip_cloud(args.cloud, args.cloud_model or manifest.model.name, manifest.input.name,
                          manifest.output.name, token=os.environ.get(CLOUD_TOKEN_ENV))
    else:
        from lepton_hls.cascade_cloud_local import local_cloud

        with progress.step(f"load the cloud model {args.cloud}"):
            cloud = local_cloud(args.cloud, pkg, manifest, weights=args.cloud_weights)
    backend = open_edge_backend(pkg, "emulator", "fast")
    try:
        cal = calibrate(pkg, manifest, data, backend.predict, cloud, target, criteria=args.criterion,
                        edge_latency_s=None if args.edge_latency_ms is None else [args.edge_latency_ms / 1e3],
                        progress=progress)
    finally:
        backend.close()
        cloud.close()
    plot = plot_frontier(cal, args.plot or pkg / "calibration" / "frontier.png")
    summary = cal.summary() | {"plot": str(plot), "serving_json": None}
    if not args.dry_run:
        from .serving_policy import install_policy

        current = _current_routing(pkg)
        routing = {**current, **cal.routing()}
        install_policy(pkg, routing, where="the calibrated policy", extra={"calibration": cal.summary()})
        summary["serving_json"] = str(pkg / "serving.json")
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print(cal, summary)
    if not cal.target_met:
        print(f"lepton-hls calibrate: warning: no threshold meets the target ({cal.target.describe()}); "
              "the closest point was chosen", file=sys.stderr)
    if summary["serving_json"] and (pkg / "signature.json").is_file():
        print("lepton-hls calibrate: the package's signature no longer matches its manifest; sign it again "
              f"(lepton-hls sign {pkg} --key KEY) before pushing it", file=sys.stderr)
    return 0


def _current_routing(pkg: Path) -> dict:
    """The package's serving.json routing keys, which the calibration keeps (a latency budget, a mode)."""
    path = pkg / "serving.json"
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()).get("routing", {}))
    except (json.JSONDecodeError, AttributeError):
        return {}


def _print(cal, summary: dict) -> None:
    c = cal.chosen
    lat = summary["latency"]
    pred = lat["predicted"]
    print(f"{cal.model}: {cal.n} held-out samples from {cal.data}; cloud: {cal.cloud}")
    print(f"  edge only   {cal.edge_accuracy:7.2%}   (mean {lat['edge_mean_ms']:.3f} ms per request)")
    print(f"  cloud only  {cal.cloud_accuracy:7.2%}   (mean {lat['cloud_mean_ms']:.3f} ms per request)")
    print(f"  cascade     {c.cascade_accuracy:7.2%}   with {c.offload_fraction:.1%} answered by the cloud "
          f"({c.escalated_fraction:.1%} escalated, {c.pre_routed_fraction:.1%} out of range)")
    print(f"  chosen: {c.criterion} threshold {c.threshold:.6g} for {cal.target.describe()}"
          + ("" if cal.target_met else " (NOT met)"))
    print(f"  predicted latency at this point: mean {pred['mean_ms']:.3f} ms, p50 {pred['p50_ms']:.3f} ms, "
          f"p99 {pred['p99_ms']:.3f} ms")
    print(f"  {'criterion':22s} " + " ".join(f"{'<=' + k:>8s}" for k in next(iter(summary['criteria'].values()))))
    for name, row in summary["criteria"].items():
        print(f"  {name:22s} " + " ".join(f"{'-' if v is None else f'{v:.2%}':>8s}" for v in row.values()))
    print(f"  frontier: {summary['plot']}")
    if summary["serving_json"]:
        print(f"  written: {summary['serving_json']} (the gateway serves with this threshold)")
