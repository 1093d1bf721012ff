"""The edge model lifecycle on the emulated board (real pynq, the runtime's DMA code, the bit-exact engine as the
fabric), through the node's real HTTP surface: v1 serves; v2 is pushed with `lepton-hls push` under load and
takes over without a failed request, every answer bit-exact to the version that says it answered; a tampered and
an unsigned package are refused while v2 serves; a version whose bitstream belongs to another model fails its
self-test on the board and the node puts v2 back; a canary whose board answers wrongly is rolled back by the
node itself; a clean canary is promoted."""

from __future__ import annotations

import io
import shutil
import tarfile
import threading

import httpx
import numpy as np
import pytest

pynq = pytest.importorskip("pynq")

from cli_runner import run_cli  # noqa: E402
from lifecycle_models import save_tiny_mlp  # noqa: E402
from serving_support import metric_value as _metric_value, wait_until  # noqa: E402

from lepton_host.backends import EmulatorBackend  # noqa: E402
from lepton_host.manifest import load_manifest  # noqa: E402
from lepton_host.model_repository import Trust  # noqa: E402
from lepton_host.serving.app import ServerOptions  # noqa: E402
from lepton_host.serving.batcher import BatcherConfig  # noqa: E402
from lepton_host.serving.gateway import GatewayConfig  # noqa: E402
from lepton_host.serving.metrics import ServingMetrics  # noqa: E402
from lepton_host.serving.node import EdgeNode, NodeOptions, version_opener  # noqa: E402
from lepton_host.serving.node_app import create_node_app  # noqa: E402
from lepton_host.serving.runner import ServerThread  # noqa: E402
from lepton_host.signing import SIGNATURE_NAME, generate_key, sign_package  # noqa: E402

TOKEN = "lifecycle-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODEL = "tiny_mlp"  # the package's own name: `push` sends there by default


@pytest.fixture(scope="module")
def builds(build_pkg, tiny_model, tmp_path_factory):
    """Two packages of one contract with different weights (A: the shared tiny model; B: another seed)."""
    other = save_tiny_mlp(tmp_path_factory.mktemp("tiny_b") / "tiny_mlp.h5", seed=2)
    return build_pkg(str(tiny_model)), build_pkg(str(other))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    priv, _ = generate_key(d, "builder")
    return priv, d


def _signed_copy(src, dest, key):
    shutil.copytree(src, dest)
    sign_package(dest, key)
    return dest


def _inputs(n=4, seed=0):
    return np.random.default_rng(seed).uniform(-3, 3, size=(n, 16))


def _infer(client, url, x, version=None):
    path = f"/v2/models/{MODEL}" + (f"/versions/{version}" if version else "") + "/infer"
    body = {"inputs": [{"name": "inp", "shape": list(x.shape), "datatype": "FP64", "data": x.ravel().tolist()}]}
    r = client.post(url + path, json=body, headers=AUTH)
    return r


def _answer(r):
    doc = r.json()
    out = doc["outputs"][0]
    return doc["model_version"], np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])


@pytest.fixture
def node(builds, keys, tmp_path):
    """A node serving REPO/tiny/1 (package A, signed) on the emulated board."""
    pkg_a, _ = builds
    repo = tmp_path / "repo"
    _signed_copy(pkg_a, repo / MODEL / "1", keys[0])
    metrics = ServingMetrics("lepton_gateway")
    base = GatewayConfig(batcher=BatcherConfig(max_batch_size=16, max_queue_delay_s=0.0005), audit=None,
                         health_interval_s=0.2, server=ServerOptions(token=TOKEN))
    options = NodeOptions(target="emulated-board", watch_s=None, canary_soak_s=3600.0, canary_min_requests=10**9)
    node = EdgeNode(repo, Trust.from_options(keys[1], allow_unsigned=False), version_opener(base, "fast", metrics),
                    options, metrics)
    server = ServerThread(create_node_app(node, base.server)).start()
    try:
        yield node, server.url, repo
    finally:
        server.stop()


