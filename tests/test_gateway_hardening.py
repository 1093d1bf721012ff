"""The gateway against hostile or careless clients, on loopback: one client's choices (tiny deadlines, odd
payloads) do not change what other clients get; the HTTP layer bounds what a client can make it hold (header
bytes, time to send a head or a body) and answers every refusal in JSON; compressed bodies are taken within
the body limit; the server options are checked before anything starts. A property-based fuzz of the HTTP
surface checks that nothing a client sends gets a 5xx."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
import threading
import zlib

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_support import (
    NumpyBoardBackend,
    SwitchableCloud,
    free_port,
    keras_reference,
    metric_value,
    running_gateway,
    shared_cloud,
    shared_package,
    wait_until,
)

from lepton_hls import cli
from lepton_host.serving.batcher import BatcherConfig, DynamicBatcher
from lepton_host.serving.breaker import BreakerConfig
from lepton_host.serving.cloud_client import CloudClient, CloudConfig, redact_url
from lepton_host.serving.errors import UpstreamError
from lepton_host.serving.http_guard import HttpLimits
from lepton_host.serving.routing import RoutingPolicy

MODEL = "tiny_classifier"
INFER = f"/v2/models/{MODEL}/infer"
BODY_LIMIT = 64 << 10


def _body(x: np.ndarray, **params) -> bytes:
    msg = {"inputs": [{"name": "features", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    if params:
        msg["parameters"] = params
    return json.dumps(msg).encode()


def _x(n: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.5, 4.0, (n, 16)).astype(np.float32)


def _post(url: str, body: bytes, headers: dict | None = None, path: str = INFER) -> httpx.Response:
    return httpx.post(url + path, content=body, headers={"content-type": "application/json", **(headers or {})},
                      timeout=30)


def _raw(url: str, data: bytes, shut: bool = False) -> bytes:
    """Send raw bytes, read the whole answer (the server closes); `shut` ends our side after sending."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        return _read_all(s)


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            b = s.recv(65536)
        except ConnectionResetError:
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


