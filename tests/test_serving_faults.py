"""Fault runs on loopback, each bounded in time and count: the board hangs or goes missing, the cloud answers
5xx, times out, refuses connections, or both paths are down; the queue overflows. Every request gets an
answer (200, or a 503 that says why); the circuit breaker opens and recovers as configured."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from serving_support import (
    NumpyBoardBackend,
    SwitchableCloud,
    free_port,
    keras_reference,
    metric_value,
    mlserver_style_app,
    running_gateway,
    shared_cloud,
    shared_package,
    wait_until,
)

from lepton_host.serving.batcher import BatcherConfig
from lepton_host.serving.breaker import BreakerConfig
from lepton_host.serving.routing import RoutingPolicy
from lepton_host.serving.runner import ServerThread

MODEL = "tiny_classifier"
OUT_OF_RANGE = 100.0  # preprocesses to (100 - 0.5) / 2 = 49.75, beyond ap_fixed<16,6>'s [-32, 32)


def _body(x: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": "features", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()


def burst(url: str, xs: list[np.ndarray], concurrency: int = 8, timeout: float = 20.0) -> list[tuple[int, dict]]:
    """Send every request (bounded concurrency) and return (status, JSON body) for each, in order."""

    async def main():
        sem = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=concurrency)) as client:
            async def one(x):
                async with sem:
                    r = await client.post(f"{url}/v2/models/{MODEL}/infer", content=_body(x),
                                          headers={"content-type": "application/json"})
                    return r.status_code, r.json()

            return await asyncio.gather(*(one(x) for x in xs))

    return asyncio.run(main())


def one(url: str, x: np.ndarray) -> tuple[int, dict]:
    return burst(url, [x], 1)[0]


def _y(resp: dict) -> np.ndarray:
    out = resp["outputs"][0]
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


def _in_range(n: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.5, 4.0, (n, 16)).astype(np.float32)


def _out_of_range(n: int = 1) -> np.ndarray:
    x = _in_range(n, 1)
    x[:, 0] = OUT_OF_RANGE
    return x


def _attempts(url: str, kind: str, outcome: str) -> float:
    return metric_value(url, f'lepton_gateway_cloud_attempts_total{{kind="{kind}",outcome="{outcome}"}}')


@pytest.fixture(scope="module")
def package():
    return shared_package()


@pytest.fixture(scope="module")
def cloud():
    return shared_cloud()


def test_board_hang_falls_back_to_cloud_then_recovers(package, cloud):
    backend = NumpyBoardBackend(package, hang_limit_s=10)
    batcher = BatcherConfig(max_batch_size=8, max_queue_delay_s=0.001, compute_timeout_s=0.2)
    with running_gateway(package, backend, cloud.url, batcher=batcher) as (gw, service):
        assert one(gw.url, _in_range())[1]["parameters"]["served_by"] == "edge"
        backend.set_fault("hang")
        xs = [_in_range(2, i) for i in range(24)]
        answers = burst(gw.url, xs, concurrency=6)
        assert len(answers) == 24 and all(s == 200 for s, _ in answers)
        for x, (_, r) in zip(xs, answers):
            assert r["parameters"]["served_by"] == "cloud"
            assert set(r["parameters"]["route_reason"].split(",")) <= {"edge_failed", "edge_unhealthy"}
            np.testing.assert_allclose(_y(r), keras_reference(package, x), atol=1e-6)
        backend.set_fault(None)  # the board comes back; the stuck call returns
        wait_until(lambda: service.edge_healthy, "the edge back in service")
        assert one(gw.url, _in_range())[1]["parameters"]["served_by"] == "edge"


def test_board_missing_serves_from_cloud(package, cloud):
    backend = NumpyBoardBackend(package)
    with running_gateway(package, backend, cloud.url) as (gw, service):
        backend.set_fault("missing")
        answers = burst(gw.url, [_in_range(1, i) for i in range(20)])
        assert [s for s, _ in answers] == [200] * 20
        assert {r["parameters"]["served_by"] for _, r in answers} == {"cloud"}
        wait_until(lambda: not service.edge_healthy, "the edge out of service")
        status, r = one(gw.url, _in_range())
        assert status == 200 and r["parameters"]["route_reason"] == "edge_unhealthy"
        ready = httpx.get(gw.url + "/v2/health/ready")
        assert ready.status_code == 200  # the cloud can still answer, and readiness says it is the cloud
        assert ready.json()["paths"] == {"edge": False, "cloud": True} and ready.json()["edge_detail"]
        backend.set_fault(None)  # back: this backend has no self-test, so a healthy probe re-admits it
        wait_until(lambda: service.edge_healthy, "the edge back in service")
        assert one(gw.url, _in_range())[1]["parameters"]["served_by"] == "edge"


class ManualClock:
    """A monotonic clock that moves only when the test says so (in steps exact in binary)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_cloud_5xx_degrades_to_edge_and_breaker_opens_and_recovers(package, cloud):
    sick = SwitchableCloud(cloud.url, mode="5xx")
    backend = NumpyBoardBackend(package)
    breaker = BreakerConfig(failure_threshold=3, reset_timeout_s=1.5, half_open_probes=1)
    clock = ManualClock()  # the reset period passes when the test says, not with the machine's load
    try:
        with running_gateway(package, backend, sick.url, breaker=breaker,
                             cloud_kw={"retries": 0, "clock": clock}) as (gw, service):
            answers = [one(gw.url, _out_of_range()) for _ in range(6)]
            for status, r in answers:  # the edge keeps answering (saturated input), and says so
                assert status == 200 and r["parameters"]["served_by"] == "edge" and r["parameters"]["degraded"]
                assert "input_out_of_range+cloud_unavailable" in r["parameters"]["route_reason"]
            assert "model instance crashed" in answers[0][1]["parameters"]["degraded_because"]
            assert "breaker open" in answers[-1][1]["parameters"]["degraded_because"]
            assert sick.hits == 3  # opened after 3 failures: no more calls to the sick cloud
            assert service.cloud.breaker.state == "open"
            metrics = httpx.get(gw.url + "/metrics").text
            assert "lepton_gateway_cloud_breaker_state 2.0" in metrics

            sick.mode = "pass"
            clock.advance(1.0)
            assert service.cloud.breaker.state == "open"  # 1.0 s of the 1.5 s reset period: still open
            assert one(gw.url, _out_of_range())[1]["parameters"]["degraded"] and sick.hits == 3
            clock.advance(0.5)  # the reset period is over: the next request is the half-open probe
            status, r = one(gw.url, _out_of_range())
            assert status == 200 and r["parameters"]["served_by"] == "cloud" and "degraded" not in r["parameters"]
            assert service.cloud.breaker.state == "closed"
            assert service.cloud.breaker.transitions == ["open", "half_open", "closed"]
            assert "lepton_gateway_cloud_breaker_state 0.0" in httpx.get(gw.url + "/metrics").text
    finally:
        sick.stop()