def metric_value(url: str, series: str) -> float:
    """One series of the node's /metrics, which is behind its token."""
    return _metric_value(url, series, headers=AUTH)


def _push(url, pkg, *extra):
    return run_cli("push", pkg, "--to", url, "--token", TOKEN, *extra)


class Load:
    """Requests one after another from two threads until stopped; every answer kept with its version, and per
    thread, in the order that thread sent them, with whether it was sent after `mark()`."""

    def __init__(self, url, x):
        self.url, self.x = url, x
        self.answers: list[tuple[str, np.ndarray]] = []
        self.by_thread: list[list[tuple[str, bool]]] = [[], []]  # (version, sent after mark())
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._marked = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(2)]
        self._lock = threading.Lock()

    def _run(self, i):
        with httpx.Client(timeout=30.0) as c:
            while not self._stop.is_set():
                after_mark = self._marked.is_set()
                r = _infer(c, self.url, self.x)
                with self._lock:
                    if r.status_code == 200:
                        self.answers.append(_answer(r))
                        self.by_thread[i].append((self.answers[-1][0], after_mark))
                    else:
                        self.failures.append(f"{r.status_code}: {r.text[:200]}")

    def mark(self):
        """Requests sent from now on count as sent after the mark."""
        self._marked.set()

    def fewest_after_mark(self) -> int:
        """The fewer of the two threads' answers to requests sent after the mark."""
        with self._lock:
            return min(sum(after for _, after in answers) for answers in self.by_thread)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def count(self):
        with self._lock:
            return len(self.answers)

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(60)


def test_push_under_load_switches_without_a_failed_request_and_refuses_bad_packages(node, builds, keys, tmp_path):
    node_obj, url, repo = node
    pkg_a, pkg_b = builds
    x = _inputs()
    ref = {"1": EmulatorBackend(pkg_a).predict(x), "2": EmulatorBackend(pkg_b).predict(x)}
    assert not np.array_equal(ref["1"], ref["2"])  # the versions are told apart by their answers

    with httpx.Client(timeout=30.0) as c:
        meta = c.get(url + f"/v2/models/{MODEL}", headers=AUTH).json()
        assert meta["versions"] == ["1"]
        v, y = _answer(_infer(c, url, x))
        assert v == "1" and np.array_equal(y, ref["1"])

    v2 = _signed_copy(pkg_b, tmp_path / "v2", keys[0])
    with Load(url, x) as load:
        wait_until(lambda: load.count() >= 20, "answers from v1 under load")
        r = _push(url, v2)
        load.mark()
        assert r.returncode == 0, r.stderr
        assert "version 2 serving" in r.stdout
        wait_until(lambda: load.fewest_after_mark() >= 10, "answers to both threads after the switch")
    assert load.failures == []
    for v, y in load.answers:
        assert np.array_equal(y, ref[v]), f"an answer labelled version {v} is not version {v}'s"
    # Each thread's requests, in the order it sent them, switch once and never back (the two threads' answers
    # interleave in no fixed order: one sent just before the switch may be answered after the other's first v2).
    for answers in load.by_thread:
        versions = [v for v, _ in answers]
        switch = versions.index("2")
        assert set(versions[:switch]) == {"1"} and set(versions[switch:]) == {"2"}
        assert all(v == "2" for v, after_push in answers if after_push)  # sent after the push returned: v2's
    assert metric_value(url, f'lepton_gateway_serving_version{{model="{MODEL}"}}') == 2.0

    # A tampered package (a weights file changed after signing) and an unsigned one: refused, not stored.
    v3 = _signed_copy(pkg_b, tmp_path / "v3", keys[0])
    weights = next(p for p in sorted((v3 / "engine").rglob("*")) if p.is_file())
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    v4 = tmp_path / "v4"
    shutil.copytree(pkg_b, v4)
    with httpx.Client(timeout=60.0) as c:
        r3 = c.post(url + f"/v2/repository/models/{MODEL}/push", content=_raw_tar(v3),
                    headers={**AUTH, "Content-Type": "application/x-tar"})
        assert r3.status_code == 409 and "refused" in r3.json()["error"] and "sha256" in r3.json()["error"]
    r4 = _push(url, v4)
    assert r4.returncode == 2 and "not signed" in r4.stderr
    assert sorted(p.name for p in (repo / MODEL).iterdir() if not p.name.startswith(".")) == ["1", "2"]
    with httpx.Client(timeout=30.0) as c:
        v, y = _answer(_infer(c, url, x))
        assert v == "2" and np.array_equal(y, ref["2"])
        # the version that is not serving is still reachable, on the emulator
        v, y = _answer(_infer(c, url, x, version="1"))
        assert v == "1" and np.array_equal(y, ref["1"])


