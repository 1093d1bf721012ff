"""`lepton-hls cloud DIR`: the reference cloud server (the package's original model in TensorFlow)."""

from __future__ import annotations

import os

TOKEN_ENV = "LEPTON_HLS_CLOUD_TOKEN"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cloud", help="serve the package's original model (TensorFlow, GPU when present) over OIP v2",
        description="Reference cloud server for the gateway's fallback. A bearer token is required when "
        f"{TOKEN_ENV} is set.",
    )
    p.add_argument("package", metavar="DIR", help="overlay package directory")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--device", default=None, help="TensorFlow device, e.g. /GPU:0 (default: first GPU, else CPU)")
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    p.add_argument("--max-queue", type=int, default=512)
    p.set_defaults(func=run)


def run(args) -> int:
    from lepton_hls import __version__
    from lepton_host.serving.app import ServerOptions
    from lepton_host.serving.batcher import BatcherConfig
    from lepton_cloud.server import CloudServerConfig, create_cloud_server
    from lepton_host.serving.options import check_serving_args
    from lepton_host.serving.runner import bind, serve_forever

    check_serving_args(args)
    sock = bind(args.host, args.port)  # before the model loads and anything is announced
    config = CloudServerConfig(
        batcher=BatcherConfig(max_batch_size=args.max_batch_size, max_queue_delay_s=args.max_queue_delay_ms / 1e3,
                              max_queue_size=args.max_queue, compute_timeout_s=10.0),
        device=args.device,
        server=ServerOptions(server_name="lepton-hls-cloud", server_version=__version__,
                             token=os.environ.get(TOKEN_ENV) or None),
    )
    try:
        app, service = create_cloud_server(args.package, config)
    except BaseException:
        sock.close()
        raise
    print(f"lepton-hls cloud: {service.name} on http://{args.host}:{sock.getsockname()[1]}/v2/models/{service.name} "
          f"(TensorFlow on {service.model.device})")
    serve_forever(app, sock)
    return 0