def test_cloud_timeout_is_bounded(package, cloud):
    slow = SwitchableCloud(cloud.url, mode="stall")  # answers only after the test: every call times out
    backend = NumpyBoardBackend(package)
    try:
        kw = {"read_timeout_s": 0.2, "retries": 0}
        with running_gateway(package, backend, slow.url, cloud_kw=kw) as (gw, _):
            status, r = one(gw.url, _out_of_range())
            assert status == 200 and r["parameters"]["degraded"] and "timed out" in r["parameters"]["degraded_because"]
        policy = RoutingPolicy(mode="cloud")
        with running_gateway(package, NumpyBoardBackend(package), slow.url, cloud_kw=kw, policy=policy) as (gw, _):
            answers = burst(gw.url, [_in_range() for _ in range(4)], concurrency=4)
            for status, r in answers:
                assert status == 503 and "timed out" in r["error"]
    finally:
        slow.stop()


def test_cloud_refused_edge_keeps_serving_and_both_down_is_a_503(package):
    refused = f"http://127.0.0.1:{free_port()}"
    backend = NumpyBoardBackend(package)
    with running_gateway(package, backend, refused, cloud_kw={"connect_timeout_s": 0.2}) as (gw, service):
        xs = [_in_range(1, i) for i in range(10)]
        answers = burst(gw.url, xs)
        assert all(s == 200 and r["parameters"]["served_by"] == "edge" for s, r in answers)
        backend.set_fault("missing")
        wait_until(lambda: not service.edge_healthy, "the edge out of service")
        answers = burst(gw.url, xs)
        assert len(answers) == 10
        for status, r in answers:
            assert status == 503
            assert "no path could answer" in r["error"] and "edge" in r["error"] and "cloud" in r["error"]
        assert httpx.get(gw.url + "/v2/health/live").status_code == 200


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_overload_rejects_from_a_bounded_queue_and_memory_stays_flat(package):
    backend = NumpyBoardBackend(package)
    backend.set_fault("slow", delay_s=0.02)
    batcher = BatcherConfig(max_batch_size=1, max_queue_delay_s=0.0, max_queue_size=4, compute_timeout_s=2.0)
    with running_gateway(package, backend, None, batcher=batcher) as (gw, _):
        rss = []
        for round_ in range(4):
            answers = burst(gw.url, [_in_range(1, i) for i in range(60)], concurrency=30)
            statuses = [s for s, _ in answers]
            assert len(answers) == 60 and set(statuses) <= {200, 503}
            assert statuses.count(503) > 0 and statuses.count(200) > 0
            rejected = [r for s, r in answers if s == 503]
            assert all("queue is full" in r["error"] for r in rejected)
            rss.append(_rss_mb())
        assert rss[-1] - rss[1] < 20, f"memory grew under repeated overload: {rss}"
        assert 'lepton_gateway_rejected_total{cause="queue_full"}' in httpx.get(gw.url + "/metrics").text


