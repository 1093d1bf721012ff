"""`python -m lepton_cloud_ray`:

- `serve FILE.onnx [--manifest DIR/manifest.json] [--replicas N | --max-replicas M ...] [--num-gpus G] --port P`
  starts the application on a local Ray cluster (or on the cluster at --address) and serves until stopped;
- `config FILE.onnx ... --out serve.yaml` writes the same application as a `serve deploy` config for a cluster;
- `replicas [--address ADDR]` lists the running model replicas (Ray actor names and ids).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from lepton_host.errors import LeptonError

from .options import APP_NAME, MODEL_DEPLOYMENT, AppOptions

PROG = "python -m lepton_cloud_ray"
SERVE_NAMESPACE = "serve"  # where Ray Serve names its actors


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LeptonError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="The cloud tier on Ray Serve: an exported ONNX model "
                                     "behind the Open Inference Protocol, on replicas Ray scales.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser("serve", help="run the application on a local Ray cluster (or the one at --address)")
    _add_app_options(s)
    s.add_argument("--host", default="127.0.0.1", help="HTTP bind address of Ray's proxy (default loopback only)")
    s.add_argument("--port", type=int, default=8001,
                   help="HTTP port of Ray's proxy (a cluster whose Serve already runs keeps its own)")
    s.add_argument("--address", default=None,
                   help="join this Ray cluster (e.g. auto, or HEAD:6379) instead of starting a local one")
    s.add_argument("--local-cpus", type=int, default=None, help="CPUs of the local cluster (default: all)")
    s.add_argument("--local-gpus", type=int, default=None, help="GPUs of the local cluster (default: all found)")
    s.set_defaults(func=serve_command)
    c = sub.add_parser("config", help="write the application as a `serve deploy` config (YAML)")
    _add_app_options(c)
    c.add_argument("--host", default="0.0.0.0", help="HTTP bind address of the proxies on the cluster's nodes")
    c.add_argument("--port", type=int, default=8001)
    c.add_argument("--out", required=True, metavar="FILE.yaml")
    c.set_defaults(func=config_command)
    r = sub.add_parser("replicas", help="list the model replicas running on a cluster")
    r.add_argument("--address", default="auto")
    r.set_defaults(func=replicas_command)
    return parser


def _add_app_options(p) -> None:
    p.add_argument("onnx", metavar="FILE.onnx", help="the model from `lepton-hls export-onnx` (its path on the "
                   "machine that builds the application)")
    p.add_argument("--manifest", metavar="DIR/manifest.json", default=None,
                   help="the package the model serves for: its name, tensors and class order must match")
    g = p.add_argument_group("replicas (a fixed number, or autoscaling with --max-replicas)")
    g.add_argument("--replicas", type=int, default=None, help="model replicas (default 1)")
    g.add_argument("--min-replicas", type=int, default=None)
    g.add_argument("--max-replicas", type=int, default=None)
    g.add_argument("--target-ongoing-requests", type=float, default=None,
                   help="autoscaling target of calls in flight per replica (default: --max-batch-size)")
    g.add_argument("--num-gpus", type=float, default=0.0,
                   help="GPUs per model replica (0.5: two replicas share one); > 0 runs onnxruntime's CUDA provider")
    g.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per model replica (onnxruntime's threads)")
    g.add_argument("--ingress-replicas", type=int, default=1)
    b = p.add_argument_group("batching and time limits")
    b.add_argument("--max-batch-size", type=int, default=32, help="requests one onnxruntime run takes together")
    b.add_argument("--batch-wait-ms", type=float, default=2.0, help="how long a request waits for company")
    b.add_argument("--timeout-ms", type=float, default=10000, help="per-request timeout")


def options_from_args(args) -> AppOptions:
    return AppOptions(
        onnx=os.path.abspath(args.onnx) if args.command == "serve" else args.onnx,
        manifest=args.manifest,
        replicas=args.replicas,
        min_replicas=args.min_replicas, max_replicas=args.max_replicas,
        target_ongoing_requests=args.target_ongoing_requests, num_gpus=args.num_gpus, num_cpus=args.num_cpus,
        max_batch_size=args.max_batch_size, batch_wait_timeout_s=args.batch_wait_ms / 1e3,
        ingress_replicas=args.ingress_replicas, request_timeout_s=args.timeout_ms / 1e3,
    )


def serve_command(args) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no reports leave the machine
    from .app import build_app, load_model

    options = options_from_args(args)
    _, contract = load_model(options.onnx, options.manifest)  # a wrong file is one line, before Ray starts
    if args.address:
        join_token_auth()
    import ray
    from ray import serve

    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        # "local": a cluster of its own, even where another one on this machine would be found and joined
        ray.init(address="local", num_cpus=args.local_cpus, num_gpus=args.local_gpus, include_dashboard=False,
                 log_to_driver=False)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        try:
            serve.run(build_app(options), name=APP_NAME, route_prefix="/")
        except RuntimeError as e:  # a deployment failed to start; Ray's message names the replica's error
            raise LeptonError(f"the application did not start: {_last_error_line(str(e))}") from None
        gcs = ray.get_runtime_context().gcs_address
        replicas = (f"{options.replicas or 1} {MODEL_DEPLOYMENT} replicas" if options.max_replicas is None else
                    f"{MODEL_DEPLOYMENT} autoscaled {options.model_deployment()['autoscaling_config']['min_replicas']}"
                    f"..{options.max_replicas} replicas")
        device = f"{options.num_gpus:g} GPU each" if options.num_gpus else f"{options.num_cpus:g} CPU each"
        print(f"{PROG}: {contract.model_name} on http://{args.host}:{args.port}/v2/models/{contract.model_name} "
              f"({replicas}, {device}; Ray cluster at {gcs})", flush=True)
        stop.wait()
    finally:
        # The application lives as long as the launcher; a cluster it joined keeps running (serve deploy
        # leaves an application in place instead).
        if args.address:
            serve.delete(APP_NAME)
        else:
            serve.shutdown()
        ray.shutdown()
    return 0


def config_command(args) -> int:
    import yaml

    from .options import serve_config

    config = serve_config(options_from_args(args), args.host, args.port)
    _validate(config)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(f"# Ray Serve config of the lepton-hls cloud tier; deploy with: serve deploy {args.out}\n")
        yaml.safe_dump(config, f, sort_keys=False)
    print(f"{PROG} config: wrote {args.out} (serve deploy {args.out} on the cluster's head node)")
    return 0


def _validate(config: dict) -> None:
    """Ray Serve's own schema of a `serve deploy` config."""
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(config)
    except ValueError as e:
        raise LeptonError(f"the config does not pass Ray Serve's schema: {e}") from None


def replicas_command(args) -> int:
    import json

    for line in json.dumps(list_replicas(args.address), indent=1).splitlines():
        print(line)
    return 0


def list_replicas(address: str) -> dict:
    """{"application": status, "replicas": [{"id", "actor"}]} of the model deployment on the cluster."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    join_token_auth()
    import ray
    from ray import serve

    ray.init(address=address, log_to_driver=False)
    try:
        status = serve.status().applications.get(APP_NAME)
        prefix = f"SERVE_REPLICA::{APP_NAME}#{MODEL_DEPLOYMENT}#"
        actors = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                        if a["namespace"] == SERVE_NAMESPACE and a["name"].startswith(prefix))
        return {"application": None if status is None else str(status.status.value),
                "replicas": [{"id": name[len(prefix):], "actor": name} for name in actors]}
    finally:
        ray.shutdown()


def join_token_auth() -> None:
    """Send the cluster's token when one is at hand: Ray 2.60 starts clusters with token authentication (the
    token in ~/.ray/auth_token, or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH) but a joining driver only sends it in
    token mode, read when Ray is imported. An explicit RAY_AUTH_MODE is left alone."""
    from pathlib import Path

    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or \
            (Path.home() / ".ray" / "auth_token").is_file():
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else text
