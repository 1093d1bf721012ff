"""The cloud tier on Ray Serve (cloud/lepton_cloud_ray, in its own environment .venv-ray) behind an unchanged
gateway: `lepton-hls serve` of a built digits_cnn package with `--mode cloud` sends every request to two Ray
replicas of the exported digits_cloud model. The answers are onnxruntime's on the same file, both replicas
answer, and a replica killed under load (ray.kill on its actor) loses no request at the client: the ingress sends
a call lost with its replica to the other one, and Ray starts a replacement, which then answers too.

Slow: builds the package and starts a Ray cluster (2 CPUs, replicas of half a CPU). Skipped without .venv-ray
(`make cloud-ray-env`)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from paths import ROOT
from serving_support import free_port, metric_value, shared_package, wait_until

from lepton_hls.cli import main

pytestmark = pytest.mark.slow

RAY_PYTHON = ROOT / ".venv-ray" / "bin" / "python"
REPLICA_ANSWERS = 'lepton_cloud_replica_answers_total{{device="cpu",model="digits_cnn",replica="{}"}}'
CLIENTS = 8  # concurrent clients of the gateway


@pytest.fixture(scope="module")
def ray_python() -> Path:
    if not RAY_PYTHON.is_file():
        pytest.skip(f"the Ray Serve tier runs in its own environment, {RAY_PYTHON.parent.parent} is missing: "
                    "make cloud-ray-env")
    return RAY_PYTHON


def ray_run(ray_python: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """A command in the Ray environment; a cluster it joins is joined with the token `ray.init` saved."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    return subprocess.run([str(ray_python), *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def digits(build_pkg, tmp_path_factory):
    """(the digits_cnn package, digits_cloud exported to ONNX for it)."""
    package = build_pkg("digits_cnn", samples=300)
    onnx_path = tmp_path_factory.mktemp("ray_onnx") / "digits_cloud.onnx"
    assert main(["export-onnx", str(package), "--model", "zoo:digits_cloud", "--out", str(onnx_path)]) == 0
    return package, onnx_path


def start_ray_cloud(ray_python: Path, onnx_path: Path, manifest: Path, log_path: Path, replicas: int = 2):
    """`python -m lepton_cloud_ray serve` on a local 2-CPU Ray cluster -> (process, URL, Ray address)."""
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [str(ray_python), "-m", "lepton_cloud_ray", "serve", str(onnx_path), "--manifest", str(manifest),
         "--replicas", str(replicas), "--num-cpus", "0.5", "--local-cpus", "2", "--max-batch-size", "8",
         "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    url = f"http://127.0.0.1:{port}"

    ready = re.compile(r"lepton_cloud_ray: .* Ray cluster at (\S+?)\)")

    def started() -> bool:
        assert proc.poll() is None, f"the Ray cloud exited with status {proc.returncode}: {log_path.read_text()}"
        return ready.search(log_path.read_text()) is not None

    wait_until(started, "the Ray cloud's ready line", timeout=600)
    return proc, url, ready.search(log_path.read_text()).group(1)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(120)  # Ray shuts its local cluster down
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="module")
def system(ray_python, digits, tmp_path_factory):
    """The Ray cloud (two replicas) and a gateway sending it every request."""
    from lepton_hls.serving_processes import start_gateway_process, stop_process

    package, onnx_path = digits
    logs = tmp_path_factory.mktemp("ray_logs")
    ray_proc, cloud_url, address = start_ray_cloud(ray_python, onnx_path, package / "manifest.json",
                                                   logs / "ray.log")
    try:
        gateway, gateway_url = start_gateway_process(
            package, logs / "gateway.log", cloud_url, "--mode", "cloud", "--cloud-timeout-ms", "20000",
            "--timeout-ms", "30000", timeout_s=300)
    except BaseException:
        stop(ray_proc)
        raise
    yield {"package": package, "onnx": onnx_path, "cloud": cloud_url, "gateway": gateway_url, "address": address}
    stop_process(gateway)
    stop(ray_proc)


def model_replicas(ray_python: Path, address: str) -> list[str]:
    out = ray_run(ray_python, "-m", "lepton_cloud_ray", "replicas", "--address", address)
    assert out.returncode == 0, out.stderr[-2000:]
    listing = json.loads(out.stdout)
    assert listing["application"] == "RUNNING"
    return [r["id"] for r in listing["replicas"]]


def kill_replica(ray_python: Path, address: str, replica: str) -> None:
    code = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "ray.kill(ray.get_actor(f'SERVE_REPLICA::lepton#OnnxModel#{sys.argv[2]}', namespace='serve'), "
            "no_restart=True)")
    out = ray_run(ray_python, "-c", code, address, replica)
    assert out.returncode == 0, out.stderr[-2000:]