def _status_and_json(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    return status, json.loads(body)


@pytest.fixture(scope="module")
def package():
    return shared_package()


@pytest.fixture(scope="module")
def gw(package):
    """An edge-only gateway with a small body limit and the default HTTP limits."""
    with running_gateway(package, NumpyBoardBackend(package), None, max_body_bytes=BODY_LIMIT) as (server, service):
        yield server


@pytest.fixture(scope="module")
def strict(package):
    """A gateway with short read timeouts, so the tests wait little for them to fire."""
    limits = HttpLimits(header_timeout_s=0.3, keep_alive_s=0.3)
    with running_gateway(package, NumpyBoardBackend(package), None, body_timeout_s=0.3, http_limits=limits) \
            as (server, service):
        yield server


# ---- one client's choices do not change what others get -------------------------------------------------


def test_client_deadlines_do_not_open_the_cloud_breaker(package):
    slow = SwitchableCloud(shared_cloud().url, mode="slow", delay_s=3.0)
    try:
        with running_gateway(package, NumpyBoardBackend(package), slow.url, policy=RoutingPolicy(mode="cloud"),
                             breaker=BreakerConfig(failure_threshold=2, reset_timeout_s=60),
                             cloud_kw={"read_timeout_s": 2.0}) as (gw, service):
            for i in range(5):
                r = _post(gw.url, _body(_x(1, i), timeout=1))  # Triton's timeout: 1 microsecond
                assert r.status_code == 504 and "did not answer within" in r.json()["error"]
            assert service.cloud.breaker.state == "closed"
            slow.mode = "pass"
            r = _post(gw.url, _body(_x(1, 9)))
            assert r.status_code == 200 and r.json()["parameters"]["served_by"] == "cloud"
    finally:
        slow.stop()


def test_a_client_deadline_does_not_mark_the_edge_down(package):
    # A batching window far longer than the request's deadline: the request is still queued when its time ends.
    batcher = BatcherConfig(max_batch_size=128, max_queue_delay_s=0.5)
    policy = RoutingPolicy(latency_budget_s=None)
    with running_gateway(package, NumpyBoardBackend(package), shared_cloud().url, batcher=batcher, policy=policy,
                         edge_retry_s=600) as (gw, service):
        r = _post(gw.url, _body(_x(64), timeout=1))
        assert r.status_code == 504 and "timeout" in r.json()["error"]
        assert service.edge_healthy
        r = _post(gw.url, _body(_x(128, 1)))  # a full batch: no window to wait for
        assert r.status_code == 200 and r.json()["parameters"]["served_by"] == "edge"


def test_one_rejected_payload_does_not_switch_the_cloud_link_to_json(package):
    proxy = SwitchableCloud(shared_cloud().url)

    async def main():
        client = CloudClient(CloudConfig(proxy.url), MODEL, "features", "softmax")
        try:
            bad = _x(1)
            bad[0, 3] = np.inf  # the cloud refuses it in binary and in JSON alike
            with pytest.raises(UpstreamError, match="answered 400"):
                await client.predict(bad)
            x = _x(2, 1)
            y = await client.predict(x)
            np.testing.assert_allclose(y, keras_reference(package, x), atol=1e-6)
        finally:
            await client.close()

    try:
        asyncio.run(main())
        assert proxy.content_types == ["application/octet-stream", "application/json", "application/octet-stream"]
    finally:
        proxy.stop()


def test_binary_is_tried_again_after_a_server_refused_it(package):
    """A server that refuses binary tensors but takes JSON gets JSON, and binary again once the re-probe time
    has passed (0 here: every request tries binary first)."""
    from serving_support import mlserver_style_app

    from lepton_host.serving.runner import ServerThread

    quirky = ServerThread(mlserver_style_app(package)).start()
    front = SwitchableCloud(quirky.url)

    async def main():
        client = CloudClient(CloudConfig(front.url, binary_reprobe_s=0.0), MODEL, "features", "softmax")
        client._binary_listed = True  # as if its metadata had listed the extension
        client._negotiated_at = float("inf")
        try:
            for i in range(2):
                np.testing.assert_allclose(await client.predict(_x(1, i)), keras_reference(package, _x(1, i)),
                                           atol=1e-6)
        finally:
            await client.close()

    try:
        asyncio.run(main())
        assert front.content_types == ["application/octet-stream", "application/json"] * 2
    finally:
        front.stop()
        quirky.stop()


def test_cloud_credentials_and_address_stay_out_of_answers(package):
    port = free_port()
    url = f"http://user:s3cr3t@127.0.0.1:{port}"
    assert "s3cr3t" not in redact_url(url) and "127.0.0.1" in redact_url(url)
    kw = {"connect_timeout_s": 0.5}
    with running_gateway(package, NumpyBoardBackend(package), url, cloud_kw=kw) as (gw, _):
        x = _x(1)
        x[0, 0] = 100.0  # out of the edge's input range: goes to the (unreachable) cloud, the edge degrades
        r = _post(gw.url, _body(x))
        assert r.status_code == 200 and r.json()["parameters"]["degraded"]
        texts = [r.json()["parameters"]["degraded_because"]]
    with running_gateway(package, NumpyBoardBackend(package), url, cloud_kw=kw,
                         policy=RoutingPolicy(mode="cloud")) as (gw, _):
        r = _post(gw.url, _body(_x(1)))
        assert r.status_code == 503
        texts.append(r.json()["error"])
    for text in texts:
        assert "the cloud" in text
        for secret in ("s3cr3t", "user", "127.0.0.1", str(port)):
            assert secret not in text, text


# ---- HTTP limits --------------------------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_oversized_headers_get_a_431_and_do_not_grow_memory(gw):
    host, port = gw.url.removeprefix("http://").split(":")
    huge = b"x" * (32 << 20)
    head = f"GET /v2/health/live HTTP/1.1\r\nHost: {host}\r\nX-Big: ".encode()
    before = _rss_mb()
    answers: list[bytes] = []

    def one():
        with socket.create_connection((host, int(port)), timeout=60) as s:
            try:
                s.sendall(head + huge)
                s.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass
            answers.append(_read_all(s))

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    grown = _rss_mb() - before
    assert len(answers) == 10
    for raw in answers:
        status, msg = _status_and_json(raw)
        assert status == 431 and "exceed" in msg["error"]
    assert grown < 64, f"10 connections with 32 MiB headers grew the process by {grown:.0f} MiB"
    # One read holding a whole head just over the limit is refused too; one just under it is served.
    limit = HttpLimits().max_header_bytes
    r = httpx.get(gw.url + "/v2/health/live", headers={"x-big": "y" * limit})
    assert r.status_code == 431 and "exceed" in r.json()["error"]
    assert httpx.get(gw.url + "/v2/health/live", headers={"x-big": "y" * (limit - 200)}).status_code == 200


def test_protocol_errors_are_json(gw):
    status, msg = _status_and_json(_raw(gw.url, b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                                        b"Content-Length: abc\r\n\r\n"))
    assert status == 400 and "Content-Length" in msg["error"]
    status, msg = _status_and_json(_raw(gw.url, b"\x00\x01 garbage\r\n\r\n"))
    assert status == 400 and "malformed HTTP request" in msg["error"]
    r = httpx.delete(gw.url + INFER)
    assert r.status_code == 405 and "error" in r.json()


def test_a_silent_connection_is_closed(strict):
    host, port = strict.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        assert _read_all(s) == b""  # closed by the server after the keep-alive timeout, nothing said


def test_headers_that_never_end_get_a_408(strict):
    host, port = strict.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
        status, msg = _status_and_json(_read_all(s))
    assert status == 408 and "headers did not arrive" in msg["error"]


def test_a_body_that_never_arrives_gets_a_408_and_the_connection_closes(strict):
    host, port = strict.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"inputs\"")
        status, msg = _status_and_json(_read_all(s))  # read to the end: the server closes the connection
    assert status == 408 and "body did not arrive" in msg["error"]