def test_cascade_sends_unsure_samples_to_the_cloud_model(package, cloud):
    backend = NumpyBoardBackend(package)
    policy = RoutingPolicy(confidence_threshold=0.9)
    with running_gateway(package, backend, cloud.url, policy=policy) as (gw, _):
        x = _in_range(64, 7)
        status, r = one(gw.url, x)
        assert status == 200
        y = _y(r)
        edge = backend.predict(x)
        unsure = edge.max(axis=1) < 0.9
        assert 0 < unsure.sum() < 64  # the test data has both kinds
        np.testing.assert_allclose(y[unsure], keras_reference(package, x[unsure]), atol=1e-6)
        np.testing.assert_allclose(y[~unsure], edge[~unsure], atol=1e-7)
        assert r["parameters"]["cloud_samples"] == int(unsure.sum())
        assert "low_confidence" in r["parameters"]["route_reason"]


def test_hedged_cloud_request_wins_over_a_stalled_one(package, cloud):
    flaky = SwitchableCloud(cloud.url, mode="pass")
    policy = RoutingPolicy(mode="cloud")
    kw = {"hedge_percentile": 90, "hedge_min_samples": 5, "read_timeout_s": 30.0, "retries": 0}
    try:
        with running_gateway(package, NumpyBoardBackend(package), flaky.url, policy=policy, cloud_kw=kw,
                             request_timeout_s=30.0) as (gw, svc):
            for i in range(8):
                assert one(gw.url, _in_range(1, i))[0] == 200
            hedges_won = _attempts(gw.url, "hedge", "ok")  # a slow warm-up request may have been hedged too
            # The next request stalls until released; only the hedge, sent once the request outlives p90 of
            # the recent ones, can answer it.
            flaky.mode = "stall_first"
            hits = flaky.hits
            status, r = one(gw.url, _in_range())
            assert status == 200 and r["parameters"]["served_by"] == "cloud"
            assert flaky.stalled.is_set() and flaky.hits == hits + 2  # the stalled first call and the hedge
            assert _attempts(gw.url, "hedge", "ok") == hedges_won + 1
    finally:
        flaky.stop()