def held_out_digits() -> np.ndarray:
    from lepton_hls import zoo

    x, _ = zoo.get("digits_cloud").eval_data()
    return x.astype(np.float32)


def onnx_answers(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"pixels": x})[0]


class Traffic:
    """CLIENTS concurrent clients sending `n` requests (1..3 held-out digits each) to the gateway; every answer
    is compared with onnxruntime's on the same file. `during(k, action)` runs `action` (in a thread) once k
    requests were answered, while the others keep sending."""

    def __init__(self, gateway: str, onnx_path: Path):
        self.url = f"{gateway}/v2/models/digits_cnn/infer"
        self.x = held_out_digits()
        self.expected = onnx_answers(onnx_path, self.x)
        self.outcomes: collections.Counter = collections.Counter()
        self.mismatches = 0

    def send(self, n: int, during: tuple[int, callable] | None = None) -> None:
        asyncio.run(self._send(n, during))

    async def _send(self, n: int, during) -> None:
        rng = np.random.default_rng(n)
        picks = [rng.choice(len(self.x), int(rng.integers(1, 4)), replace=False) for _ in range(n)]
        queue = collections.deque(picks)
        answered, action = 0, None

        async def client(http: httpx.AsyncClient) -> None:
            nonlocal answered, action
            while queue:
                rows = queue.popleft()
                body = {"inputs": [{"name": "pixels", "shape": [len(rows), 8, 8, 1], "datatype": "FP32",
                                    "data": self.x[rows].reshape(-1).tolist()}]}
                r = await http.post(self.url, json=body)
                answered += 1
                if during is not None and answered == during[0]:
                    action = asyncio.ensure_future(asyncio.to_thread(during[1]))
                if r.status_code != 200:
                    self.outcomes[f"status {r.status_code}: {r.text[:200]}"] += 1
                    continue
                self.outcomes[r.json()["parameters"]["served_by"]] += 1
                y = np.asarray(r.json()["outputs"][0]["data"]).reshape(len(rows), 10)
                self.mismatches += not np.allclose(y, self.expected[rows], atol=1e-6)

        async with httpx.AsyncClient(timeout=120) as http:
            await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
        if action is not None:
            await action

    @property
    def sent(self) -> int:
        return sum(self.outcomes.values())

    @property
    def lost(self) -> int:
        return sum(v for k, v in self.outcomes.items() if k != "cloud")


def replica_counts(cloud: str, replicas) -> dict[str, float]:
    return {r: metric_value(cloud, REPLICA_ANSWERS.format(r)) for r in replicas}


def test_requests_through_the_gateway_spread_over_both_replicas(system, ray_python):
    replicas = model_replicas(ray_python, system["address"])
    assert len(replicas) == 2
    before = replica_counts(system["cloud"], replicas)
    traffic = Traffic(system["gateway"], system["onnx"])
    traffic.send(200)
    after = replica_counts(system["cloud"], replicas)
    print(f"\n200 requests through the gateway: {dict(traffic.outcomes)}; answers per replica "
          f"{ {r: after[r] - before[r] for r in replicas} }")
    assert traffic.outcomes == {"cloud": 200} and traffic.mismatches == 0
    assert all(after[r] > before[r] for r in replicas)  # both replicas computed answers


def test_the_answer_names_its_replica_and_the_metadata_its_classes(system, ray_python):
    x = held_out_digits()[:2]
    r = httpx.post(f"{system['cloud']}/v2/models/digits_cnn/infer",
                   json={"inputs": [{"name": "pixels", "shape": [2, 8, 8, 1], "datatype": "FP32",
                                     "data": x.reshape(-1).tolist()}]})
    assert r.status_code == 200
    assert r.json()["parameters"]["replica"] in model_replicas(ray_python, system["address"])
    stats, = httpx.get(f"{system['cloud']}/v2/models/digits_cnn/stats").json()["model_stats"]
    assert stats["inference_count"] >= 2 and stats["execution_count"] >= 1  # Triton's statistics extension
    assert stats["inference_stats"]["compute_infer"]["count"] == stats["inference_stats"]["success"]["count"]
    meta = httpx.get(f"{system['cloud']}/v2/models/digits_cnn").json()
    assert meta["platform"] == "onnxruntime_onnx"
    assert json.loads(meta["outputs"][0]["parameters"]["classes"]) == [str(d) for d in range(10)]


