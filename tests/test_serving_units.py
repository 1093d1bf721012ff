"""The serving layer's parts on their own: OIP message codec, circuit breaker, retry budget, routing policy,
dynamic batcher. No servers; the batcher runs a real numpy function on an event loop."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest
from serving_support import shared_package

from lepton_host.manifest import load_manifest
from lepton_host.serving import oip
from lepton_host.serving import routing as R
from lepton_host.serving.batcher import BatcherConfig, DynamicBatcher
from lepton_host.serving.breaker import BreakerConfig, CircuitBreaker
from lepton_host.serving.cloud_client import RetryBudget
from lepton_host.serving.errors import BadRequest, EdgeUnavailable, Overloaded


# ---- OIP codec ----------------------------------------------------------------------------------------------
def test_binary_request_roundtrip_is_bit_exact():
    x = np.random.default_rng(0).normal(size=(7, 16)).astype(np.float32)
    body, headers = oip.encode_infer_request([oip.Tensor("features", "FP32", x)], request_id="r1")
    req = oip.parse_infer_request(body, headers[oip.HEADER_LENGTH])
    assert req.id == "r1" and req.inputs[0].name == "features"
    assert req.inputs[0].data.dtype == np.float32 and np.array_equal(req.inputs[0].data, x)
    assert req.wants_binary("anything")  # binary_data_output defaults every output to binary


def test_json_response_and_binary_response_decode_to_the_same_values():
    y = np.arange(10, dtype=np.float32).reshape(2, 5) / 7
    t = oip.Tensor("softmax", "FP32", y)
    for binary in (False, True):
        body, headers = oip.encode_infer_response("m", [t], [binary], request_id="x", parameters={"served_by": "edge"})
        resp = oip.decode_infer_response(body, headers.get(oip.HEADER_LENGTH))
        assert resp.id == "x" and resp.parameters["served_by"] == "edge"
        assert np.array_equal(resp.outputs["softmax"], y)
        assert (oip.HEADER_LENGTH in headers) == binary


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"{not json", "not valid JSON"),
        (b'{"inputs": []}', "non-empty 'inputs'"),
        (b'{"inputs": [{"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1]}]}', "holds 1 values"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}', "not supported"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [NaN]}]}', "NaN"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": ["x"]}]}', "does not hold FP32"),
        (b'{"inputs": [{"name": "a", "shape": "1", "datatype": "FP32", "data": [1]}]}', "shape must be"),
    ],
)
def test_malformed_requests_are_rejected_with_a_reason(body, fragment):
    with pytest.raises(BadRequest, match=fragment):
        oip.parse_infer_request(body)


def test_binary_size_must_match_shape_and_body():
    header = json.dumps({"inputs": [{"name": "a", "shape": [2, 2], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 16}}]}).encode()
    with pytest.raises(BadRequest, match="ends before"):
        oip.parse_infer_request(header + b"\0" * 8, len(header))
    with pytest.raises(BadRequest, match="no input claims"):
        oip.parse_infer_request(header + b"\0" * 20, len(header))
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        oip.parse_infer_request(header, len(header) + 5)


def test_error_messages_of_other_servers_are_understood():
    assert oip.error_message(b'{"error": "boom"}', "x") == "boom"
    assert oip.error_message(b'{"detail": "Not Found"}', "x") == "Not Found"
    assert oip.error_message(b'{"detail": [{"loc": ["body"], "msg": "field required"}]}', "x") == "field required"
    assert oip.error_message(b"Traceback ...\n  File x\nValueError: bad shape\n", "x") == "ValueError: bad shape"
    assert oip.error_message(b"", "Bad Gateway") == "Bad Gateway"


# ---- breaker and retry budget --------------------------------------------------------------------------------
def test_breaker_opens_after_n_failures_probes_half_open_and_closes_on_success():
    now = [0.0]
    config = BreakerConfig(failure_threshold=3, reset_timeout_s=2.0, half_open_probes=1)
    b = CircuitBreaker(config, clock=lambda: now[0])
    for _ in range(2):
        assert b.allow()
        b.record_failure()
    assert b.state == "closed"
    b.record_failure()
    assert b.state == "open" and not b.allow()
    now[0] = 1.9
    assert not b.allow()
    now[0] = 2.0
    assert b.state == "half_open"
    assert b.allow() and not b.allow()  # exactly one probe
    b.record_failure()  # the probe failed: open again for a full period
    assert b.state == "open"
    now[0] = 4.0
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.allow()
    assert b.transitions == ["open", "half_open", "open", "half_open", "closed"]


def test_retry_budget_limits_retries_to_a_fraction_of_requests():
    # 0.125 is exact in binary, so the count below is exact arithmetic, not a float accident.
    budget = RetryBudget(ratio=0.125, reserve=2.0)
    granted = []
    for i in range(1000):
        budget.earn()
        if budget.spend():
            granted.append(i)
    # The reserve pays the first two retries at once; after that one retry per eight requests.
    assert granted[:2] == [0, 1]
    assert all(b - a == 8 for a, b in zip(granted[2:], granted[3:]))
    # 2 from the reserve, then 1000 - 2 requests earn 124.75 tokens (the first request's earning is lost at
    # the cap): 124 more retries.
    assert len(granted) == 126
    assert len(granted) <= 0.125 * 1000 + 2


def test_retry_budget_refuses_when_empty_and_earns_back():
    budget = RetryBudget(ratio=0.5, reserve=1.0)
    assert budget.spend() and not budget.spend()  # the reserve pays one retry, then nothing
    budget.earn()
    assert not budget.spend()  # half a token is not a retry
    budget.earn()
    assert budget.spend() and not budget.spend()
    for _ in range(10):
        budget.earn()
    assert budget.spend() and not budget.spend()  # earnings stop at the reserve


# ---- routing -------------------------------------------------------------------------------------------------
def test_router_sends_out_of_range_samples_to_the_cloud():
    m = load_manifest(shared_package())
    router = R.Router(R.RoutingPolicy(), m)
    fmt = m.input.format
    x = np.zeros((4, 16))
    x[1, 3] = fmt.max_value + fmt.step  # one step past the largest representable value
    x[2, 0] = fmt.min_value  # the most negative value is representable
    x[3, 5] = fmt.max_value
    d = router.before_edge(x, edge_healthy=True, edge_wait_s=0.0, has_cloud=True)
    assert d.edge.tolist() == [True, False, True, True]
    assert d.reasons[1] == R.OUT_OF_RANGE and d.reasons[0] == R.IN_RANGE


def test_router_health_budget_and_forced_modes():
    m = load_manifest(shared_package())
    x = np.zeros((2, 16))
    auto = R.Router(R.RoutingPolicy(latency_budget_s=0.01), m)
    assert not auto.before_edge(x, False, 0.0, True).edge.any()
    assert auto.before_edge(x, False, 0.0, True).reasons[0] == R.EDGE_UNHEALTHY
    assert auto.before_edge(x, True, 0.02, True).reasons[0] == R.EDGE_BUSY
    assert auto.before_edge(x, True, 0.0, False).edge.all()  # no cloud: the edge is the only path
    assert R.Router(R.RoutingPolicy(mode="cloud"), m).before_edge(x, True, 0.0, True).reasons[0] == R.FORCED
    assert R.Router(R.RoutingPolicy(mode="edge"), m).before_edge(x + 1e6, False, 9.0, True).edge.all()


def test_cascade_thresholds_for_classifier_and_autoencoder():
    m = load_manifest(shared_package())
    router = R.Router(R.RoutingPolicy(confidence_threshold=0.6), m)
    y = np.array([[0.9, 0.1, 0, 0, 0], [0.5, 0.5, 0, 0, 0]])
    esc, why = router.escalate(np.zeros((2, 16)), y)
    assert esc.tolist() == [False, True] and why == R.LOW_CONFIDENCE
    logits = np.array([[10.0, 0, 0, 0, 0], [0.1, 0, 0, 0, 0]])  # confidence from a softmax of logits
    assert R.confidence(logits)[0] > 0.99 and R.confidence(logits)[1] < 0.3

    ae = load_manifest(shared_package("autoencoder"))
    policy = R.RoutingPolicy.for_package(ae)
    assert policy.error_threshold == ae.model.threshold  # default from the manifest
    router = R.Router(policy, ae)
    x = np.zeros((2, 8))
    y = np.stack([np.full(8, 0.1), np.full(8, 1.0)])  # MSE 0.01 and 1.0 against threshold 0.5
    esc, why = router.escalate(x, y)
    assert esc.tolist() == [False, True] and why == R.HIGH_ERROR


def test_policy_file_and_overrides(tmp_path):
    m = load_manifest(shared_package())
    (tmp_path / R.POLICY_FILE).write_text(json.dumps({"routing": {"confidence_threshold": 0.7, "mode": "edge"}}))
    p = R.RoutingPolicy.for_package(m, tmp_path, mode="auto", latency_budget_s=None)
    assert p.confidence_threshold == 0.7 and p.mode == "auto" and p.latency_budget_s == 0.05
    (tmp_path / R.POLICY_FILE).write_text(json.dumps({"routing": {"confidence": 0.7}}))
    with pytest.raises(BadRequest, match="unknown routing keys"):
        R.RoutingPolicy.for_package(m, tmp_path)


# ---- dynamic batcher -----------------------------------------------------------------------------------------
def test_batcher_groups_concurrent_requests_and_returns_each_its_rows():
    calls = []

    def predict(x, timeout=None):
        calls.append(x.shape[0])
        time.sleep(0.002)
        return x * 2.0

    async def main():
        b = DynamicBatcher(predict, BatcherConfig(max_batch_size=16, max_queue_delay_s=0.02, max_queue_size=100))
        b.start()
        xs = [np.full((1 + i % 3, 4), float(i)) for i in range(20)]
        results = await asyncio.gather(*(b.submit(x) for x in xs))
        await b.stop()
        return xs, results

    xs, results = asyncio.run(main())
    for x, r in zip(xs, results):
        assert np.array_equal(r.y, x * 2.0)
    assert sum(calls) == sum(x.shape[0] for x in xs)
    assert max(calls) <= 16 and len(calls) < len(xs)  # batched, never over the cap


async def _until(pred, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        await asyncio.sleep(0.005)


def test_batcher_rejects_when_full_and_reports_a_hung_backend():
    entered, recover = threading.Event(), threading.Event()

    def hang(x, timeout=None):
        if not entered.is_set():  # the first call hangs, past the 0.1 s limit, until the board recovers
            entered.set()
            assert recover.wait(60)
        return x

    async def main():
        b = DynamicBatcher(hang, BatcherConfig(max_batch_size=1, max_queue_delay_s=0, max_queue_size=2,
                                               compute_timeout_s=0.1))
        b.start()
        first = b.submit(np.zeros((1, 2)))
        await _until(entered.is_set, "the worker takes the first call")  # the queue is empty again
        queued = [b.submit(np.zeros((1, 2))) for _ in range(2)]
        with pytest.raises(Overloaded, match="queue is full"):
            b.submit(np.zeros((1, 2)))
        with pytest.raises(EdgeUnavailable, match="did not answer"):
            await first
        for q in queued:  # failed fast instead of waiting behind the hung call
            with pytest.raises(EdgeUnavailable):
                await q
        assert b.stalled
        with pytest.raises(EdgeUnavailable, match="has not answered"):
            b.submit(np.zeros((1, 2)))
        recover.set()
        await _until(lambda: not b.stalled, "the call comes back")
        r = await b.submit(np.ones((1, 2)))
        await b.stop()
        return r

    assert np.array_equal(asyncio.run(main()).y, np.ones((1, 2)))


# ---- module boundaries ---------------------------------------------------------------------------------------
def _imported_after(modules: str) -> set[str]:
    import subprocess
    import sys

    code = f"import sys, {modules}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.split())


def test_gateway_side_never_imports_tensorflow_and_cloud_side_never_imports_pynq():
    gateway = _imported_after("lepton_host.serving.gateway, lepton_hls.demo_serving, lepton_host.serving.edge, "
                              "lepton_hls.commands.serve")
    assert "tensorflow" not in gateway and "keras" not in gateway
    cloud = _imported_after("lepton_cloud.server, lepton_cloud.triton_export")
    assert "pynq" not in cloud


# The board process: the gateway on the emulated board (real pynq), answering over HTTP, with every answer
# audited on the package's engine. What it imported is read after the answers, so a lazy import on the request
# path counts too.
BOARD_PROCESS = """
import json, sys
import httpx
import numpy as np
from lepton_host.backends import emulated_board_backend
from lepton_host.manifest import load_manifest
from lepton_host.serving.audit import AuditConfig
from lepton_host.serving.gateway import GatewayConfig, create_gateway
from lepton_host.serving.routing import RoutingPolicy
from lepton_host.serving.runner import ServerThread

