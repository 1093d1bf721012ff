"""`lepton-hls cloud DIR`: the reference cloud server (the package's original model in TensorFlow, or another
model that fits the package's contract, given with --model)."""

from __future__ import annotations

import os

from lepton_host.errors import LeptonError

TOKEN_ENV = "LEPTON_HLS_CLOUD_TOKEN"


class CloudOptionError(LeptonError):
    """A --model companion option (--classes, --preprocessing, --weights) is malformed or misplaced."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cloud", help="serve the package's original model, or another one that fits it (TensorFlow, GPU when "
        "present), over OIP v2",
        description="Reference cloud server for the gateway's fallback and cascade. A bearer token is required "
        f"when {TOKEN_ENV} is set.",
    )
    p.add_argument("package", metavar="DIR", help="overlay package directory (served name, tensors, contract)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--grpc-port", type=int, default=None, metavar="PORT",
                   help="also serve the protocol over gRPC (KServe v2 / Triton GRPCInferenceService) on this port of "
                   "--host (default: HTTP only; 0 picks a free port)")
    p.add_argument("--device", default=None, help="TensorFlow device, e.g. /GPU:0 (default: first GPU, else CPU)")
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    p.add_argument("--no-dynamic-batching", dest="dynamic_batching", action="store_false",
                   help="every request runs alone, never batched with another")
    p.add_argument("--max-queue", type=int, default=512)
    add_model_options(p)
    p.set_defaults(func=run)


def add_model_options(p) -> None:
    """--model and its companions, for every command that takes the cloud model as `cloud` does (model_choice
    reads them)."""
    m = p.add_argument_group("another model than the package's own (its input and output shapes must be the "
                             "package's)")
    m.add_argument("--model", metavar="MODEL", default=None,
                   help="a Keras .h5, an architecture .json (weights from --weights or beside it), a TensorFlow "
                   "SavedModel directory, or zoo:NAME")
    m.add_argument("--weights", metavar="FILE.h5", default=None, help="weights of a --model .json")
    m.add_argument("--classes", metavar="A,B,...", default=None,
                   help="the model's class order (default: the zoo entry's, else the package's)")
    m.add_argument("--preprocessing", metavar="FILE.json", default=None,
                   help="raw features -> model inputs, {\"kind\": \"standard\", \"mean\": [...], \"scale\": [...]} "
                   "(default: the zoo entry's, else the package's)")


def model_choice(args):
    """-> served_model.ModelChoice from --model and its companions, or None (the package's own model)."""
    from lepton_cloud.served_model import ModelChoice

    if args.model is None:
        given = [f for f, v in (("--weights", args.weights), ("--classes", args.classes),
                                ("--preprocessing", args.preprocessing)) if v is not None]
        if given:
            raise CloudOptionError(f"{', '.join(given)} only apply with --model; the package's own model takes its "
                                   "classes and preprocessing from the package")
        return None
    classes = None
    if args.classes is not None:
        classes = tuple(c.strip() for c in args.classes.split(","))
        if not all(classes):
            raise CloudOptionError(f"--classes {args.classes!r} has an empty name; give A,B,... in the model's order")
    return ModelChoice(args.model, args.weights, classes, read_preprocessing(args.preprocessing))


def read_preprocessing(path: str | None):
    import json

    from lepton_host.manifest import Preprocessing

    if path is None:
        return None
    try:
        d = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as e:
        raise CloudOptionError(f"--preprocessing {path}: cannot read it as JSON ({e})") from None
    if not isinstance(d, dict):
        raise CloudOptionError(f"--preprocessing {path}: expected a JSON object with kind, mean and scale")
    return Preprocessing.from_dict(d, where=f"--preprocessing {path}")


def run(args) -> int:
    from lepton_hls import __version__
    from lepton_host.serving.app import ServerOptions
    from lepton_host.serving.batcher import BatcherConfig
    from lepton_cloud.server import CloudServerConfig, create_cloud_server
    from lepton_host.serving.options import check_serving_args
    from lepton_host.serving.runner import bind, require_grpc, reserve_port, serve_forever

    check_serving_args(args)
    choice = model_choice(args)
    sock = bind(args.host, args.port)  # before the model loads and anything is announced
    grpc_port = None
    try:
        if args.grpc_port is not None:  # checked free now; the gRPC server binds it when serving starts
            require_grpc()
            grpc_port = reserve_port(args.host, args.grpc_port, "--grpc-port", beside=sock)
    except BaseException:
        sock.close()
        raise
    config = CloudServerConfig(
        batcher=BatcherConfig(max_batch_size=args.max_batch_size, max_queue_delay_s=args.max_queue_delay_ms / 1e3,
                              max_queue_size=args.max_queue, compute_timeout_s=10.0, dynamic=args.dynamic_batching),
        device=args.device,
        model=choice,
        server=ServerOptions(server_name="lepton-hls-cloud", server_version=__version__,
                             token=os.environ.get(TOKEN_ENV) or None),
    )
    try:
        app, service = create_cloud_server(args.package, config)
    except BaseException:
        sock.close()
        raise
    front = None
    if grpc_port is not None:
        from lepton_host.serving.grpc_server import GrpcFront

        front = GrpcFront.for_service(service, config.server, grpc_port)
    what = "" if choice is None else f"; model {choice.source}"
    print(f"lepton-hls cloud: {service.name} on http://{args.host}:{sock.getsockname()[1]}/v2/models/{service.name} "
          f"(TensorFlow on {service.model.device}{what})", flush=True)
    if front is not None:
        print(f"lepton-hls cloud: gRPC on {args.host}:{grpc_port} (inference.GRPCInferenceService)", flush=True)
    serve_forever(app, sock, grpc=front)
    return 0
