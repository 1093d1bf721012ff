"""`OipIngress`: the application's HTTP front. It serves the gateway's own Open Inference Protocol app
(lepton_host.serving.app: health, metadata with the class order, Triton's model configuration, inference in JSON
or binary tensors, /metrics, the bearer token of LEPTON_HLS_CLOUD_TOKEN) over a `ModelService` whose inference
is a call to the `OnnxModel` deployment.

A call lost with its replica (the actor died: a crash, a node lost, a replica killed) is sent again, to another
replica, within the request's deadline: Ray's router drops a dead replica from its choices and the controller
starts a replacement, so a client sees no error for it. Every answer states the replica that computed it (in
the response's parameters), and /metrics counts answers per replica.
"""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
from prometheus_client import Counter
from ray import serve
from ray.exceptions import RayActorError

from lepton_cloud.onnx_contract import OnnxContract
from lepton_hls import __version__
from lepton_hls.commands.cloud import TOKEN_ENV
from lepton_host.serving.app import ServerOptions, TensorInfo, create_app
from lepton_host.serving.errors import DeadlineExceeded, Unavailable
from lepton_host.serving.metrics import ServingMetrics
from lepton_host.serving.oip import InferRequest
from lepton_host.serving.statistics import ModelStatistics

from .options import AppOptions

SERVER_NAME = "lepton-hls-cloud-ray"


class RayModelService:
    """The ModelService the OIP app serves: the exported model's contract, inference on the model deployment."""

    version = "1"
    platform = "onnxruntime_onnx"

    def __init__(self, model, contract: OnnxContract, options: AppOptions):
        self.model = model  # DeploymentHandle of OnnxModel
        self.name = contract.model_name
        self.input = TensorInfo(contract.input_name, tuple(contract.input_shape))
        self.output = TensorInfo(contract.output_name, tuple(contract.output_shape))
        self.classes = tuple(contract.classes)  # stated in the model metadata; the gateway compares it
        self.max_batch_size = options.max_batch_size
        self.max_queue_delay_s = options.batch_wait_timeout_s
        self.request_timeout_s = options.request_timeout_s
        self.retries = options.replica_retries
        self.metrics = ServingMetrics("lepton_cloud")
        # Triton's statistics (/stats): "queue" is a call's time outside its onnxruntime run (the trip to a
        # replica and the wait for company there), "compute_infer" the run.
        self.statistics = ModelStatistics()
        self.replica_answers = Counter(
            "lepton_cloud_replica_answers", "Inference calls answered, by the model replica that computed them",
            ["model", "replica", "device"], registry=self.metrics.registry,
        )
        self.replica_losses = Counter(
            "lepton_cloud_replica_losses", "Inference calls lost with their replica and sent again",
            ["model"], registry=self.metrics.registry,
        )

    def ready(self) -> bool:
        return True  # Ray routes HTTP to the application only once every deployment of it is running

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def infer(self, x: np.ndarray, request: InferRequest, timeout_s: float) -> tuple[np.ndarray, dict]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        x = np.ascontiguousarray(x, dtype=np.float32)
        for _ in range(self.retries + 1):
            sent = time.perf_counter()
            response = self.model.predict.remote(x)
            try:
                answer = await asyncio.wait_for(_awaited(response), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                response.cancel()
                raise DeadlineExceeded(f"no answer within the request timeout of {timeout_s:.3g} s") from None
            except RayActorError:
                self.replica_losses.labels(self.name).inc()
                continue
            self.statistics.batched(max(0.0, time.perf_counter() - sent - answer.compute_s), answer.compute_s)
            if answer.first:
                self.statistics.executed(answer.batch_rows, answer.compute_s)
                self.metrics.child(self.metrics.batch_size, self.name).observe(answer.batch_rows)
            self.replica_answers.labels(self.name, answer.replica, answer.device).inc()
            self.metrics.child(self.metrics.inferences, self.name, "cloud", "model").inc()
            return answer.y, {"served_by": "cloud", "replica": answer.replica, "device": answer.device}
        raise Unavailable(f"the model's replicas were lost under {self.retries + 1} calls in a row; Ray is "
                          "replacing them")


async def _awaited(response):
    return await response


@serve.deployment
@serve.ingress()
class OipIngress:
    def __init__(self, model, contract: OnnxContract, options: AppOptions):
        self.service = RayModelService(model, contract, options)

    def __serve_build_asgi_app__(self):
        return create_app(self.service, ServerOptions(server_name=SERVER_NAME, server_version=__version__,
                                                      token=os.environ.get(TOKEN_ENV) or None))
