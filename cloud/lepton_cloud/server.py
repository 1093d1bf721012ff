"""The reference cloud server: the package's original (Q)Keras model in TensorFlow, or another model that fits
the package's contract (served_model.py), on a GPU when one is present, behind the same Open Inference Protocol
surface and dynamic batcher as the gateway. It takes the same raw features as the gateway (the preprocessing is
applied here too), so a request can go to either unchanged, and states its class order in its model metadata.
Imports TensorFlow; never imports the board runtime.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

import numpy as np

from lepton_host.errors import LeptonError
from lepton_host.manifest import Manifest, load_manifest

from lepton_host.serving.app import ServerOptions, TensorInfo, create_app
from lepton_host.serving.batcher import BatcherConfig, DynamicBatcher
from lepton_host.serving.errors import DeadlineExceeded
from lepton_host.serving.metrics import ServingMetrics
from lepton_host.serving.oip import InferRequest
from lepton_host.serving.schedule_policy import priority_of
from lepton_host.serving.statistics import ModelStatistics

from .served_model import ModelChoice, ModelLoadError, ServedModel, load_keras_model, load_served_model

__all__ = ["CloudModelService", "CloudServerConfig", "KerasModel", "ModelChoice", "ModelLoadError",
           "create_cloud_server", "load_keras_model", "pick_device"]


class PreprocessingMismatch(LeptonError):
    """The preprocessing's mean and scale do not broadcast over the package's input shape."""


@dataclass
class CloudServerConfig:
    batcher: BatcherConfig = field(
        default_factory=lambda: BatcherConfig(max_batch_size=256, max_queue_delay_s=0.002, max_queue_size=512,
                                              compute_timeout_s=10.0)
    )
    request_timeout_s: float = 10.0
    device: str | None = None  # "/GPU:0", "/CPU:0"; default: the first GPU if any
    model: ModelChoice | None = None  # another model than the package's own (`--model`)
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


class KerasModel:
    """The model as a callable on raw features; one compiled graph, fixed input signature (any batch)."""

    def __init__(self, package_dir: str | os.PathLike, manifest: Manifest, device: str | None = None,
                 choice: ModelChoice | None = None):
        import tensorflow as tf

        self.device = pick_device(device)
        self.manifest = manifest
        with tf.device(self.device):
            self.served: ServedModel = load_served_model(package_dir, manifest, choice)
        self.preprocessing = self.served.preprocessing
        self.classes = self.served.classes
        spec = tf.TensorSpec([None, *manifest.input.shape], tf.float32)
        self._fn = tf.function(self.served.call, input_signature=[spec])
        self._tf = tf

    def __call__(self, x: np.ndarray, timeout: float | None = None) -> np.ndarray:
        x_pre = self.preprocessing.apply(x).astype(np.float32)
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
        self.input = TensorInfo(self.manifest.input.name, tuple(self.manifest.input.shape))
        self.output = TensorInfo(self.manifest.output.name, tuple(self.manifest.output.shape))
        self.max_batch_size = self.config.batcher.max_batch_size
        self.max_queue_delay_s = self.config.batcher.max_queue_delay_s
        self.request_timeout_s = self.config.request_timeout_s
        self.metrics = ServingMetrics("lepton_cloud")
        self.statistics = ModelStatistics()
        self.model = model or KerasModel(package_dir, self.manifest, self.config.device, self.config.model)
        served = getattr(self.model, "served", None)
        self.platform = served.platform if served is not None else "tensorflow_keras"
        # the class order this server's answers are in, stated in its model metadata (the gateway compares it)
        self.classes = tuple(getattr(self.model, "classes", self.manifest.model.classes))
        check_preprocessing(self.model, self.input.shape)
        self.batcher = DynamicBatcher(self.model, self.config.batcher, name="cloud", on_batch=self._on_batch)

    def _on_batch(self, n: int, queue_s: float, compute_s: float) -> None:
        self.statistics.executed(n, compute_s)
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
            res = await asyncio.wait_for(self.batcher.submit(x, priority_of(request.parameters)), timeout_s)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"no answer within the request timeout of {timeout_s:.3g} s") from None
        self.metrics.child(self.metrics.queue_latency, self.name).observe(res.queue_s)
        self.statistics.batched(res.queue_s, res.compute_s)
        self.metrics.child(self.metrics.inferences, self.name, "cloud", "model").inc()
        return res.y, {"served_by": "cloud", "device": getattr(self.model, "device", "")}


def check_preprocessing(model, input_shape) -> None:
    """Run the model once on zeros (tracing its graph before the first request); a preprocessing whose mean or
    scale does not fit the input shape fails here, in one line, instead of on every request."""
    try:
        model(np.zeros((1, *input_shape)))
    except ValueError as e:
        if "broadcast" not in str(e):
            raise
        pre = getattr(model, "preprocessing", None)
        sizes = f" ({len(pre.mean)} means, {len(pre.scale)} scales)" if pre is not None else ""
        raise PreprocessingMismatch(f"the preprocessing{sizes} does not fit the input shape {tuple(input_shape)}: "
                                    f"{str(e).splitlines()[0].strip()}") from None


def create_cloud_server(package_dir: str | os.PathLike, config: CloudServerConfig | None = None):
    """-> (Starlette app, CloudModelService)."""
    service = CloudModelService(package_dir, config=config)
    return create_app(service, service.config.server), service