def test_a_version_failing_its_self_test_on_the_board_is_rolled_back(node, builds, keys, tmp_path):
    from lepton_host import board

    node_obj, url, repo = node
    pkg_a, pkg_b = builds
    x = _inputs(seed=3)
    ref_a = EmulatorBackend(pkg_a).predict(x)
    # v5: B's model with A's bitstream (a mismatch made on purpose): its own emulation passes, its board cannot.
    v5 = tmp_path / "v5"
    shutil.copytree(pkg_b, v5)
    bit = board.write_overlay(load_manifest(pkg_a), v5 / "overlay", "lepton", name="lepton")
    m = load_manifest(v5, verify=False)
    m.add_artifacts(v5, [bit, bit.with_suffix(".hwh")])
    m.save(v5)
    sign_package(v5, keys[0])
    with Load(url, x) as load:
        wait_until(lambda: load.count() >= 10, "answers from v1 under load")
        r = _push(url, v5)
        n = load.count()
        wait_until(lambda: load.count() >= n + 10, "answers after the refused switch")
    assert r.returncode == 2 and "self-test" in r.stderr and "back on emulated-board" in r.stderr, r.stderr
    assert load.failures == []
    assert {v for v, _ in load.answers} == {"1"}
    assert all(np.array_equal(y, ref_a) for _, y in load.answers)
    index = {row["version"]: row for row in httpx.post(url + "/v2/repository/index", headers=AUTH).json()}
    assert index["1"]["state"] == "READY" and index["2"]["state"] == "UNAVAILABLE"
    assert "self-test" in index["2"]["reason"]
    assert metric_value(url, f'lepton_gateway_version_transitions_total{{event="rolled back",model="{MODEL}",version="2"}}') == 1.0


