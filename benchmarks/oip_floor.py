"""A raw-ASGI Open Inference Protocol server that does almost nothing: the floor a Python OIP server reaches on
this machine, to compare the gateway against (benchmarks/request_path.py in process, benchmarks/perf_analyzer.py
over HTTP). No framework, no validation beyond what parsing needs, no metrics; the "model" is one tiny numpy
operation. It answers what perf_analyzer asks before it measures (server and model metadata, the model
configuration, health) and inference in JSON or with the binary tensor extension.

    python benchmarks/oip_floor.py --package DIR --port 8010    # the package's model name and tensor shapes

Not a server to deploy: it trusts its callers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DTYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"), "FP16": np.dtype("<f2")}


def make_app(model: str, input_name: str, input_shape: tuple[int, ...], output_name: str,
             output_shape: tuple[int, ...]):
    """The ASGI app for one model taking (N, *input_shape) FP32 and answering (N, *output_shape) FP32."""
    n_in, n_out = int(np.prod(input_shape)), int(np.prod(output_shape))
    weights = np.full((n_in, n_out), 1.0 / n_in, np.float32)  # the trivial op: a mean over the features
    io = lambda name, shape: {"name": name, "datatype": "FP32", "shape": [-1, *shape]}  # noqa: E731
    infer_path = f"/v2/models/{model}/infer"
    static = {
        "/v2/health/live": {"live": True},
        "/v2/health/ready": {"ready": True},
        "/v2": {"name": "oip-floor", "version": "1", "extensions": ["binary_tensor_data", "model_configuration"]},
        f"/v2/models/{model}": {"name": model, "versions": ["1"], "platform": "numpy",
                                "inputs": [io(input_name, input_shape)], "outputs": [io(output_name, output_shape)]},
        f"/v2/models/{model}/ready": {"name": model, "ready": True},
        f"/v2/models/{model}/config": {
            "name": model, "platform": "numpy", "max_batch_size": 4096,
            "input": [{"name": input_name, "data_type": "TYPE_FP32", "dims": list(input_shape)}],
            "output": [{"name": output_name, "data_type": "TYPE_FP32", "dims": list(output_shape)}]},
    }
    static = {k: json.dumps(v).encode() for k, v in static.items()}

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        path = scope["path"]
        if path == infer_path and scope["method"] == "POST":
            status, body, headers = await infer(scope, receive)
        elif path in static:
            status, body, headers = 200, static[path], [(b"content-type", b"application/json")]
        else:
            status, body, headers = 404, b'{"error":"not found"}', [(b"content-type", b"application/json")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def infer(scope, receive):
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        header_length = None
        for name, value in scope["headers"]:
            if name == b"inference-header-content-length":
                header_length = int(value)
        msg = json.loads(body[:header_length] if header_length else body)
        t = msg["inputs"][0]
        dtype = DTYPES[t["datatype"]]
        if header_length:
            x = np.frombuffer(body, dtype, offset=header_length).reshape(t["shape"])
        else:
            x = np.asarray(t["data"], dtype).reshape(t["shape"])
        y = (x.reshape(x.shape[0], -1).astype(np.float32, copy=False) @ weights).reshape(x.shape[0], *output_shape)
        binary = (msg.get("parameters") or {}).get("binary_data_output", False)
        for o in msg.get("outputs") or ():
            binary = (o.get("parameters") or {}).get("binary_data", binary)
        out = {"name": output_name, "datatype": "FP32", "shape": list(y.shape)}
        reply = {"model_name": model, "model_version": "1", "outputs": [out]}
        if msg.get("id") is not None:
            reply["id"] = msg["id"]
        if not binary:
            out["data"] = y.reshape(-1).tolist()
            return 200, json.dumps(reply).encode(), [(b"content-type", b"application/json")]
        raw = y.tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
        head = json.dumps(reply).encode()
        return 200, head + raw, [(b"content-type", b"application/octet-stream"),
                                 (b"inference-header-content-length", str(len(head)).encode())]

    return app


def app_for_package(package_dir: str | Path):
    """The floor app with a package's model name and tensor shapes (read from its manifest.json)."""
    m = json.loads((Path(package_dir) / "manifest.json").read_text())
    inp, out = m["inputs"][0], m["outputs"][0]
    return make_app(m["model"]["name"], inp["name"], tuple(inp["shape"]), out["name"], tuple(out["shape"]))


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--package", required=True, help="package directory whose model name and shapes to take")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8010)
    a = p.parse_args()
    uvicorn.run(app_for_package(a.package), host=a.host, port=a.port, log_level="warning", access_log=False,
                http="httptools", lifespan="on")


if __name__ == "__main__":
    main()