def test_client_disconnects_are_counted_as_such(gw):
    host, port = gw.url.removeprefix("http://").split(":")
    line = 'lepton_gateway_requests_total{outcome="client_disconnected",route="infer"}'
    before = metric_value(gw.url, line)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"in")
    wait_until(lambda: metric_value(gw.url, line) == before + 1, "the disconnect counted")
    assert 'outcome="500"' not in httpx.get(gw.url + "/metrics").text


@pytest.mark.parametrize("encoding, compress", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda b: zlib.compress(b, wbits=-15)),  # raw deflate, as some clients send it
])
def test_compressed_request_bodies(gw, encoding, compress):
    x = _x(4, 3)
    plain = _post(gw.url, _body(x))
    r = _post(gw.url, compress(_body(x)), {"content-encoding": encoding})
    assert r.status_code == 200 and r.json()["outputs"] == plain.json()["outputs"]


def test_compressed_bodies_are_limited_after_decompression_and_checked(gw):
    bomb = gzip.compress(b" " * (BODY_LIMIT * 16))
    assert len(bomb) < BODY_LIMIT
    r = _post(gw.url, bomb, {"content-encoding": "gzip"})
    assert r.status_code == 413 and "decompresses to more than" in r.json()["error"]
    r = _post(gw.url, gzip.compress(_body(_x()))[:-9], {"content-encoding": "gzip"})
    assert r.status_code == 400 and "error" in r.json()
    r = _post(gw.url, b"not gzip at all", {"content-encoding": "gzip"})
    assert r.status_code == 400 and "not valid gzip" in r.json()["error"]
    r = _post(gw.url, _body(_x()), {"content-encoding": "br"})
    assert r.status_code == 415 and "Content-Encoding" in r.json()["error"]


def test_tritonclient_compressed_requests(gw):
    import tritonclient.http as triton

    c = triton.InferenceServerClient(gw.url.removeprefix("http://"))
    x = _x(3, 5)
    inp = triton.InferInput("features", [3, 16], "FP32")
    inp.set_data_from_numpy(x)
    for algorithm in ("gzip", "deflate"):
        y = c.infer(MODEL, [inp], request_compression_algorithm=algorithm).as_numpy("softmax")
        assert y.shape == (3, 5)


