"""Protocol conformance, checked with Triton's own HTTP client (tritonclient, InferenceServerClient) against
both the edge gateway and the reference cloud server, and bad requests against the gateway with plain HTTP."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from serving_support import NumpyBoardBackend, keras_reference, running_gateway, shared_cloud, shared_package
from tritonclient.utils import InferenceServerException

from lepton_host.manifest import load_manifest

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def servers():
    package = shared_package()
    cloud = shared_cloud()
    backend = NumpyBoardBackend(package)
    with running_gateway(package, backend, cloud.url) as (gw, service):
        yield {"package": package, "gateway": gw, "cloud": cloud, "backend": backend, "service": service}


@pytest.fixture(scope="module")
def secured():
    package = shared_package()
    with running_gateway(package, NumpyBoardBackend(package), None, token=TOKEN, max_body_bytes=64 << 10) as (gw, _):
        yield gw


def _client(url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url.removeprefix("http://"), connection_timeout=10, network_timeout=30)


@pytest.mark.parametrize("which", ["gateway", "cloud"])
def test_tritonclient_health_metadata_and_config(servers, which):
    m = load_manifest(servers["package"])
    c = _client(servers[which].url)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready(m.model.name)
    assert "binary_tensor_data" in c.get_server_metadata()["extensions"]
    meta = c.get_model_metadata(m.model.name)
    assert meta["inputs"][0] == {"name": "features", "datatype": "FP32", "shape": [-1, 16]}
    assert meta["outputs"][0]["name"] == "softmax" and meta["outputs"][0]["shape"] == [-1, 5]
    config = c.get_model_config(m.model.name)
    assert config["max_batch_size"] >= 64 and config["input"][0]["dims"] == [16]
    assert "max_queue_delay_microseconds" in config["dynamic_batching"]
    with pytest.raises(InferenceServerException, match="unknown model"):
        c.get_model_metadata("no_such_model")


@pytest.mark.parametrize("which", ["gateway", "cloud"])
@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_infer(servers, which, batch, binary):
    package = servers["package"]
    m = load_manifest(package)
    x = np.random.default_rng(batch).normal(0.5, 4.0, (batch, 16)).astype(np.float32)
    inp = triton.InferInput("features", [batch, 16], "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = triton.InferRequestedOutput("softmax", binary_data=binary)
    result = _client(servers[which].url).infer(m.model.name, [inp], outputs=[out], request_id=f"req-{batch}")
    response = result.get_response()
    y = result.as_numpy("softmax")
    assert response["id"] == f"req-{batch}" and y.shape == (batch, 5) and y.dtype == np.float32
    assert ("parameters" in response["outputs"][0]) == binary  # answered in the form asked for
    expected = keras_reference(package, x)
    if which == "cloud":
        np.testing.assert_allclose(y, expected, atol=1e-6)
    else:
        assert response["parameters"]["served_by"] == "edge"
        np.testing.assert_allclose(y, servers["backend"].predict(x), atol=1e-7)  # the accelerator's answer
        assert (y.argmax(1) == expected.argmax(1)).mean() >= 0.95


def test_tritonclient_default_infer_is_binary(servers):
    """With no outputs named, Triton's client asks for every output in binary; the gateway must comply."""
    m = load_manifest(servers["package"])
    inp = triton.InferInput("features", [3, 16], "FP32")
    inp.set_data_from_numpy(np.zeros((3, 16), np.float32))
    result = _client(servers["gateway"].url).infer(m.model.name, [inp])
    assert result.as_numpy("softmax").shape == (3, 5)
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 3 * 5 * 4


def test_response_names_the_path_and_reason_for_out_of_range_input(servers):
    package = servers["package"]
    m = load_manifest(package)
    fmt = m.input.format
    x = np.zeros((4, 16), np.float32)
    x[2, 7] = (fmt.max_value + 1.0) * 2.0 + 0.5  # raw feature that preprocesses beyond the IP's input range
    inp = triton.InferInput("features", [4, 16], "FP32")
    inp.set_data_from_numpy(x)
    result = _client(servers["gateway"].url).infer(m.model.name, [inp])
    params = result.get_response()["parameters"]
    assert params["served_by"] == "edge+cloud" and params["cloud_samples"] == 1
    assert "input_out_of_range" in params["route_reason"]
    y = result.as_numpy("softmax")
    np.testing.assert_allclose(y[2], keras_reference(package, x[2:3])[0], atol=1e-6)  # the float model's answer
    metrics = httpx.get(servers["gateway"].url + "/metrics").text
    assert 'lepton_gateway_inferences_total{model="tiny_classifier",path="edge+cloud",reason="input_out_of_range"}' \
        in metrics


def _post(url: str, body: bytes, headers: dict | None = None, model: str = "tiny_classifier") -> httpx.Response:
    return httpx.post(f"{url}/v2/models/{model}/infer", content=body,
                      headers={"content-type": "application/json", **(headers or {})}, timeout=10)


def _request(data, shape=(1, 16), datatype="FP32", name="features") -> bytes:
    return json.dumps({"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data}]}).encode()


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b'{"inputs": [', 400, "not valid JSON"),
        (_request([0.0] * 15, shape=(1, 15)), 400, "expected [N, 16]"),
        (_request([0.0] * 16, shape=(16,)), 400, "expected [N, 16]"),
        (_request([0] * 16, datatype="INT32"), 400, "datatype INT32"),
        (_request([0.0] * 16, name="pixels"), 400, "unknown input 'pixels'"),
        (b'{"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32", "data": [NaN' + b", 0" * 15 + b"]}]}",
         400, "NaN"),
        (b'{"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32", "data": [Infinity' + b", 0" * 15
         + b"]}]}", 400, "Infinity"),
    ],
)
def test_bad_requests_get_4xx_with_an_error_and_the_server_keeps_serving(servers, body, status, fragment):
    url = servers["gateway"].url
    r = _post(url, body)
    assert r.status_code == status and fragment in r.json()["error"]
    ok = _post(url, _request([0.0] * 16))
    assert ok.status_code == 200 and ok.json()["outputs"][0]["shape"] == [1, 5]


def test_binary_nan_and_unknown_model_and_route(servers):
    url = servers["gateway"].url
    x = np.zeros((1, 16), np.float32)
    x[0, 3] = np.inf
    inp = triton.InferInput("features", [1, 16], "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match="NaN or Inf"):
        _client(url).infer("tiny_classifier", [inp])
    r = _post(url, _request([0.0] * 16), model="other_model")
    assert r.status_code == 404 and "unknown model" in r.json()["error"]
    r = httpx.get(url + "/v2/nothing/here")
    assert r.status_code == 404 and "error" in r.json()


def test_oversized_body_and_bearer_token(secured):
    url = secured.url
    big = _request([0.0] * 16 * 2000, shape=(2000, 16))
    assert len(big) > 64 << 10
    r = _post(url, big, {"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]
    r = _post(url, _request([0.0] * 16))
    assert r.status_code == 401 and "bearer token" in r.json()["error"]
    r = _post(url, _request([0.0] * 16), {"authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert httpx.get(url + "/v2/health/ready").status_code == 200  # probes need no token
    assert httpx.get(url + "/v2").status_code == 401
    r = _post(url, _request([0.0] * 16), {"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    c = triton.InferenceServerClient(url.removeprefix("http://"))
    assert c.get_model_metadata("tiny_classifier", headers={"Authorization": f"Bearer {TOKEN}"})["name"]
