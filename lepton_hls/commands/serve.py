"""`lepton-hls serve DIR`: the edge gateway (Open Inference Protocol v2 over HTTP, and over gRPC with --grpc-port)
with a cloud fallback."""

from __future__ import annotations

import os

from .cloud import TOKEN_ENV as CLOUD_TOKEN_ENV  # the cloud server's token is what the gateway sends it

TOKEN_ENV = "LEPTON_HLS_TOKEN"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve a package at the edge (OIP v2 / KServe / Triton HTTP) with a cloud fallback",
        description="Edge gateway: answers on the accelerator (or its emulation) and falls back to a cloud OIP "
        f"server. A bearer token is required when {TOKEN_ENV} is set (or --token is given).",
    )
    p.add_argument("package", metavar="DIR", nargs="?", default=None,
                   help="overlay package directory (or serve a model repository with --repository)")
    m = p.add_argument_group("model repository (REPO/<model>/<version>/, hot reload, over-the-air updates)")
    m.add_argument("--repository", metavar="REPO", default=None,
                   help="serve every model of REPO, each at the version its config.json's version_policy chooses")
    m.add_argument("--trusted-keys", metavar="DIR", default=None,
                   help="folder of signers' .pub files; packages signed by none of them are refused")
    m.add_argument("--allow-unsigned", action="store_true",
                   help="development only: admit unsigned packages (still checked against their manifests)")
    m.add_argument("--watch-s", type=float, default=2.0,
                   help="rescan REPO this often for new versions or policy changes (0: never)")
    m.add_argument("--max-upload-mb", type=float, default=512, help="largest package `lepton-hls push` may send")
    m.add_argument("--canary-soak-s", type=float, default=60.0,
                   help="a canary that passes its thresholds this long (and --canary-min-requests) is promoted")
    m.add_argument("--canary-min-requests", type=int, default=50)
    m.add_argument("--canary-max-error-rate", type=float, default=0.01,
                   help="a canary whose failed requests pass this share is rolled back")
    m.add_argument("--canary-max-mismatches", type=int, default=0,
                   help="a canary with more audited answers than this differing from its bit-exact emulation is "
                   "rolled back (every canary answer is audited)")
    p.add_argument("--cloud", metavar="URL", help="cloud OIP server, e.g. http://10.0.0.5:8001 (none: edge only)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=None, metavar="PORT",
                   help="also serve the protocol over gRPC (KServe v2 / Triton GRPCInferenceService) on this port of "
                   "--host, e.g. 8001 as Triton does (default: HTTP only; 0 picks a free port)")
    from ._target import add_target_arguments

    add_target_arguments(p, legacy="--board")
    g = p.add_argument_group("batching")
    g.add_argument("--max-batch-size", type=int, default=64)
    g.add_argument("--max-queue-delay-ms", type=float, default=0.5,
                   help="how long a request may wait for company (0: no wait, but queued requests still share "
                   "a batch)")
    g.add_argument("--no-dynamic-batching", dest="dynamic_batching", action="store_false",
                   help="every request runs alone on the backend, never batched with another")
    g.add_argument("--max-queue", type=int, default=256, help="requests waiting before new ones are refused")
    g.add_argument("--timeout-ms", type=float, default=5000, help="per-request timeout")
    g.add_argument("--edge-timeout-ms", type=float, default=1000, help="a board call longer than this is a hang")
    g.add_argument("--inline-max-ms", type=float, default=2.0,
                   help="backend calls faster than this run on the event loop (0: always on a worker thread; "
                   "use 0 for a backend that does not honour its timeout)")
    r = p.add_argument_group("routing (defaults from DIR/serving.json, then these flags)")
    r.add_argument("--mode", choices=("auto", "edge", "cloud"), default=None)
    r.add_argument("--latency-budget-ms", type=float, default=None,
                   help="send work to the cloud when the edge queue would make it wait longer")
    r.add_argument("--confidence-threshold", type=float, default=None,
                   help="classifiers: escalate samples whose max probability is below this to the cloud")
    r.add_argument("--error-threshold", type=float, default=None,
                   help="autoencoders: escalate samples whose reconstruction MSE is above this")
    r.add_argument("--no-range-check", action="store_true", help="serve out-of-range inputs on the edge too")
    c = p.add_argument_group("cloud client")
    c.add_argument("--cloud-model", default="", help="model name on the cloud server (default: the package's)")
    c.add_argument("--cloud-timeout-ms", type=float, default=2000)
    c.add_argument("--cloud-retries", type=int, default=1)
    c.add_argument("--breaker-failures", type=int, default=5)
    c.add_argument("--breaker-reset-s", type=float, default=5.0)
    c.add_argument("--hedge-percentile", type=float, default=None, help="e.g. 95: hedge slow cloud requests")
    c.add_argument("--cloud-json", action="store_true", help="send JSON instead of binary tensors to the cloud")
    h = p.add_argument_group("edge health, audit and faults")
    h.add_argument("--health-interval-ms", type=float, default=500,
                   help="how often the board is probed, and a board out of service reset and self-tested")
    h.add_argument("--probe-failures", type=int, default=3,
                   help="consecutive failed health probes before the edge is taken out (one failed batch is enough)")
    h.add_argument("--audit-fraction", type=float, default=0.01,
                   help="share of edge answers re-computed on the package's bit-exact emulator off the request "
                   "path (0..1; every answer for --audit-window-s after the edge comes back); a mismatch takes "
                   "the edge out")
    h.add_argument("--audit-window-s", type=float, default=10.0)
    h.add_argument("--fault", action="append", default=[], metavar="KIND[:key=value,...]@START[-END]",
                   help="emulated board only: inject a fault START seconds after serving starts and clear it at "
                   "END (hang, short:keep_fraction=F, corrupt:mask=0x80008000,every=N, slow:delay_s=S, missing); "
                   "repeatable")
    p.add_argument("--token", default=None, help=f"bearer token (prefer the {TOKEN_ENV} environment variable)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="serve a package whose fidelity check failed (a warning is printed)")
    p.set_defaults(func=run)


def build_gateway(args):
    """-> (app, service, backend) from parsed arguments; separate from `run` so the demo can reuse it."""
    from lepton_host.manifest import load_manifest
    from lepton_host.serving.edge import open_edge_backend
    from lepton_host.serving.fault_schedule import parse_schedule
    from lepton_host.serving.gateway import create_gateway
    from lepton_host.serving.routing import RoutingPolicy

    from ._target import resolve_target

    args.target, args.engine = resolve_target(args, "serve")
    faults = parse_schedule(getattr(args, "fault", None))  # before loading anything: a bad spec is one line
    if faults and args.target != "emulated-board":
        from lepton_host.serving.fault_schedule import FaultSpecError

        raise FaultSpecError("--fault needs --target emulated-board (faults are injected into the emulated board)")
    manifest = load_manifest(args.package)
    from .predict import check_package_verified

    check_package_verified(args.package, getattr(args, "allow_unverified", False), "serve")
    policy = RoutingPolicy.for_package(manifest, args.package, **routing_overrides(args))
    config = gateway_config(args, policy, str(args.package), manifest)
    backend = open_edge_backend(args.package, args.target, args.engine)
    if faults:
        from lepton_host.serving.fault_schedule import FaultSchedule

        config.fault_schedule = FaultSchedule(backend.accelerator.device, faults)
    app, service = create_gateway(manifest, backend, config)
    return app, service, backend


def routing_overrides(args) -> dict:
    """The routing flags given on the command line, over each package's serving.json."""
    return dict(mode=args.mode,
                latency_budget_s=None if args.latency_budget_ms is None else args.latency_budget_ms / 1e3,
                confidence_threshold=args.confidence_threshold, error_threshold=args.error_threshold,
                check_range=False if args.no_range_check else None)


def gateway_config(args, policy=None, package_dir: str | None = None, manifest=None):
    """The gateway's settings from the command line; a repository node gives each version its own policy and
    package_dir (and cloud contract: version_opener_with_contract)."""
    from lepton_host.serving.audit import AuditConfig
    from lepton_host.serving.batcher import BatcherConfig
    from lepton_host.serving.edge_monitor import MonitorConfig
    from lepton_host.serving.gateway import GatewayConfig
    from lepton_host.serving.routing import RoutingPolicy

    cloud = cloud_config(args, manifest)
    interval_s = getattr(args, "health_interval_ms", 500) / 1e3
    return GatewayConfig(
        batcher=BatcherConfig(max_batch_size=args.max_batch_size, max_queue_delay_s=args.max_queue_delay_ms / 1e3,
                              max_queue_size=args.max_queue, compute_timeout_s=args.edge_timeout_ms / 1e3,
                              inline_max_s=args.inline_max_ms / 1e3, dynamic=args.dynamic_batching),
        policy=policy or RoutingPolicy(), cloud=cloud, request_timeout_s=args.timeout_ms / 1e3,
        health_interval_s=interval_s, package_dir=package_dir,
        monitor=MonitorConfig(probe_failures=getattr(args, "probe_failures", 3), probe_timeout_s=max(interval_s, 0.2)),
        audit=AuditConfig(fraction=getattr(args, "audit_fraction", 0.01),
                          window_s=getattr(args, "audit_window_s", 10.0))
        if getattr(args, "audit_fraction", 0.01) > 0 else None,
        server=server_options(args),
    )


def server_options(args):
    """The HTTP and gRPC surfaces' options: the server's name and version, the bearer token."""
    from lepton_host.serving.app import ServerOptions
    from lepton_hls import __version__

    return ServerOptions(server_name="lepton-hls-gateway", server_version=__version__,
                         token=args.token or os.environ.get(TOKEN_ENV) or None)


def cloud_config(args, manifest=None):
    """The cloud client's settings (None without --cloud); with a manifest, the contract the cloud model must
    match (cloud_contract.py)."""
    from lepton_host.serving.breaker import BreakerConfig
    from lepton_host.serving.cloud_client import CloudConfig
    from lepton_host.serving.cloud_contract import ModelContract

    if not args.cloud:
        return None
    return CloudConfig(
        url=args.cloud, model=args.cloud_model, read_timeout_s=args.cloud_timeout_ms / 1e3,
        retries=args.cloud_retries, hedge_percentile=args.hedge_percentile, binary=not args.cloud_json,
        token=os.environ.get(CLOUD_TOKEN_ENV),
        breaker=BreakerConfig(failure_threshold=args.breaker_failures, reset_timeout_s=args.breaker_reset_s),
        contract=None if manifest is None else ModelContract.from_manifest(manifest),
    )


def check_cloud_at_start(args) -> tuple[bool, list[str]]:
    """Compare the cloud model with the package before serving -> (checked, warnings to print). A cloud model that
    does not match ends the start (CloudContractError, naming the cloud without credentials); an unreachable
    cloud is checked on first contact instead."""
    if not args.cloud:
        return False, []
    import asyncio

    from lepton_host.manifest import load_manifest
    from lepton_host.serving.cloud_client import CloudClient, redact_url
    from lepton_host.serving.cloud_contract import CloudContractError
    from lepton_host.serving.errors import UpstreamError

    manifest = load_manifest(args.package, verify=False)  # the artifacts are checked when the gateway opens them
    config = cloud_config(args, manifest)

    async def check() -> list[str]:
        client = CloudClient(config, manifest.model.name, manifest.input.name, manifest.output.name)
        try:
            return await client.check_contract()
        finally:
            await client.close()

    try:
        return True, asyncio.run(check())
    except CloudContractError as e:
        raise e.at(redact_url(args.cloud)) from None
    except UpstreamError as e:
        return False, [f"cloud contract not checked at start: {e}; checked on first contact"]


def version_opener_with_contract(base, engine: str, metrics, overrides: dict):
    """node.version_opener, with each version's own manifest as the contract its cloud client checks."""
    import dataclasses

    from lepton_host.serving.cloud_contract import ModelContract
    from lepton_host.serving.node import version_opener

    if base.cloud is None:
        return version_opener(base, engine, metrics, overrides)

    def open_version(admitted, target: str, audit_all: bool):
        cloud = dataclasses.replace(base.cloud, contract=ModelContract.from_manifest(admitted.manifest))
        return version_opener(dataclasses.replace(base, cloud=cloud), engine, metrics, overrides)(
            admitted, target, audit_all)

    return open_version


def build_node(args):
    """-> (app, node) for `serve --repository REPO`."""
    from lepton_host.backends import real_board_available
    from lepton_host.model_repository import Trust
    from lepton_host.serving.metrics import ServingMetrics
    from lepton_host.serving.node import EdgeNode, NodeOptions
    from lepton_host.serving.node_app import create_node_app

    from ._target import resolve_target

    target, engine = resolve_target(args, "serve")
    if target == "auto":
        target = "board" if real_board_available() else "emulator"
    trust = Trust.from_options(args.trusted_keys, args.allow_unsigned)
    base = gateway_config(args)
    metrics = ServingMetrics("lepton_gateway")
    options = NodeOptions(target=target, watch_s=args.watch_s or None, max_upload_bytes=int(args.max_upload_mb * 2**20),
                          canary_soak_s=args.canary_soak_s, canary_min_requests=args.canary_min_requests,
                          canary_max_error_rate=args.canary_max_error_rate,
                          canary_max_audit_mismatches=args.canary_max_mismatches)
    opener = version_opener_with_contract(base, engine, metrics, routing_overrides(args))
    node = EdgeNode(args.repository, trust, opener, options, metrics)
    return create_node_app(node, base.server), node


def run(args) -> int:
    from lepton_host.serving.options import check_serve_args

    check_serve_args(args)
    if (args.package is None) == (args.repository is None):
        from lepton_host.serving.errors import InvalidOption

        raise InvalidOption("give a package DIR or --repository REPO (one of them)")
    return _run_repository(args) if args.repository else _run_package(args)


def _grpc_port(args, sock) -> int | None:
    """--grpc-port checked free (0: one chosen) before anything is announced; the HTTP socket closes on failure."""
    if args.grpc_port is None:
        return None
    from lepton_host.serving.runner import require_grpc, reserve_port

    try:
        require_grpc()
        return reserve_port(args.host, args.grpc_port, "--grpc-port", beside=sock)
    except BaseException:
        sock.close()
        raise


def _announce_grpc(args, grpc_port: int | None) -> None:
    if grpc_port is not None:
        print(f"lepton-hls serve: gRPC on {args.host}:{grpc_port} (inference.GRPCInferenceService)", flush=True)


def _run_repository(args) -> int:
    from lepton_host.serving.runner import bind, serve_forever

    if args.fault:
        from lepton_host.serving.errors import InvalidOption

        raise InvalidOption("--fault serves one package; it does not apply to --repository")
    sock = bind(args.host, args.port)
    grpc_port = _grpc_port(args, sock)
    try:
        app, node = build_node(args)
    except BaseException:
        sock.close()
        raise
    front = None
    if grpc_port is not None:
        from lepton_host.serving.grpc_server import GrpcFront
        from lepton_host.serving.node_app import NodeModels

        front = GrpcFront(NodeModels(node), server_options(args), grpc_port)
    where = f"http://{args.host}:{sock.getsockname()[1]}"
    print(f"lepton-hls serve: repository {args.repository} on {where}/v2/repository/index "
          f"({node.options.target}; {node.trust.describe()})", flush=True)
    _announce_grpc(args, grpc_port)
    serve_forever(app, sock, grpc=front)
    return 0


def _run_package(args) -> int:
    from lepton_host.serving.cloud_client import redact_url
    from lepton_host.serving.runner import bind, serve_forever

    sock = bind(args.host, args.port)  # before the announcement: a port in use is one error line
    grpc_port = _grpc_port(args, sock)
    try:
        contract_checked, cloud_warnings = check_cloud_at_start(args)  # before the board opens
        app, service, backend = build_gateway(args)
    except BaseException:
        sock.close()
        raise
    if contract_checked:
        service.cloud.accept_contract(cloud_warnings)
    front = None
    if grpc_port is not None:
        from lepton_host.serving.grpc_server import GrpcFront

        front = GrpcFront.for_service(service, service.config.server, grpc_port)
    where = f"http://{args.host}:{sock.getsockname()[1]}"
    cloud = redact_url(args.cloud) if args.cloud else "none"
    print(f"lepton-hls serve: {service.name} on {where}/v2/models/{service.name} "
          f"(edge: {backend.name}; cloud: {cloud}; routing: {service.router.policy.to_dict()})")
    _announce_grpc(args, grpc_port)
    if service.audit_note:
        print(f"lepton-hls serve: warning: {service.audit_note}")
    for warning in cloud_warnings:
        print(f"lepton-hls serve: warning: {warning}", flush=True)
    if service.fault_schedule is not None:
        print("lepton-hls serve: fault schedule: " + "; ".join(f.spec for f in service.fault_schedule.faults))
    try:
        serve_forever(app, sock, grpc=front)
    finally:
        backend.close()
    return 0
