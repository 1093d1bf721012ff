"""The Open Inference Protocol over gRPC, beside HTTP, checked with Triton's own gRPC client (tritonclient.grpc)
against a real gateway on a real backend and against the reference cloud server: health, metadata, configuration,
statistics, inference (the same answers as over HTTP, bit for bit, with the same response parameters), the errors
(the HTTP message under the matching gRPC code), the bearer token, the gateway's cloud path, the command line, and
the stubs against the protos they were generated from."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
from dataclasses import dataclass

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from cli_runner import CLI
from serving_support import NumpyBoardBackend, metric_value, shared_cloud, shared_package, wait_until
from tritonclient.utils import InferenceServerException

from lepton_host.manifest import load_manifest
from lepton_host.serving.app import ServerOptions
from lepton_host.serving.cloud_client import CloudConfig
from lepton_host.serving.errors import ServingError
from lepton_host.serving.gateway import GatewayConfig, create_gateway
from lepton_host.serving.grpc_server import GrpcFront
from lepton_host.serving.grpc_stubs import grpc_service_pb2 as pb
from lepton_host.serving.grpc_stubs import grpc_service_pb2_grpc as rpc
from lepton_host.serving.grpc_stubs import regenerate
from lepton_host.serving.routing import RoutingPolicy
from lepton_host.serving.runner import ServerThread, reserve_port

TOKEN = "grpc-s3cret"


@contextlib.contextmanager
def gateway(cloud_url: str | None = None, *, token: str | None = None, mode: str | None = None):
    """A gateway around the numpy board with both surfaces, on free loopback ports."""
    package = shared_package()
    manifest = load_manifest(package)
    options = ServerOptions(token=token)
    config = GatewayConfig(policy=RoutingPolicy.for_package(manifest, package, mode=mode),
                           cloud=None if cloud_url is None else CloudConfig(cloud_url), health_interval_s=0.1,
                           server=options)
    backend = NumpyBoardBackend(package)
    app, service = create_gateway(manifest, backend, config)
    try:
        with ServerThread(app, grpc=GrpcFront.for_service(service, options)) as server:
            yield server, service, backend
    finally:
        backend.close()


@pytest.fixture(scope="module")
def gw():
    with gateway() as (server, service, backend):
        yield server


@pytest.fixture(scope="module")
def manifest():
    return load_manifest(shared_package())


def _grpc(server) -> tgrpc.InferenceServerClient:
    return tgrpc.InferenceServerClient(server.grpc_target)


def _http(server) -> thttp.InferenceServerClient:
    return thttp.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=30)


def _samples(n: int = 7, seed: int = 0) -> np.ndarray:
    # wide enough that some samples fall outside the accelerator's input range
    return np.random.default_rng(seed).normal(0, 20, (n, 16)).astype(np.float32)


def _infer_grpc(server, manifest, x, name=None, **kw):
    i = tgrpc.InferInput(name or manifest.input.name, list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return _grpc(server).infer(manifest.model.name, [i], **kw)


def _infer_http(server, manifest, x, name=None, **kw):
    i = thttp.InferInput(name or manifest.input.name, list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=True)
    return _http(server).infer(manifest.model.name, [i], **kw)


def _grpc_parameters(result) -> dict:
    return {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in result.get_response().parameters.items()}


# ---- health, metadata, configuration ------------------------------------------------------------------------


def test_health_and_metadata_say_what_http_says(gw, manifest):
    g, h = _grpc(gw), _http(gw)
    assert g.is_server_live() and g.is_server_ready() and g.is_model_ready(manifest.model.name)
    assert g.is_model_ready(manifest.model.name, "1")
    server = g.get_server_metadata(as_json=True)
    assert server == {k: v for k, v in h.get_server_metadata().items() if v}  # proto3 leaves an empty version out
    meta, http_meta = g.get_model_metadata(manifest.model.name, as_json=True), h.get_model_metadata(manifest.model.name)
    assert (meta["name"], meta["versions"], meta["platform"]) == (http_meta["name"], http_meta["versions"],
                                                                 http_meta["platform"])
    for key in ("inputs", "outputs"):  # int64 shapes come as strings in protobuf's JSON
        assert [(t["name"], t["datatype"], [int(s) for s in t["shape"]]) for t in meta[key]] == \
            [(t["name"], t["datatype"], t["shape"]) for t in http_meta[key]]
    config, http_config = g.get_model_config(manifest.model.name, as_json=True)["config"], \
        h.get_model_config(manifest.model.name)
    assert (config["name"], config["platform"], config["max_batch_size"]) == \
        (http_config["name"], http_config["platform"], http_config["max_batch_size"])
    assert [int(d) for d in config["input"][0]["dims"]] == http_config["input"][0]["dims"]
    assert config["input"][0]["data_type"] == http_config["input"][0]["data_type"] == "TYPE_FP32"
    assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == \
        http_config["dynamic_batching"]["max_queue_delay_microseconds"]


def test_unknown_model_and_version_are_not_found_with_the_http_message(gw, manifest):
    g, h = _grpc(gw), _http(gw)
    for call in (lambda c: c.get_model_metadata("no_such_model"),
                 lambda c: c.get_model_metadata(manifest.model.name, "7")):
        with pytest.raises(InferenceServerException) as over_grpc:
            call(g)
        with pytest.raises(InferenceServerException) as over_http:
            call(h)
        assert over_grpc.value.status() == "StatusCode.NOT_FOUND"
        assert over_grpc.value.message() == over_http.value.message()
    with pytest.raises(InferenceServerException) as e:
        g.is_model_ready("no_such_model")
    assert e.value.status() == "StatusCode.NOT_FOUND"


# ---- inference ----------------------------------------------------------------------------------------------


def test_answers_equal_the_http_answers_bit_for_bit(gw, manifest):
    for seed in range(3):
        x = _samples(seed=seed)
        over_grpc = _infer_grpc(gw, manifest, x, request_id=f"r{seed}")
        over_http = _infer_http(gw, manifest, x)
        y, y_http = over_grpc.as_numpy(manifest.output.name), over_http.as_numpy(manifest.output.name)
        assert y.dtype == y_http.dtype == np.float32 and y.shape == (x.shape[0], *manifest.output.shape)
        assert y.tobytes() == y_http.tobytes()
        response = over_grpc.get_response()
        assert (response.id, response.model_name, response.model_version) == (f"r{seed}", manifest.model.name, "1")
        assert _grpc_parameters(over_grpc) == over_http.get_response()["parameters"]
        assert _grpc_parameters(over_grpc)["served_by"] == "edge"


def test_typed_contents_are_answered_in_typed_contents(gw, manifest):
    """A request with its tensor in `contents` (not raw bytes) gets its answer there, equal to the raw answer."""
    x = _samples(seed=4)
    stub = rpc.GRPCInferenceServiceStub(grpc.insecure_channel(gw.grpc_target))
    for datatype, field in (("FP32", "fp32_contents"), ("FP64", "fp64_contents")):
        request = pb.ModelInferRequest(model_name=manifest.model.name, id="typed")
        t = request.inputs.add(name=manifest.input.name, datatype=datatype, shape=x.shape)
        getattr(t.contents, field).extend(x.astype(np.float64).ravel().tolist())
        response = stub.ModelInfer(request, timeout=30)
        assert not response.raw_output_contents and response.id == "typed"
        out = response.outputs[0]
        y = np.asarray(out.contents.fp32_contents, dtype=np.float32).reshape(tuple(out.shape))
        assert y.tobytes() == _infer_grpc(gw, manifest, x).as_numpy(manifest.output.name).tobytes()


def test_bad_requests_are_invalid_argument_with_the_http_message(gw, manifest):
    x = _samples(3)
    cases = [
        dict(name="wrong_input"),  # an input the model does not take
        dict(x=x[:, :5].copy()),  # the wrong per-sample shape
        dict(x=np.full((2, 16), np.nan, np.float32)),  # not finite
    ]
    for case in cases:
        xi = case.get("x", x)
        with pytest.raises(InferenceServerException) as over_grpc:
            _infer_grpc(gw, manifest, xi, name=case.get("name"))
        with pytest.raises(InferenceServerException) as over_http:
            _infer_http(gw, manifest, xi, name=case.get("name"))
        assert over_grpc.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert over_grpc.value.message() == over_http.value.message()
    # raw bytes that do not fill the declared shape are refused before they reach the model
    stub = rpc.GRPCInferenceServiceStub(grpc.insecure_channel(gw.grpc_target))
    request = pb.ModelInferRequest(model_name=manifest.model.name, raw_input_contents=[x.tobytes()[:-4]])
    request.inputs.add(name=manifest.input.name, datatype="FP32", shape=x.shape)
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(request, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents[0] holds 188 bytes but shape [3, 16] of FP32 needs 192" in e.value.details()


def test_unknown_model_infer_is_not_found(gw, manifest):
    i = tgrpc.InferInput(manifest.input.name, [1, 16], "FP32")
    i.set_data_from_numpy(_samples(1))
    with pytest.raises(InferenceServerException) as e:
        _grpc(gw).infer("no_such_model", [i])
    assert e.value.status() == "StatusCode.NOT_FOUND" and "no_such_model" in e.value.message()


def test_one_service_answers_both_surfaces(gw, manifest):
    """The statistics and metrics the gRPC calls leave are the service's own, seen over HTTP too."""
    g, h = _grpc(gw), _http(gw)
    before = g.get_inference_statistics(manifest.model.name, as_json=True)["model_stats"][0]
    ok = metric_value(gw.url, 'lepton_gateway_requests_total{outcome="ok",route="grpc_infer"}')
    bad = metric_value(gw.url, 'lepton_gateway_requests_total{outcome="400",route="grpc_infer"}')
    _infer_grpc(gw, manifest, _samples(5))
    _infer_http(gw, manifest, _samples(3))
    with pytest.raises(InferenceServerException):
        _infer_grpc(gw, manifest, _samples(2), name="wrong_input")
    after = g.get_inference_statistics(manifest.model.name, as_json=True)["model_stats"][0]
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 8
    assert after["inference_count"] == str(h.get_inference_statistics(manifest.model.name)["model_stats"][0]
                                           ["inference_count"])
    assert metric_value(gw.url, 'lepton_gateway_requests_total{outcome="ok",route="grpc_infer"}') == ok + 1
    assert metric_value(gw.url, 'lepton_gateway_requests_total{outcome="400",route="grpc_infer"}') == bad + 1