def test_inline_batches_leave_the_loop_free_between_batches():
    """A full queue's refusal must not wait for the whole queue: between two batches run on the event loop
    itself, other tasks (a new request being read and refused) get their turn."""
    order: list[str] = []

    def predict(x, timeout=None):
        order.append("batch")
        return x[:, :1]

    async def main():
        b = DynamicBatcher(predict, BatcherConfig(max_batch_size=1, max_queue_delay_s=0.0, inline_max_s=1.0))
        b.start()
        try:
            await b.submit(np.zeros((1, 2)))  # through the worker thread; the backend is fast: inline from now on
            order.clear()
            futures = [b.submit(np.zeros((1, 2))) for _ in range(5)]

            async def other():
                order.append("other")

            await asyncio.gather(*futures, asyncio.ensure_future(other()))
        finally:
            await b.stop()

    asyncio.run(main())
    assert order.count("batch") == 5 and order.index("other") < 5, order


@pytest.mark.parametrize("tensor_patch, outputs, fragment", [
    ({"datatype": ["FP32"]}, None, "datatype"),
    ({"datatype": {"a": 1}}, None, "datatype"),
    ({}, [{"name": "softmax", "parameters": [1]}], "parameters"),
    ({}, [{"parameters": [1]}], "outputs[0]"),
    ({"datatype": "FP64", "data": [1e300] + [0.0] * 15}, None, "FP32 range"),
])
def test_client_errors_are_400s(gw, tensor_patch, outputs, fragment):
    tensor = {"name": "features", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16, **tensor_patch}
    msg = {"inputs": [tensor]}
    if outputs is not None:
        msg["outputs"] = outputs
    r = _post(gw.url, json.dumps(msg).encode())
    assert r.status_code == 400 and fragment in r.json()["error"]


