"""The reference cloud server: the package's original (Q)Keras model in TensorFlow, on a GPU when one is
present, behind the same Open Inference Protocol surface and dynamic batcher as the gateway. It takes the same
raw features as the gateway (the manifest's preprocessing is applied here too), so a request can go to either
unchanged. Imports TensorFlow; never imports the board runtime.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lepton_host.errors import LeptonError
from lepton_host.manifest import Manifest, load_manifest

from lepton_host.serving.app import ServerOptions, TensorInfo, create_app
from lepton_host.serving.batcher import BatcherConfig, DynamicBatcher
from lepton_host.serving.errors import DeadlineExceeded
from lepton_host.serving.metrics import ServingMetrics
from lepton_host.serving.oip import InferRequest


class ModelLoadError(LeptonError):
    """The package's original model could not be loaded into TensorFlow."""


@dataclass
class CloudServerConfig:
    batcher: BatcherConfig = field(
        default_factory=lambda: BatcherConfig(max_batch_size=256, max_queue_delay_s=0.002, max_queue_size=512,
                                              compute_timeout_s=10.0)
    )
    request_timeout_s: float = 10.0
    device: str | None = None  # "/GPU:0", "/CPU:0"; default: the first GPU if any
    server: ServerOptions = field(default_factory=lambda: ServerOptions(server_name="lepton-hls-cloud"))


def pick_device(requested: str | None = None) -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:  # share the GPU with other processes instead of taking all its memory at start
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # already initialised
    if requested:
        return requested
    return "/GPU:0" if gpus else "/CPU:0"


def load_keras_model(package_dir: str | os.PathLike):
    """The package's original model (model/model.json + model/weights.h5, or a whole-model model/model.h5),
    read by the same loader the build uses (QKeras layers, quantizers given as objects)."""
    from lepton_hls import keras_io

    root = Path(package_dir) / "model"
    if (root / "model.json").is_file():
        if not (root / "weights.h5").is_file():
            raise ModelLoadError(f"{root}: model.json without weights.h5; rebuild the package")
        files = keras_io.ModelFiles(name=root.parent.name, source=str(root / "model.json"),
                                    architecture_json=(root / "model.json").read_text(),
                                    weights_path=root / "weights.h5")
    elif (root / "model.h5").is_file():
        files = keras_io.resolve_files(root / "model.h5")
    else:
        raise ModelLoadError(f"{root}: no model.json/weights.h5 or model.h5; the package lacks its original model")
    try:
        return keras_io.load_keras(files)
    except keras_io.ModelLoadError as e:
        raise ModelLoadError(f"{root}: cannot load the original model into TensorFlow: {e}") from None


class KerasModel:
    """The model as a callable on raw features; one compiled graph, fixed input signature (any batch)."""

    def __init__(self, package_dir: str | os.PathLike, manifest: Manifest, device: str | None = None):
        import tensorflow as tf

        self.device = pick_device(device)
        self.manifest = manifest
        with tf.device(self.device):
            self.model = load_keras_model(package_dir)
        spec = tf.TensorSpec([None, *manifest.input.shape], tf.float32)
        self._fn = tf.function(lambda x: self.model(x, training=False), input_signature=[spec])
        self._tf = tf

    def __call__(self, x: np.ndarray, timeout: float | None = None) -> np.ndarray:
        x_pre = self.manifest.preprocessing.apply(x).astype(np.float32)
        with self._tf.device(self.device):
            y = self._fn(x_pre)
        return np.asarray(y, dtype=np.float64)


class CloudModelService:
    version = "1"

    def __init__(self, package_dir: str | os.PathLike, manifest: Manifest | None = None,
                 config: CloudServerConfig | None = None, model=None):
        self.manifest = manifest or load_manifest(package_dir)
        self.config = config or CloudServerConfig()
        self.name = self.manifest.model.name
        self.platform = "tensorflow_keras"
        self.input = TensorInfo(self.manifest.input.name, tuple(self.manifest.input.shape))
        self.output = TensorInfo(self.manifest.output.name, tuple(self.manifest.output.shape))
        self.max_batch_size = self.config.batcher.max_batch_size
        self.max_queue_delay_s = self.config.batcher.max_queue_delay_s
        self.request_timeout_s = self.config.request_timeout_s
        self.metrics = ServingMetrics("lepton_cloud")
        self.model = model or KerasModel(package_dir, self.manifest, self.config.device)
        self.model(np.zeros((1, *self.input.shape)))  # trace the graph before the first request
        self.batcher = DynamicBatcher(self.model, self.config.batcher, name="cloud", on_batch=self._on_batch)

    def _on_batch(self, n: int, queue_s: float, compute_s: float) -> None:
        self.metrics.child(self.metrics.batch_size, self.name).observe(n)
        self.metrics.child(self.metrics.compute_latency, self.name).observe(compute_s)

    def ready(self) -> bool:
        return not self.batcher.stalled

    async def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    async def infer(self, x: np.ndarray, request: InferRequest, timeout_s: float) -> tuple[np.ndarray, dict]:
        try:
            res = await asyncio.wait_for(self.batcher.submit(x), timeout_s)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"no answer within the request timeout of {timeout_s:.3g} s") from None
        self.metrics.child(self.metrics.queue_latency, self.name).observe(res.queue_s)
        self.metrics.child(self.metrics.inferences, self.name, "cloud", "model").inc()
        return res.y, {"served_by": "cloud", "device": getattr(self.model, "device", "")}


def create_cloud_server(package_dir: str | os.PathLike, config: CloudServerConfig | None = None):
    """-> (Starlette app, CloudModelService)."""
    service = CloudModelService(package_dir, config=config)
    return create_app(service, service.config.server), service

