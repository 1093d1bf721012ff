"""What a server plugs into the OIP app (`app.create_app`): one model's tensors, readiness and an async `infer`
(`ModelService`), and the server's HTTP options. The edge gateway and the cloud server each provide one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .metrics import ServingMetrics
from .oip import InferRequest


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # per sample
    datatype: str = "FP32"


class ModelService(Protocol):
    name: str
    version: str
    platform: str
    input: TensorInfo
    output: TensorInfo
    max_batch_size: int
    max_queue_delay_s: float
    request_timeout_s: float
    metrics: ServingMetrics

    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def infer(self, x: np.ndarray, request: InferRequest, timeout_s: float) -> tuple[np.ndarray, dict]:
        """Answer within `timeout_s` or raise a ServingError (DeadlineExceeded when out of time)."""
        ...


@dataclass
class ServerOptions:
    server_name: str = "lepton-hls"
    server_version: str = ""
    token: str | None = None
    max_body_bytes: int = 8 << 20  # on the wire and after decompression
    max_request_rows: int = 4096
    body_timeout_s: float = 10.0  # from the end of the headers to the end of the body
