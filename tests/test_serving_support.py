"""Shared helpers of the serving tests (no tests here): a tiny package with its original Keras model, a real
numpy backend that computes that model with the accelerator's input range (and injects board faults), and
small OIP peers for the cloud's failure modes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

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
    them: `hang` (never answers until cleared, bounded by `hang_limit_s`), `missing` (device gone),
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
            if fault == "hang":
                self._unhang.wait(self.hang_limit_s)
                raise LeptonError("DMA transfer did not complete (accelerator hung)")
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


def fault_server(mode: str, delay_s: float = 0.0, counter: list | None = None):
    """An OIP peer that fails the way sick clouds do: `5xx` (always 503), `slow` (answers after delay_s),
    `detail_errors` (FastAPI-style `{"detail": ...}` 4xx for binary bodies, JSON otherwise fine)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def infer(request: Request):
        if counter is not None:
            counter.append(time.monotonic())
        if mode == "5xx":
            return JSONResponse({"error": "model instance crashed"}, status_code=503)
        if mode == "slow":
            await asyncio.sleep(delay_s)
            return JSONResponse({"error": "too late"}, status_code=500)
        return JSONResponse({"error": f"unknown mode {mode}"}, status_code=500)

    async def ready(request: Request):
        return JSONResponse({"ready": mode != "5xx"}, status_code=200 if mode != "5xx" else 503)

    return Starlette(routes=[
        Route("/v2/models/{model}/infer", infer, methods=["POST"]),
        Route("/v2/models/{model}/ready", ready),
        Route("/v2/health/ready", ready),
    ])


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj))