def test_a_canary_answering_wrongly_is_rolled_back_and_a_clean_one_promoted(node, builds, keys, tmp_path):
    from lepton_host import board
    from lepton_host.emulator import load_emulator

    node_obj, url, repo = node
    pkg_a, pkg_b = builds
    x = _inputs(seed=5)
    ref_a, ref_b = EmulatorBackend(pkg_a).predict(x), EmulatorBackend(pkg_b).predict(x)
    node_obj.options = NodeOptions(target="emulated-board", watch_s=None, canary_soak_s=0.0, canary_min_requests=40,
                                   canary_max_audit_mismatches=0)
    v2 = _signed_copy(pkg_b, tmp_path / "v2", keys[0])
    r = _push(url, v2, "--canary", "50")
    assert r.returncode == 0 and "version 2 canary" in r.stdout, r.stderr
    # The canary holds the board; make the board answer with A's network for B's accelerator: wrong answers that
    # pass every transfer check, which only the audit against B's own emulation can see.
    sha_b = load_manifest(pkg_b).model.sha256
    board.EmulatedBoard.instance().attach(load_emulator(pkg_a, "fast"), model_sha256=sha_b)
    with httpx.Client(timeout=30.0) as c:
        answers = []
        wait_until(lambda: answers.append(_answer(_infer(c, url, x))) or _verdict(node_obj, 2),
                   "the node's canary verdict")
        v, y = _answer(_infer(c, url, x))
        assert v == "1" and np.array_equal(y, ref_a)
    assert any(v == "2" for v, _ in answers)  # the canary answered before it was caught
    assert "canary rolled back" in node_obj.models[MODEL].refused[2] and "mismatch" in node_obj.models[MODEL].refused[2]
    assert metric_value(url, f'lepton_gateway_canary_share{{model="{MODEL}"}}') == 0.0

    # A clean canary (its board computes its own network again) is promoted after its requests.
    board.EmulatedBoard.instance().attach(load_emulator(pkg_b, "fast"), model_sha256=sha_b)
    v3 = _signed_copy(pkg_b, tmp_path / "v3", keys[0])
    r = _push(url, v3, "--canary", "50")
    assert r.returncode == 0 and "version 3 canary" in r.stdout, r.stderr
    with httpx.Client(timeout=30.0) as c:
        answers = []
        wait_until(lambda: answers.append(_answer(_infer(c, url, x))) or _verdict(node_obj, 3),
                   "the node's canary verdict")
        v, y = _answer(_infer(c, url, x))
    assert v == "3" and np.array_equal(y, ref_b)
    for v, y in answers:
        assert np.array_equal(y, {"1": ref_a, "3": ref_b}[v])
    assert node_obj.models[MODEL].serving.target == "emulated-board"


def _verdict(node, version):
    """The node has finished acting on its verdict about canary `version` (rolled back or promoted)."""
    return any(e["version"] == version and e["event"] in ("rolled back", "promoted") for e in node.models[MODEL].events)


def test_repository_routes_need_the_token_and_name_what_is_wrong(node):
    _, url, _ = node
    with httpx.Client(timeout=30.0) as c:
        assert c.post(url + "/v2/repository/index").status_code == 401
        r = c.post(url + "/v2/repository/models/nope/load", headers=AUTH)
        assert r.status_code == 404 and "no model 'nope'" in r.json()["error"]
        r = c.post(url + f"/v2/repository/models/{MODEL}/load", json={"parameters": {"version": 9}}, headers=AUTH)
        assert r.status_code == 409 and "has no version 9" in r.json()["error"]
        r = c.post(url + f"/v2/repository/models/{MODEL}/load", json={"parameters": {"version": "x"}}, headers=AUTH)
        assert r.status_code == 400
        r = c.post(url + f"/v2/repository/models/{MODEL}/push", content=b"\0" * 10,
                   headers={**AUTH, "Content-Type": "application/x-tar"})
        assert r.status_code == 400 and "not a tar archive" in r.json()["error"]
        r = c.post(url + "/v2/repository/models/..%2Fetc/push", content=b"x", headers=AUTH)
        assert r.status_code in (400, 404, 409)
        assert c.get(url + f"/v2/models/{MODEL}/config", headers=AUTH).json()["version_policy"] == {
            "latest": {"num_versions": 1}}
        r = c.post(url + f"/v2/repository/models/{MODEL}/load", json={"parameters": {"version": 1}}, headers=AUTH)
        assert r.status_code == 200 and r.json()["detail"] == "already serving"
        r = c.post(url + f"/v2/repository/models/{MODEL}/unload", json={"parameters": {"version": 1}}, headers=AUTH)
        assert r.status_code == 409 and "is serving" in r.json()["error"]
        r = c.get(url + "/v2/repository/info", headers=AUTH)
        assert r.json()["models"][MODEL]["serving"]["version"] == 1
        assert r.json()["models"][MODEL]["serving"]["signer"].startswith("builder")
        r = c.post(url + f"/v2/models/{MODEL}/versions/7/infer", headers=AUTH,
                   json={"inputs": [{"name": "inp", "shape": [1, 16], "datatype": "FP64", "data": [0.0] * 16}]})
        assert r.status_code == 404