# ---- server options -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, fragment", [
    (["--port", "99999"], "--port 99999"),
    (["--port", "-1"], "--port -1"),
    (["--max-batch-size", "0"], "--max-batch-size 0"),
    (["--max-batch-size", "-3"], "--max-batch-size -3"),
    (["--max-queue", "0"], "--max-queue 0"),
    (["--cloud", "not a url"], "--cloud"),
    (["--cloud", "ftp://host"], "http://"),
    (["--timeout-ms", "0"], "--timeout-ms"),
    (["--hedge-percentile", "120"], "--hedge-percentile"),
])
def test_serve_refuses_bad_options_in_one_line(package, capsys, argv, fragment):
    assert cli.main(["serve", str(package), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lepton-hls serve: error:") and fragment in err and "\n" not in err


def test_cloud_refuses_bad_options_in_one_line(package, capsys):
    assert cli.main(["cloud", str(package), "--max-queue", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lepton-hls cloud: error:") and "--max-queue" in err and "\n" not in err


def test_serve_on_a_port_in_use_is_one_error_line(package, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["serve", str(package), "--port", str(port)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("lepton-hls serve: error: cannot listen on 127.0.0.1") and "\n" not in err
    assert captured.out == ""  # nothing announced


# ---- fuzz ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_client():
    with httpx.Client(timeout=30) as client:  # one client: building one costs more than a request
        yield client


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                       st.text(max_size=12))
_json = st.recursive(_json_leaf, lambda c: st.one_of(st.lists(c, max_size=5),
                                                     st.dictionaries(st.text(max_size=8), c, max_size=5)),
                     max_leaves=20)


def _maybe(valid, junk=_json):
    return st.one_of(valid, junk)


_tensor = st.fixed_dictionaries({}, optional={
    "name": _maybe(st.sampled_from(["features", "pixels", ""])),
    "datatype": _maybe(st.sampled_from(["FP32", "FP64", "FP16", "INT32", "BOOL", "UINT8", "BYTES", "fp32"])),
    "shape": _maybe(st.lists(st.integers(-2, 40), max_size=3), st.lists(st.integers(-(2**64), 2**64), max_size=3)),
    "data": _maybe(st.lists(st.floats(-1e6, 1e6, width=32), max_size=48),
                   st.lists(st.lists(st.floats(allow_nan=False), max_size=17), max_size=3)),
    "parameters": _maybe(st.fixed_dictionaries({}, optional={"binary_data_size": _maybe(st.integers(-4, 256))})),
})
_request = st.fixed_dictionaries({}, optional={
    "id": _json,
    "inputs": _maybe(st.lists(_tensor, max_size=2)),
    "outputs": _maybe(st.lists(st.fixed_dictionaries({}, optional={
        "name": _maybe(st.sampled_from(["softmax", "other"])),
        "parameters": _maybe(st.fixed_dictionaries({}, optional={"binary_data": _json}))}), max_size=2)),
    "parameters": _maybe(st.fixed_dictionaries({}, optional={"timeout": _json, "binary_data_output": _json})),
})
# printable ASCII; httpx itself refuses to send a value with leading or trailing blanks
_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20).map(str.strip)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(_request.map(lambda m: json.dumps(m).encode()), _json.map(lambda m: json.dumps(m).encode()),
                   st.binary(max_size=200)),
    binary_tail=st.binary(max_size=80),
    header_length=st.one_of(st.none(), st.integers(-5, 400).map(str), _header_text),
    content_type=st.one_of(st.none(), st.sampled_from(["application/json", "application/octet-stream"]),
                           _header_text),
    encoding=st.one_of(st.none(), st.sampled_from(["gzip", "deflate", "identity", "br", "GZIP"]), _header_text),
    compress=st.booleans(),
    path=st.sampled_from([INFER, f"/v2/models/{MODEL}/versions/1/infer", f"/v2/models/{MODEL}/versions/x/infer",
                          "/v2/models/other/infer", f"/v2/models/{MODEL}", "/v2", "/nowhere"]),
    method=st.sampled_from(["POST", "GET", "PUT"]),
)
def test_fuzz_no_client_input_gets_a_5xx(gw, fuzz_client, body, binary_tail, header_length, content_type, encoding,
                                         compress, path, method):
    if header_length is not None:
        body += binary_tail
    if compress and encoding in ("gzip", "GZIP"):
        body = gzip.compress(body)
    elif compress and encoding == "deflate":
        body = zlib.compress(body)
    headers = {}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = header_length
    if content_type is not None:
        headers["content-type"] = content_type
    if encoding is not None:
        headers["content-encoding"] = encoding
    r = fuzz_client.request(method, gw.url + path, content=body, headers=headers)
    assert r.headers["content-type"].startswith(("application/json", "text/plain; version=0.0.4")), r.headers
    deadline_set = b'"timeout"' in body  # a client's own tiny deadline may legitimately end in a 504
    assert r.status_code < 500 or (r.status_code == 504 and deadline_set), (r.status_code, r.text, body[:300])
    if r.status_code >= 400:
        assert isinstance(r.json()["error"], str)


_token = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.one_of(st.sampled_from(["GET", "POST", "HEAD"]), _token),
    target=st.one_of(st.sampled_from([INFER, "/v2", "/v2/health/live", "*", "http://x/v2"]), _token),
    version=st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/x", ""]),
    headers=st.lists(st.tuples(st.one_of(_token, st.sampled_from(["Content-Length", "Transfer-Encoding",
                                                                    "Content-Encoding", "Expect", "Host"])),
                               st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=16)),
                     max_size=4),
    body=st.binary(max_size=64),
)
def test_fuzz_raw_request_heads_never_get_a_5xx(gw, method, target, version, headers, body):
    head = f"{method} {target} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "Connection: close\r\n"
    raw = _raw(gw.url, head.encode() + b"\r\n" + body, shut=True)
    if raw:  # a request the parser still waits on (a body it was promised) ends with our side closed: no answer
        status = int(raw.split(b" ", 2)[1])
        assert status < 500, raw[:400]