def test_a_replica_killed_under_load_loses_no_request(system, ray_python):
    address, cloud = system["address"], system["cloud"]
    original = model_replicas(ray_python, address)
    victim = original[0]
    losses_before = metric_value(cloud, 'lepton_cloud_replica_losses_total{model="digits_cnn"}')
    retries_before = metric_value(system["gateway"], 'lepton_gateway_cloud_attempts_total{kind="retry",outcome="sent"}')
    traffic = Traffic(system["gateway"], system["onnx"])
    traffic.send(600, during=(100, lambda: kill_replica(ray_python, address, victim)))
    losses = metric_value(cloud, 'lepton_cloud_replica_losses_total{model="digits_cnn"}') - losses_before
    retries = metric_value(system["gateway"], 'lepton_gateway_cloud_attempts_total{kind="retry",outcome="sent"}')
    print(f"\nkilled replica {victim} after 100 of 600 requests: sent {traffic.sent}, answered "
          f"{traffic.outcomes['cloud']}, lost {traffic.lost} ({dict(traffic.outcomes)}); calls the ingress sent "
          f"again after losing their replica: {losses:g}; gateway retries: {retries - retries_before:g}")
    assert traffic.sent == 600 and traffic.lost == 0 and traffic.mismatches == 0

    def replaced() -> bool:
        now = model_replicas(ray_python, address)
        return len(now) == 2 and victim not in now

    wait_until(replaced, "Ray's replacement of the killed replica", timeout=300)
    replacement, = set(model_replicas(ray_python, address)) - set(original)
    before = metric_value(cloud, REPLICA_ANSWERS.format(replacement))
    traffic.send(100)
    print(f"replacement replica {replacement} answered "
          f"{metric_value(cloud, REPLICA_ANSWERS.format(replacement)) - before:g} of the next 100 requests' calls")
    assert traffic.lost == 0 and traffic.mismatches == 0
    assert metric_value(cloud, REPLICA_ANSWERS.format(replacement)) > before


# ---- the launcher and the cluster config (no cluster started) ----------------------------------------------


def test_launcher_refuses_a_model_exported_for_another_package(ray_python, digits, tmp_path):
    _, onnx_path = digits
    out = ray_run(ray_python, "-m", "lepton_cloud_ray", "serve", str(onnx_path), "--manifest",
                  str(shared_package() / "manifest.json"), "--port", str(free_port()))
    assert out.returncode == 2, out.stderr[-2000:]
    line, = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert "does not fit the package" in line and "input shape" in line and "lepton-hls export-onnx" in line


def test_config_for_a_gpu_cluster_passes_rays_schema(ray_python, digits, tmp_path):
    _, onnx_path = digits
    path = tmp_path / "serve.yaml"
    out = ray_run(ray_python, "-m", "lepton_cloud_ray", "config", "/models/digits_cloud.onnx", "--min-replicas", "2",
                  "--max-replicas", "6", "--target-ongoing-requests", "16", "--num-gpus", "0.5",
                  "--max-batch-size", "64", "--out", str(path))
    assert out.returncode == 0, out.stderr[-2000:]
    app, = yaml.safe_load(path.read_text())["applications"]
    assert app["import_path"] == "lepton_cloud_ray.app:build"
    assert app["args"] == {"onnx": "/models/digits_cloud.onnx", "min_replicas": 2, "max_replicas": 6,
                           "target_ongoing_requests": 16.0, "num_gpus": 0.5, "max_batch_size": 64}


def test_the_shipped_cluster_config_passes_rays_schema_and_the_options(ray_python):
    code = ("import sys, yaml; from ray.serve.schema import ServeDeploySchema; "
            "from lepton_cloud_ray.options import AppOptions; c = yaml.safe_load(open(sys.argv[1])); "
            "ServeDeploySchema.model_validate(c); o = AppOptions.from_dict(c['applications'][0]['args']); "
            "print(o.model_deployment())")
    out = ray_run(ray_python, "-c", code, str(ROOT / "cloud" / "ray" / "serve_config.yaml"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "'autoscaling_config': {'min_replicas': 1, 'max_replicas': 8, 'target_ongoing_requests': 32" in out.stdout
    assert "'num_gpus': 0.5" in out.stdout


def test_the_ray_tier_imports_without_tensorflow(ray_python):
    code = ("import sys, lepton_cloud_ray.app, lepton_cloud_ray.cli, lepton_cloud_ray.ingress, "
            "lepton_cloud_ray.model; print(sorted(m for m in ('tensorflow', 'keras', 'pynq') if m in sys.modules))")
    out = ray_run(ray_python, "-c", code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