def test_cloud_client_against_an_mlserver_style_server(package):
    """JSON only (no binary extension), FastAPI-style errors: the gateway still gets its answers, and the
    server's own error text reaches the caller."""
    quirky = ServerThread(mlserver_style_app(package)).start()
    try:
        with running_gateway(package, NumpyBoardBackend(package), quirky.url, policy=RoutingPolicy(mode="cloud")) \
                as (gw, service):
            for n in (1, 64):
                x = _in_range(n, n)
                status, r = one(gw.url, x)
                assert status == 200 and r["parameters"]["served_by"] == "cloud"
                np.testing.assert_allclose(_y(r), keras_reference(package, x), atol=1e-6)
            assert service.cloud.binary is False  # negotiated from the server's metadata
        kw = {"model": "not_there"}
        with running_gateway(package, NumpyBoardBackend(package), quirky.url, policy=RoutingPolicy(mode="cloud"),
                             cloud_kw=kw) as (gw, _):
            status, r = one(gw.url, _in_range())
            assert status == 503 and "Model not_there not found" in r["error"]
    finally:
        quirky.stop()


MLSERVER = os.environ.get("LEPTON_MLSERVER") or shutil.which("mlserver")


@pytest.mark.slow
@pytest.mark.skipif(not MLSERVER, reason="Seldon MLServer not installed (set LEPTON_MLSERVER=/path/to/mlserver)")
def test_cloud_client_against_real_mlserver(package, tmp_path):
    """The real third-party server: Seldon MLServer with a small custom runtime computing the same model."""
    model_dir = tmp_path / "mls"
    model_dir.mkdir()
    shutil.copy(package / "model" / "reference.npz", model_dir)
    (model_dir / "runtime.py").write_text(
        "import numpy as np\n"
        "from mlserver import MLModel\n"
        "from mlserver.codecs import NumpyCodec\n"
        "from mlserver.types import InferenceRequest, InferenceResponse\n"
        "class Tiny(MLModel):\n"
        "    async def load(self):\n"
        "        w = np.load(__file__.replace('runtime.py', 'reference.npz'))\n"
        "        self.w = [w[f'arr_{i}'] for i in range(4)]\n"
        "        return True\n"
        "    async def predict(self, payload: InferenceRequest) -> InferenceResponse:\n"
        "        x = (NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32) - 0.5) / 2.0\n"
        "        z = np.maximum(x @ self.w[0] + self.w[1], 0) @ self.w[2] + self.w[3]\n"
        "        e = np.exp(z - z.max(axis=1, keepdims=True))\n"
        "        y = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)\n"
        "        return InferenceResponse(model_name=self.name, id=payload.id,\n"
        "                                 outputs=[NumpyCodec.encode_output('softmax', y)])\n"
    )
    (model_dir / "model-settings.json").write_text(json.dumps(
        {"name": MODEL, "implementation": "runtime.Tiny", "parallel_workers": 0}))
    port = free_port()
    (model_dir / "settings.json").write_text(json.dumps(
        {"http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "parallel_workers": 0,
         "host": "127.0.0.1"}))
    proc = subprocess.Popen([MLSERVER, "start", str(model_dir)], cwd=model_dir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/v2/models/{MODEL}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "MLServer did not start"
            time.sleep(0.5)
        with running_gateway(package, NumpyBoardBackend(package), url, policy=RoutingPolicy(mode="cloud")) as (gw, _):
            for n in (1, 64):
                x = _in_range(n, n)
                status, r = one(gw.url, x)
                assert status == 200
                np.testing.assert_allclose(_y(r), keras_reference(package, x), atol=1e-5)
            bad = _in_range()
            with running_gateway(package, NumpyBoardBackend(package), url, policy=RoutingPolicy(mode="cloud"),
                                 cloud_kw={"model": "absent"}) as (gw2, _):
                status, r = one(gw2.url, bad)
                assert status == 503 and "absent" in r["error"]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