# ---- the token ----------------------------------------------------------------------------------------------


def test_token_is_required_except_for_health(manifest):
    with gateway(token=TOKEN) as (server, _, _):
        g = _grpc(server)
        assert g.is_server_live() and g.is_server_ready()  # the health probes need no token, as over HTTP
        for headers in (None, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
            with pytest.raises(InferenceServerException) as e:
                g.get_model_metadata(manifest.model.name, headers=headers)
            assert e.value.status() == "StatusCode.UNAUTHENTICATED" and "bearer token" in e.value.message()
            with pytest.raises(InferenceServerException) as e:
                _infer_grpc(server, manifest, _samples(2), headers=headers)
            assert e.value.status() == "StatusCode.UNAUTHENTICATED"
        auth = {"authorization": f"Bearer {TOKEN}"}
        assert g.get_model_metadata(manifest.model.name, headers=auth).name == manifest.model.name
        y = _infer_grpc(server, manifest, _samples(2), headers=auth).as_numpy(manifest.output.name)
        assert y.shape == (2, *manifest.output.shape)


# ---- the cloud path and the cloud server --------------------------------------------------------------------


def test_gateway_forced_to_the_cloud_answers_over_grpc(manifest):
    cloud = shared_cloud()
    x = _samples(seed=5)
    with gateway(cloud.url, mode="cloud") as (server, _, backend):
        at_start = backend.calls  # the service's warm-up
        over_grpc = _infer_grpc(server, manifest, x)
        over_http = _infer_http(server, manifest, x)
        assert backend.calls == at_start  # the edge answered nothing
    assert _grpc_parameters(over_grpc)["served_by"] == "cloud"
    assert _grpc_parameters(over_grpc) == over_http.get_response()["parameters"]
    y = over_grpc.as_numpy(manifest.output.name)
    assert y.tobytes() == over_http.as_numpy(manifest.output.name).tobytes()
    direct = _infer_http(cloud, manifest, x).as_numpy(manifest.output.name)  # the cloud's own answer
    assert y.tobytes() == direct.tobytes()


def test_cloud_server_over_grpc_answers_as_over_http(manifest):
    from lepton_cloud.server import create_cloud_server

    app, service = create_cloud_server(shared_package())
    with ServerThread(app, grpc=GrpcFront.for_service(service, service.config.server)) as server:
        g = _grpc(server)
        assert g.is_server_ready() and g.is_model_ready(manifest.model.name)
        assert g.get_model_metadata(manifest.model.name).platform == service.platform
        x = _samples(seed=6)
        over_grpc, over_http = _infer_grpc(server, manifest, x), _infer_http(server, manifest, x)
        assert over_grpc.as_numpy(manifest.output.name).tobytes() == \
            over_http.as_numpy(manifest.output.name).tobytes()
        assert _grpc_parameters(over_grpc)["served_by"] == "cloud"
        with pytest.raises(InferenceServerException) as e:
            _infer_grpc(server, manifest, x, name="wrong_input")
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT"


# ---- starting and stopping ----------------------------------------------------------------------------------


def _listening_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_a_grpc_port_in_use_stops_the_start_before_the_service_starts():
    package = shared_package()
    manifest = load_manifest(package)
    backend = NumpyBoardBackend(package)
    app, service = create_gateway(manifest, backend, GatewayConfig(health_interval_s=0.1))
    with _listening_port() as taken:
        front = GrpcFront.for_service(service, service.config.server, taken.getsockname()[1])
        server = ServerThread(app, grpc=front)
        with pytest.raises(ServingError, match="failed to start"):
            server.start()
        server.stop()
        with pytest.raises(ServingError, match="choose another --grpc-port"):
            reserve_port("127.0.0.1", taken.getsockname()[1], "--grpc-port")
    assert backend.calls == 0  # not even the service's warm-up call: it never started


def _backend_calls_at_start(with_grpc: bool) -> int:
    package = shared_package()
    backend = NumpyBoardBackend(package)
    app, service = create_gateway(load_manifest(package), backend, GatewayConfig(health_interval_s=60))
    front = GrpcFront.for_service(service, service.config.server) if with_grpc else None
    with ServerThread(app, grpc=front):
        return backend.calls


def test_the_service_starts_once_for_both_surfaces():
    assert _backend_calls_at_start(with_grpc=True) == _backend_calls_at_start(with_grpc=False) >= 1


def test_grpc_stops_with_the_server(manifest):
    with gateway() as (server, _, _):
        target = server.grpc_target
        assert _grpc(server).is_server_live()
    channel = grpc.insecure_channel(target)
    with pytest.raises(grpc.RpcError) as e:
        rpc.GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_serve_refuses_a_grpc_port_in_use_in_one_line(capsys):
    from lepton_hls import cli

    with _listening_port() as taken:
        assert cli.main(["serve", str(shared_package()), "--port", "0", "--grpc-port",
                         str(taken.getsockname()[1])]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("lepton-hls serve: error: cannot listen on 127.0.0.1") and "--grpc-port" in err
    assert "\n" not in err and captured.out == ""
    with _listening_port() as taken:  # one port for both protocols
        port = str(taken.getsockname()[1])
    assert cli.main(["serve", str(shared_package()), "--port", port, "--grpc-port", port]) == 2
    assert "is the HTTP port too" in capsys.readouterr().err


@dataclass
class _Address:
    url: str
    grpc_target: str


def _http_ready(url: str) -> bool:
    try:
        return httpx.get(url + "/v2/health/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_cloud_command_serves_grpc(manifest):
    proc = subprocess.Popen([*CLI, "cloud", str(shared_package()), "--port", "0", "--grpc-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert "gRPC on 127.0.0.1:" in lines[1], lines
        url = lines[0].split(" on ")[1].split("/v2")[0]
        # the HTTP server listens once the app has started, and the gRPC server with it
        wait_until(lambda: _http_ready(url), "the cloud server's readiness", timeout=120)
        target = lines[1].split("gRPC on ")[1].split()[0]
        assert tgrpc.InferenceServerClient(target).is_server_ready()
        x = _samples(2)
        y = _infer_grpc(_Address(url, target), manifest, x).as_numpy(manifest.output.name)
        assert y.tobytes() == _infer_http(_Address(url, target), manifest, x).as_numpy(manifest.output.name).tobytes()
    finally:
        proc.terminate()
        proc.wait(30)


# ---- the stubs ----------------------------------------------------------------------------------------------


def test_stubs_come_from_the_protos_beside_them():
    digest = regenerate.source_digest()
    for name in regenerate.OUTPUTS:
        head = (regenerate.HERE / name).read_text().splitlines()[:2]
        assert head == regenerate.header(digest).splitlines(), f"{name} was generated from other protos"
    # every call and message of the proto is in the stubs
    text = (regenerate.HERE / "grpc_service.proto").read_text()
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    calls = {line.split()[1].split("(")[0] for line in text.splitlines() if line.strip().startswith("rpc ")}
    assert calls == set(service.methods_by_name)
    messages = {line.split()[1] for line in text.splitlines() if line.startswith("message ")}
    assert messages == set(pb.DESCRIPTOR.message_types_by_name)


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools 1.62 is not installed")
def test_stubs_are_what_the_protos_generate():
    r = subprocess.run([sys.executable, str(regenerate.HERE / "regenerate.py"), "--check"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
