"""What the servers advertise is what they do: Triton's statistics extension (read with tritonclient), the
model configuration's limits and batching, a real "batching off", and the schedule-policy extension's
per-request priority and timeout."""

from __future__ import annotations

import asyncio
import threading

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from serving_support import NumpyBoardBackend, running_gateway, shared_cloud, shared_package
from tritonclient.utils import InferenceServerException

from lepton_host.manifest import load_manifest
from lepton_host.serving.batcher import BatcherConfig, DynamicBatcher
from lepton_host.serving.schedule_policy import DEFAULT_PRIORITY, PRIORITY_LEVELS


def _client(url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url.removeprefix("http://"), connection_timeout=10, network_timeout=30)


def _infer(c, name: str, x: np.ndarray, **kw):
    inp = triton.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x.astype(np.float32))
    return c.infer(name, [inp], **kw)


@pytest.fixture
def gateway():
    package = shared_package()
    with running_gateway(package, NumpyBoardBackend(package), None) as (gw, service):
        yield gw, service


def test_statistics_count_what_was_served(gateway):
    gw, service = gateway
    c = _client(gw.url)
    rng = np.random.default_rng(0)
    sizes = [1, 3, 7, 1, 2]
    for n in sizes:
        _infer(c, service.name, rng.normal(size=(n, 16)))
    with pytest.raises(InferenceServerException):
        _infer(c, service.name, np.full((1, 16), np.nan))  # refused: a failed request
    for stats in (c.get_inference_statistics(service.name), c.get_inference_statistics(service.name, "1"),
                  c.get_inference_statistics()):
        (s,) = stats["model_stats"]
        assert s["name"] == service.name and s["version"] == "1"
        assert s["inference_stats"]["success"]["count"] == len(sizes)
        assert s["inference_stats"]["fail"]["count"] == 1
        assert s["inference_count"] == sum(sizes)
        # every request went through the edge's batcher: each has its queue time and the call that answered it
        assert s["inference_stats"]["queue"]["count"] == len(sizes)
        for stage in ("compute_input", "compute_infer", "compute_output"):  # perf_analyzer wants them equal
            assert s["inference_stats"][stage]["count"] == len(sizes)
        assert sum(b["compute_infer"]["count"] for b in s["batch_stats"]) == s["execution_count"] >= 1
        assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in s["batch_stats"]) >= sum(sizes)
        assert s["inference_stats"]["success"]["ns"] > 0 and s["last_inference"] > 0
    with pytest.raises(InferenceServerException, match="unknown model"):
        c.get_inference_statistics("no_such_model")


def test_cloud_server_keeps_statistics_too():
    cloud = shared_cloud()
    name = load_manifest(shared_package()).model.name
    c = _client(cloud.url)
    before = c.get_inference_statistics(name)["model_stats"][0]["inference_count"]
    _infer(c, name, np.zeros((4, 16)))
    assert c.get_inference_statistics(name)["model_stats"][0]["inference_count"] == before + 4


def test_config_states_the_limits_enforced(gateway):
    gw, service = gateway
    c = _client(gw.url)
    config = c.get_model_config(service.name)
    cap = config["max_batch_size"]
    batching = config["dynamic_batching"]
    assert batching["preferred_batch_size"] == [service.batcher.config.max_batch_size]
    assert batching["priority_levels"] == PRIORITY_LEVELS
    assert batching["default_priority_level"] == DEFAULT_PRIORITY
    assert batching["default_queue_policy"]["max_queue_size"] == service.batcher.config.max_queue_size
    _infer(c, service.name, np.zeros((cap, 16)))  # the advertised cap is accepted ...
    with pytest.raises(InferenceServerException, match="exceeds the limit"):
        _infer(c, service.name, np.zeros((cap + 1, 16)))  # ... and one more sample is not


def test_batching_off_runs_every_request_alone():
    package = shared_package()
    backend = NumpyBoardBackend(package)
    backend.set_fault("slow", delay_s=0.02)  # requests pile up behind each call
    off = BatcherConfig(max_batch_size=64, max_queue_delay_s=0.005, dynamic=False)
    with running_gateway(package, backend, None, batcher=off) as (gw, service):
        c = _client(gw.url)
        assert "dynamic_batching" not in c.get_model_config(service.name)
        calls_before = backend.calls

        async def burst():
            async with httpx.AsyncClient(timeout=30) as client:
                body = {"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}]}
                rs = await asyncio.gather(*(client.post(f"{gw.url}/v2/models/{service.name}/infer", json=body)
                                            for _ in range(24)))
                assert all(r.status_code == 200 for r in rs)

        asyncio.run(burst())
        stats = c.get_inference_statistics(service.name)["model_stats"][0]
        assert [b["batch_size"] for b in stats["batch_stats"]] == [1]
        assert stats["execution_count"] == 24
        assert backend.calls - calls_before == 24


def test_priority_goes_ahead_in_the_queue():
    """Requests queued behind a busy backend are served by priority, then in arrival order."""
    gate = threading.Event()
    order = []

    def predict(x, timeout=None):
        gate.wait(10)
        order.append(int(x[0, 0]))
        return x

    async def scenario():
        b = DynamicBatcher(predict, BatcherConfig(max_batch_size=64, max_queue_delay_s=0.0, dynamic=False,
                                                  inline_max_s=0))
        b.start()
        first = b.submit(np.full((1, 1), 0.0))  # occupies the backend
        await asyncio.sleep(0.05)
        futs = [b.submit(np.full((1, 1), float(i)), p) for i, p in
                ((1, 3), (2, DEFAULT_PRIORITY), (3, 1), (4, DEFAULT_PRIORITY), (5, 1))]
        gate.set()
        await asyncio.gather(first, *futs)
        await b.stop()

    asyncio.run(scenario())
    assert order == [0, 3, 5, 2, 4, 1]


def test_priority_and_timeout_parameters_are_checked(gateway):
    gw, service = gateway
    c = _client(gw.url)
    x = np.zeros((1, 16))
    _infer(c, service.name, x, priority=1, timeout=2_000_000)
    with pytest.raises(InferenceServerException, match="priority levels"):
        _infer(c, service.name, x, priority=PRIORITY_LEVELS + 1)
    r = httpx.post(f"{gw.url}/v2/models/{service.name}/infer",
                   json={"parameters": {"timeout": -5},
                         "inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}]})
    assert r.status_code == 400 and "non-negative integer" in r.json()["error"]