pkg = sys.argv[1]
m = load_manifest(pkg)
config = GatewayConfig(policy=RoutingPolicy.for_package(m, pkg), package_dir=pkg, audit=AuditConfig(fraction=1.0))
app, service = create_gateway(m, emulated_board_backend(pkg), config)
server = ServerThread(app).start()
x = np.random.default_rng(0).uniform(-2, 2, (4, *m.input.shape)).astype(np.float32)
body = {"inputs": [{"name": m.input.name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
served = []
for _ in range(3):
    r = httpx.post(f"{server.url}/v2/models/{m.model.name}/infer", json=body, timeout=60)
    r.raise_for_status()
    served.append(r.json()["parameters"]["served_by"])
assert service.auditor is not None and service.auditor.wait_idle(60)
counts = service.auditor.counts()
server.stop()
print(json.dumps({"served": served, "audited": counts.audited, "mismatches": counts.mismatches,
                  "modules": sorted({k.split(".")[0] for k in sys.modules})}))
"""
BUILD_SIDE = {"tensorflow", "keras", "qkeras", "hls4ml", "da4ml", "lepton_hls"}


def test_board_process_has_not_imported_the_build_side_after_answering(jet_package):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", BOARD_PROCESS, str(jet_package)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["served"] == ["edge"] * 3 and report["audited"] >= 4 and report["mismatches"] == 0
    modules = set(report["modules"])
    assert {"lepton_host", "pynq", "starlette"} <= modules  # the board side really ran, through pynq
    assert not modules & BUILD_SIDE, f"the board process imported {sorted(modules & BUILD_SIDE)}"


def test_idle_fast_backend_runs_directly_and_a_batching_window_queues():
    calls = []

    def predict(x, timeout=None):
        calls.append(x.shape[0])
        return x + 1.0

    async def main():
        # inline_max_s generous: the first (threaded, measured) call may be slow on a busy machine
        direct = DynamicBatcher(predict, BatcherConfig(max_batch_size=8, max_queue_delay_s=0.0, inline_max_s=1.0))
        windowed = DynamicBatcher(predict, BatcherConfig(max_batch_size=8, max_queue_delay_s=0.01, inline_max_s=1.0))
        for b in (direct, windowed):
            b.start()
            assert b.try_direct(np.zeros((1, 2))) is None  # no compute estimate yet: the first call is measured
            await b.submit(np.zeros((1, 2)))
        r = direct.try_direct(np.zeros((1, 2)))
        assert r is not None and np.array_equal(r.y, np.ones((1, 2))) and r.queue_s == 0.0
        assert windowed.try_direct(np.zeros((1, 2))) is None  # a lone sample waits for company
        assert windowed.try_direct(np.zeros((8, 2))) is not None  # a full batch does not
        for b in (direct, windowed):
            await b.stop()

    asyncio.run(main())
    assert calls == [1, 1, 1, 8]


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_lone_requests_leave_the_batching_window_on_time(loop_kind):
    """A lone request waits out the window and goes; it must not wait for the next arrival (a timer that fires
    early by the loop's clock once left requests stuck)."""
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        new_loop = uvloop.new_event_loop
    else:
        new_loop = asyncio.new_event_loop

    async def main():
        b = DynamicBatcher(lambda x, timeout=None: x, BatcherConfig(max_batch_size=8, max_queue_delay_s=0.001,
                                                                   inline_max_s=0.0))
        b.start()
        for i in range(100):
            r = await asyncio.wait_for(b.submit(np.full((1, 2), float(i))), 2.0)
            assert r.y[0, 0] == i and r.batch_size == 1
        rng = np.random.default_rng(0)

        async def client(k):  # irregular arrivals, so windows open and close at every phase of the loop
            for i in range(40):
                await asyncio.sleep(float(rng.random()) * 0.003)
                r = await asyncio.wait_for(b.submit(np.full((1, 2), float(k))), 2.0)
                assert r.y[0, 0] == k

        await asyncio.gather(*(client(k) for k in range(16)))
        await b.stop()

    loop = new_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
