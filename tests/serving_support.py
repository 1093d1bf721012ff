"""Shared helpers of the serving tests (no tests here): a tiny package with its original Keras model, a real
numpy backend that computes that model with the accelerator's input range (and injects board faults), and
small OIP peers for the cloud's failure modes."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from lepton_host.backend import Health
from lepton_host.errors import LeptonError
from lepton_host.fixedpoint import FixedFormat
from lepton_host.manifest import (
    Fidelity,
    HlsInfo,
    Manifest,
    ModelInfo,
    Preprocessing,
    TensorSpec,
    load_manifest,
)

N_IN, N_HIDDEN, N_OUT = 16, 8, 5
IN_FORMAT = FixedFormat.parse("ap_fixed<16,6>")  # representable range [-32, 32)
MEAN, SCALE = 0.5, 2.0  # preprocessing: raw feature 64.5 -> 32.0, just outside the range


def make_package(root: Path, task: str = "classifier", seed: int = 0) -> Path:
    """A package dir with manifest.json and model/{model.json, weights.h5} (what the cloud server loads),
    plus the same weights as npz for the numpy backend. Imports TensorFlow."""
    import tensorflow as tf

    root.mkdir(parents=True, exist_ok=True)
    (root / "model").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    if task == "classifier":
        sizes, name, out_name = (N_IN, N_HIDDEN, N_OUT), "tiny_classifier", "softmax"
    else:
        sizes, name, out_name = (8, 3, 8), "tiny_autoencoder", "decoded"
    inp = tf.keras.Input((sizes[0],), name="features")
    h = tf.keras.layers.Dense(sizes[1], activation="relu", name="fc1")(inp)
    if task == "classifier":
        z = tf.keras.layers.Dense(sizes[2], name="fc2")(h)
        out = tf.keras.layers.Softmax(name=out_name)(z)
    else:
        out = tf.keras.layers.Dense(sizes[2], name=out_name)(h)
    model = tf.keras.Model(inp, out, name=name)
    weights = [
        rng.normal(0, 0.6, (sizes[0], sizes[1])), rng.normal(0, 0.1, sizes[1]),
        rng.normal(0, 0.6, (sizes[1], sizes[2])), rng.normal(0, 0.1, sizes[2]),
    ]
    model.set_weights([w.astype(np.float32) for w in weights])
    (root / "model" / "model.json").write_text(model.to_json())
    model.save_weights(str(root / "model" / "weights.h5"))
    np.savez(root / "model" / "reference.npz", *[w.astype(np.float32) for w in weights])
    n_in = sizes[0]
    manifest = Manifest(
        model=ModelInfo(name=name, source="test", sha256="0" * 64, task=task,
                        classes=tuple(f"c{i}" for i in range(sizes[2])) if task == "classifier" else (),
                        threshold=0.5 if task == "autoencoder" else None, framework="keras"),
        inputs=[TensorSpec("features", (n_in,), IN_FORMAT)],
        outputs=[TensorSpec(out_name, (sizes[2],), FixedFormat.parse("ap_fixed<16,6>"))],
        hls=HlsInfo(backend="Vitis", board=None, part="xc7z020clg400-1", clock_ns=10.0, io_type="io_parallel",
                    strategy="Latency", reuse_factor=1),
        preprocessing=Preprocessing("standard", (MEAN,) * n_in, (SCALE,) * n_in) if task == "classifier"
        else Preprocessing(),
        fidelity=Fidelity(),
    )
    manifest.add_artifacts(root, ["model/model.json", "model/weights.h5"])
    manifest.save(root)
    return root


def keras_reference(package: Path, x: np.ndarray) -> np.ndarray:
    """The float model in numpy (float32 like TensorFlow), on raw features."""
    m = load_manifest(package, verify=False)
    w = np.load(package / "model" / "reference.npz")
    x = m.preprocessing.apply(x).astype(np.float32)
    h = np.maximum(x @ w["arr_0"] + w["arr_1"], 0)
    z = h @ w["arr_2"] + w["arr_3"]
    if m.model.task != "classifier":
        return z.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float64)


class NumpyBoardBackend:
    """A real Backend: the package's model computed in numpy on inputs cast to the accelerator's input format
    (out-of-range values saturate, as the IP's would), outputs on the output grid. Faults as a board shows
    them: `hang` (no answer until cleared; raises after the call's timeout, as the board runtime does),
    `missing` (device gone),
    `slow` (answers after `delay_s`)."""

    def __init__(self, package: Path, hang_limit_s: float = 5.0):
        self.manifest = load_manifest(package, verify=False)
        w = np.load(package / "model" / "reference.npz")
        self.w = [w[f"arr_{i}"].astype(np.float64) for i in range(4)]
        self.name = "numpy-board"
        self.fault: str | None = None
        self.delay_s = 0.05
        self.hang_limit_s = hang_limit_s
        self._unhang = threading.Event()
        self.calls = 0
        self.rows = 0
        self._lock = threading.Lock()

    def set_fault(self, fault: str | None, delay_s: float = 0.05) -> None:
        self.fault, self.delay_s = fault, delay_s
        if fault is None:
            self._unhang.set()
        else:
            self._unhang.clear()

    def predict(self, x: np.ndarray, timeout: float | None = None) -> np.ndarray:
        with self._lock:
            fault = self.fault
            if fault == "missing":
                raise LeptonError("accelerator not found: the board does not answer on its DMA (device missing)")
            if fault == "hang":  # like the board runtime: give up after the caller's timeout
                limit = self.hang_limit_s if timeout is None else min(timeout, self.hang_limit_s)
                self._unhang.wait(limit)
                raise LeptonError(f"DMA transfer did not complete within {limit:.3g} s (accelerator hung)")
            if fault == "slow":
                time.sleep(self.delay_s)
            self.calls += 1
            self.rows += x.shape[0]
            m = self.manifest
            q = m.input.format.cast(np.clip(m.preprocessing.apply(x), m.input.format.min_value,
                                            m.input.format.max_value))
            h = np.maximum(q @ self.w[0] + self.w[1], 0)
            z = h @ self.w[2] + self.w[3]
            if m.model.task == "classifier":
                e = np.exp(z - z.max(axis=1, keepdims=True))
                z = e / e.sum(axis=1, keepdims=True)
            return m.output.format.cast(z)

    def health(self) -> Health:
        if self.fault == "missing":
            return Health(False, "device missing", self.name)
        return Health(True, "ok", self.name)

    def close(self) -> None:
        self._unhang.set()


# ---- servers shared by the serving tests (one TensorFlow load per test session) ------------------------------


@functools.lru_cache(maxsize=None)
def shared_package(task: str = "classifier") -> Path:
    root = Path(tempfile.mkdtemp(prefix="lepton-serving-")) / task
    return make_package(root, task)


@functools.lru_cache(maxsize=None)
def shared_cloud(task: str = "classifier"):
    """The reference cloud server on the shared package, for the whole session."""
    from lepton_cloud.server import create_cloud_server
    from lepton_host.serving.runner import ServerThread

    app, _ = create_cloud_server(shared_package(task))
    server = ServerThread(app).start()
    atexit.register(server.stop)
    return server


@contextlib.contextmanager
def running_gateway(package: Path, backend, cloud_url: str | None = None, *, token: str | None = None,
                    batcher=None, policy=None, cloud_kw: dict | None = None, breaker=None,
                    request_timeout_s: float = 5.0, max_body_bytes: int = 8 << 20, body_timeout_s: float = 10.0,
                    http_limits=None, edge_retry_s: float = 1.0):
    """A gateway on a free loopback port around `backend`, stopped on exit."""
    from lepton_host.serving.app import ServerOptions
    from lepton_host.serving.batcher import BatcherConfig
    from lepton_host.serving.cloud_client import CloudConfig
    from lepton_host.serving.gateway import GatewayConfig, create_gateway
    from lepton_host.serving.routing import RoutingPolicy
    from lepton_host.serving.runner import ServerThread

    manifest = load_manifest(package)
    cloud = None
    if cloud_url is not None:
        cloud = CloudConfig(cloud_url, breaker=breaker, **(cloud_kw or {}))
    config = GatewayConfig(
        batcher=batcher or BatcherConfig(), policy=policy or RoutingPolicy.for_package(manifest, package),
        cloud=cloud, request_timeout_s=request_timeout_s, health_interval_s=0.1, edge_retry_s=edge_retry_s,
        server=ServerOptions(token=token, max_body_bytes=max_body_bytes, body_timeout_s=body_timeout_s),
    )
    app, service = create_gateway(manifest, backend, config)
    server = ServerThread(app, limits=http_limits).start()
    try:
        yield server, service
    finally:
        backend.close()
        server.stop()


def metric_value(url: str, series: str, headers: dict | None = None) -> float:
    """The value of one series on the server's /metrics, named as it is written there (name and labels, e.g.
    'lepton_gateway_cloud_attempts_total{kind="hedge",outcome="ok"}'); 0 when the series is not there yet.
    `headers`: e.g. the bearer token of a server that wants one."""
    for line in httpx.get(url + "/metrics", headers=headers).text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return 0.0


def wait_until(pred, what: str = "condition", timeout: float = 30.0) -> None:
    """Poll `pred` until it holds; fail naming `what` after a deadline far beyond any expected wait."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"{what}: not reached within {timeout:g} s"
        time.sleep(0.02)


def free_port() -> int:
    """A loopback port nobody listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SwitchableCloud:
    """An OIP peer in front of a real cloud server whose health the test switches: `pass` (forward to the
    real server), `5xx` (503 with an error body), `slow` (answer after `delay_s`), `stall` (answer only once
    the test calls `release()`), `stall_first` (the first request in this mode stalls like that, later ones
    pass). Faults and the `hits` count apply to inference requests; `content_types` records each inference
    request's; `stalled` is set when a request starts to stall."""

    def __init__(self, target_url: str, mode: str = "pass", delay_s: float = 1.0):
        import httpx
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        from lepton_host.serving.runner import ServerThread

        self.mode, self.delay_s, self.hits = mode, delay_s, 0
        self.content_types: list[str] = []
        self.stalled = threading.Event()
        self._released = threading.Event()
        self._target = target_url
        client_holder: dict = {}

        async def forward(request: Request):
            is_infer = request.url.path.endswith("/infer")  # metadata and health pass through untouched
            self.hits += is_infer
            if is_infer:
                self.content_types.append(request.headers.get("content-type", ""))
            mode = self.mode if is_infer else "pass"
            if mode == "5xx":
                return JSONResponse({"error": "model instance crashed (injected)"}, status_code=503)
            if mode == "slow":
                await asyncio.sleep(self.delay_s)
            if mode == "stall" or (mode == "stall_first" and not self.stalled.is_set()):
                self.stalled.set()
                while not self._released.is_set():  # polled: the event is set from the test's thread
                    await asyncio.sleep(0.01)
            client = client_holder.setdefault("c", httpx.AsyncClient(timeout=30))
            r = await client.request(request.method, self._target + request.url.path,
                                     content=await request.body(),
                                     headers={k: v for k, v in request.headers.items() if k.lower() != "host"})
            headers = {k: v for k, v in r.headers.items()
                       if k.lower() in ("content-type", "inference-header-content-length")}
            return Response(r.content, status_code=r.status_code, headers=headers)

        app = Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST"])])
        self.server = ServerThread(app).start()
        self.url = self.server.url

    def release(self) -> None:
        """Let every stalled request (and any later one) through."""
        self._released.set()

    def stop(self) -> None:
        self.release()
        self.server.stop()


def mlserver_style_app(package: Path):
    """A faithful stand-in for Seldon MLServer's REST surface (FastAPI): no binary tensor extension (its /v2
    lists no extensions and a binary body fails with a 500 plain-text traceback), request validation errors
    as 422 `{"detail": [...]}`, a JSON body required by content type, outputs tagged `content_type: np`."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    name = load_manifest(package, verify=False).model.name

    async def metadata(request: Request):
        return JSONResponse({"name": "mlserver", "version": "1.7.1", "extensions": []})

    async def infer(request: Request):
        if request.path_params["model"] != name:
            return JSONResponse({"error": f"Model {request.path_params['model']} not found"}, status_code=404)
        body = await request.body()
        if request.headers.get("content-type") != "application/json":
            return JSONResponse({"detail": [{"type": "model_attributes_type", "loc": ["body"],
                                             "msg": "Input should be a valid dictionary"}]}, status_code=422)
        try:
            msg = json.loads(body)
        except UnicodeDecodeError as e:
            return PlainTextResponse(f"Traceback (most recent call last):\n  ...\nUnicodeDecodeError: {e}",
                                     status_code=500)
        except json.JSONDecodeError:
            return JSONResponse({"detail": [{"loc": ["body"], "msg": "JSON decode error"}]}, status_code=422)
        t = msg["inputs"][0]
        x = np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])
        y = keras_reference(package, x).astype(np.float32)
        return JSONResponse({"model_name": name, "id": msg.get("id", "generated-id"), "parameters": {},
                             "outputs": [{"name": "softmax", "shape": list(y.shape), "datatype": "FP32",
                                          "parameters": {"content_type": "np"}, "data": y.ravel().tolist()}]})

    async def ready(request: Request):
        return JSONResponse({})

    return Starlette(routes=[
        Route("/v2", metadata), Route("/v2/health/ready", ready), Route("/v2/models/{model}/ready", ready),
        Route("/v2/models/{model}/infer", infer, methods=["POST"]),
    ])