def _raw_tar(pkg) -> bytes:
    """The package's files as they are, without the sender's own check (a tampered package gets through)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in sorted(pkg.rglob("*")):
            if p.is_file():
                tar.add(p, arcname=p.relative_to(pkg).as_posix())
    return buf.getvalue()


def test_signature_file_is_sent_with_the_package(builds, keys, tmp_path):
    from lepton_host.package_transfer import pack_package

    v = _signed_copy(builds[1], tmp_path / "v", keys[0])
    buf = io.BytesIO()
    assert SIGNATURE_NAME in pack_package(v, buf)


def test_a_version_copied_into_the_repository_or_a_policy_change_is_picked_up(builds, keys, tmp_path):
    """The folder watch's step, on the emulator target: copy v2 in, pin v1, add an unsigned v3, unpin."""
    import asyncio

    from lepton_host.model_repository import VersionPolicy, write_policy

    pkg_a, pkg_b = builds
    repo = tmp_path / "repo"
    _signed_copy(pkg_a, repo / MODEL / "1", keys[0])
    metrics = ServingMetrics("lepton_gateway")
    base = GatewayConfig(audit=None, server=ServerOptions(token=TOKEN))
    node = EdgeNode(repo, Trust.from_options(keys[1], allow_unsigned=False), version_opener(base, "fast", metrics),
                    NodeOptions(target="emulator", watch_s=None), metrics)
    server = ServerThread(create_node_app(node, base.server)).start()

    def rescan():
        return asyncio.run_coroutine_threadsafe(node.rescan(), node.loop).result(120)

    try:
        model = node.models[MODEL]
        assert rescan() == {}  # nothing changed
        _signed_copy(pkg_b, repo / MODEL / "2", keys[0])
        assert rescan()[MODEL]["version"] == 2 and model.serving.version == 2
        write_policy(repo / MODEL, VersionPolicy("pinned", 1))
        assert rescan()[MODEL]["version"] == 1 and model.serving.version == 1
        shutil.copytree(pkg_b, repo / MODEL / "3")  # unsigned: refused; latest then means the next one down
        write_policy(repo / MODEL, VersionPolicy("latest"))
        assert rescan()[MODEL]["version"] == 2 and model.serving.version == 2
        assert "not signed" in model.refused[3]
        x = _inputs(seed=9)
        with httpx.Client(timeout=30.0) as c:
            v, y = _answer(_infer(c, server.url, x))
        assert v == "2" and np.array_equal(y, EmulatorBackend(pkg_b).predict(x))
    finally:
        server.stop()


def test_serve_repository_from_the_command_line_in_development_mode(builds, tmp_path):
    import os
    import subprocess
    import sys

    from cli_runner import CLI

    repo = tmp_path / "repo"
    shutil.copytree(builds[0], repo / MODEL / "1")  # unsigned
    env = {**os.environ, "LEPTON_HLS_TOKEN": TOKEN}
    proc = subprocess.Popen([*CLI, "serve", "--repository", str(repo), "--allow-unsigned", "--port", "0",
                             "--watch-s", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        first = proc.stdout.readline()
        assert "UNSIGNED PACKAGES ALLOWED (development)" in first, first
        url = first.split(" on ")[1].split("/v2")[0]
        wait_until(lambda: _ready(url), "the node's readiness", timeout=120)
        info = run_cli("info", url, "--json", env=env)
        assert info.returncode == 0, info.stderr
        served = __import__("json").loads(info.stdout)["models"][MODEL]["serving"]
        assert served["version"] == 1 and served["signer"] == "unsigned" and served["target"] == "emulator"
    finally:
        proc.terminate()
        proc.wait(30)
    assert sys.executable  # the CLI ran under this interpreter


def _ready(url) -> bool:
    try:
        return httpx.get(url + "/v2/health/ready").status_code == 200
    except httpx.HTTPError:
        return False
