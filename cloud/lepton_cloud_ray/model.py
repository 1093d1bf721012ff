"""`OnnxModel`: one replica = one onnxruntime session on the exported model, on a GPU (CUDA execution provider)
when the replica was given one, else on its CPUs. Concurrent calls are batched (`@serve.batch`): each call is one
request's rows, a batch is every waiting call's rows in one run, and each caller gets its own rows back together
with the id of the replica that computed them."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from ray import serve

from lepton_host.errors import LeptonError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class GpuUnavailable(LeptonError):
    """A replica was given a GPU but onnxruntime cannot run on it here."""


@dataclass(frozen=True)
class Answer:
    """One call's rows as computed, where, and the onnxruntime run that computed them."""

    y: np.ndarray
    replica: str  # Ray Serve's replica id (the actor is SERVE_REPLICA::<app>#OnnxModel#<id>)
    device: str  # "cuda" | "cpu"
    batch_rows: int  # rows of the run (every call batched with this one)
    compute_s: float  # the run's time
    first: bool  # the batch's first call: the one that counts the run once in the statistics


def open_session(model: bytes, use_gpu: bool, threads: int):
    """-> (onnxruntime.InferenceSession, device). With `use_gpu`, the CUDA execution provider or GpuUnavailable:
    a replica asked to run on a GPU never runs on its CPU quietly."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if use_gpu and CUDA not in ort.get_available_providers():
        raise GpuUnavailable(f"this replica was given a GPU but onnxruntime {ort.__version__} here has no CUDA "
                             f"execution provider (it has {', '.join(ort.get_available_providers())}): install "
                             "onnxruntime-gpu in place of onnxruntime on the GPU nodes")
    session = ort.InferenceSession(model, options, providers=[CUDA, CPU] if use_gpu else [CPU])
    if use_gpu and session.get_providers()[0] != CUDA:
        raise GpuUnavailable("onnxruntime's CUDA execution provider did not start on this replica's GPU (see the "
                             "replica's log for the CUDA/cuDNN library it could not load)")
    return session, "cuda" if use_gpu else "cpu"


@serve.deployment
class OnnxModel:
    def __init__(self, model: bytes, input_name: str, output_name: str, use_gpu: bool, threads: int,
                 max_batch_size: int, batch_wait_timeout_s: float):
        self.session, self.device = open_session(model, use_gpu, threads)
        self.input_name, self.output_name = input_name, output_name
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.predict.set_max_batch_size(max_batch_size)
        self.predict.set_batch_wait_timeout_s(batch_wait_timeout_s)
        # One run at a time per replica: onnxruntime uses the replica's threads inside each run.
        self._runner = ThreadPoolExecutor(1, thread_name_prefix="onnxruntime")

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def predict(self, calls: list[np.ndarray]) -> list[Answer]:
        rows = np.concatenate([np.asarray(x, np.float32) for x in calls])
        start = time.perf_counter()
        y = await asyncio.get_running_loop().run_in_executor(self._runner, self._run, rows)
        compute_s = time.perf_counter() - start
        ends = np.cumsum([len(x) for x in calls])[:-1]
        return [Answer(part, self.replica, self.device, len(rows), compute_s, i == 0)
                for i, part in enumerate(np.split(y, ends))]
