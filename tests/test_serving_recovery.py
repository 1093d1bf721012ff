"""The gateway brings a board back: on the emulated board (the real pynq library, the runtime's DMA code, the
C simulation as the fabric), a board that went missing and came back with its DMA halted, or that corrupted a
batch, is reset and re-admitted by the health loop only after its golden-vector self-test passes; readiness
says which path can answer; the audit re-computes edge answers off the request path and takes a board that
answers wrongly out; scheduled faults start and clear. The health loop and the fault schedule are driven by
calling their step functions, never by waiting on a clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading

import httpx
import numpy as np
import pytest

from cli_runner import run_cli
from lepton_host.serving.fault_schedule import FaultSchedule, FaultSpecError, parse_fault, parse_schedule

pynq = pytest.importorskip("pynq")

from test_emulated_board import dev, inputs, tiny  # noqa: E402,F401  (shared session build)

from lepton_host.backends import EmulatorBackend, emulated_board_backend  # noqa: E402
from lepton_host.board import FaultKind  # noqa: E402
from lepton_host.emulator import CsimEmulator  # noqa: E402
from lepton_host.manifest import load_manifest  # noqa: E402
from lepton_host.selftest import GOLDEN, write_golden  # noqa: E402
from lepton_host.serving.app import ServerOptions  # noqa: E402
from lepton_host.serving.audit import AuditConfig, Auditor  # noqa: E402
from lepton_host.serving.batcher import BatcherConfig  # noqa: E402
from lepton_host.serving.cloud_client import CloudConfig  # noqa: E402
from lepton_host.serving.edge_monitor import MonitorConfig  # noqa: E402
from lepton_host.serving.gateway import GatewayConfig, create_gateway  # noqa: E402
from lepton_host.serving.routing import RoutingPolicy  # noqa: E402
from lepton_host.serving.runner import ServerThread  # noqa: E402

NEVER = 3600.0  # the health loop's own interval: tests call its step instead


# ---- the fault schedule's parser (no board needed) -------------------------------------------------------------
def test_fault_specs_parse_kinds_parameters_and_windows():
    f = parse_fault("corrupt:mask=0x80008000,every=3@5-10")
    assert (f.fault.kind, f.fault.xor_mask, f.fault.every, f.start_s, f.end_s) == (
        FaultKind.CORRUPT, 0x80008000, 3, 5.0, 10.0)
    assert parse_fault("slow:delay_s=0.25@1.5").fault.delay_s == 0.25
    assert parse_fault("slow:delay_s=0.25@1.5").end_s == float("inf")
    assert parse_fault("short:keep_fraction=0.25@0-2").fault.keep_fraction == 0.25
    assert parse_fault("hang@2-3").fault.kind is FaultKind.HANG
    assert parse_fault("MISSING@0-1").fault.kind is FaultKind.MISSING
    assert len(parse_schedule(["hang@1-2", "hang@2-3", "missing@1-3"])) == 3  # back to back is not overlap


@pytest.mark.parametrize("spec, words", [
    ("corrupt", "expected KIND"),
    ("melt@1", "unknown fault kind 'melt'"),
    ("hang:every=2@1", "hang does not take 'every'"),
    ("corrupt:mask@1", "not key=value"),
    ("corrupt:mask=0x1ffffffff@1", "32-bit"),
    ("corrupt:every=0@1", "every must be 1 or more"),
    ("short:keep_fraction=1.5@1", "keep_fraction"),
    ("slow:delay_s=abc@1", "not a number"),
    ("hang@x", "START 'x' is not a number"),
    ("hang@5-3", "END (3) must come after START (5)"),
    ("hang@-1", "START '' is not a number"),
])
def test_bad_fault_specs_are_refused_with_what_is_wrong(spec, words):
    with pytest.raises(FaultSpecError) as info:
        parse_fault(spec)
    assert words in str(info.value) and spec in str(info.value)


def test_overlapping_faults_of_one_kind_are_refused():
    with pytest.raises(FaultSpecError, match="overlaps"):
        parse_schedule(["slow:delay_s=0.1@0-5", "slow:delay_s=0.2@4-6"])


def test_serve_refuses_a_bad_fault_in_one_line_with_exit_status_2(tmp_path):
    for extra in (["--target", "emulated-board", "--fault", "corrupt:mask=0@1"], ["--fault", "hang@1"]):
        r = run_cli("serve", tmp_path, "--port", "0", *extra, timeout=60)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lepton-hls serve: error: --fault"), r.stderr


def test_a_scheduled_fault_starts_and_clears_on_the_emulated_board(dev):
    schedule = FaultSchedule(dev, parse_schedule(["corrupt:mask=0x100,every=2@5-10", "missing@7-8"]))
    assert schedule.step(0.0) == [] and dev.faults == {}
    assert schedule.next_change(0.0) == 5.0
    assert [w for w, _ in schedule.step(5.0)] == ["inject"]
    f = dev.faults[FaultKind.CORRUPT]
    assert (f.xor_mask, f.every) == (0x100, 2)
    schedule.step(7.0)
    assert dev.missing and schedule.injected() == ["corrupt", "missing"]
    schedule.step(8.0)
    assert not dev.missing and FaultKind.CORRUPT in dev.faults
    assert [w for w, _ in schedule.step(10.0)] == ["clear"]
    assert dev.faults == {} and schedule.next_change(10.0) is None


# ---- the gateway on the emulated board -----------------------------------------------------------------------
@pytest.fixture()
def golden_pkg(tiny, tmp_path):
    """A copy of the tiny package with golden vectors from its C simulation, as a build writes them."""
    pkg, _ = tiny
    copy = tmp_path / "pkg"
    shutil.copytree(pkg, copy)
    write_golden(copy, CsimEmulator(copy), n=24)
    m = load_manifest(copy, verify=False)
    m.add_artifacts(copy, [GOLDEN])
    m.save(copy)
    return copy


@pytest.fixture()
def cloud(golden_pkg, tmp_path):
    """An OIP server computing the same model (the package's C simulation, from a copy of the package so that
    it loads a library of its own), standing in for the cloud."""
    other = tmp_path / "cloud_pkg"
    shutil.copytree(golden_pkg, other)
    config = GatewayConfig(policy=RoutingPolicy(mode="edge"), health_interval_s=NEVER, audit=None)
    app, _ = create_gateway(load_manifest(other), EmulatorBackend(other, engine="csim"), config)
    with ServerThread(app) as server:
        yield server


def _reference(pkg):
    m = load_manifest(pkg)
    emu = CsimEmulator(pkg)
    return lambda x: emu.predict(m.preprocessing.apply(x)).reshape(len(x), -1)


@contextlib.contextmanager
def gateway(pkg, cloud_url=None, *, audit=None, audit_engine="csim", probe_failures=3, max_batch=8):
    backend = emulated_board_backend(pkg, engine="csim", max_batch=max_batch)
    config = GatewayConfig(
        batcher=BatcherConfig(max_batch_size=8, max_queue_delay_s=0.0, compute_timeout_s=0.5),
        policy=RoutingPolicy(latency_budget_s=None), health_interval_s=NEVER,
        cloud=CloudConfig(cloud_url, retries=0) if cloud_url else None,
        monitor=MonitorConfig(probe_failures=probe_failures), package_dir=str(pkg) if audit else None,
        audit=audit, audit_engine=audit_engine, server=ServerOptions(),
    )
    app, service = create_gateway(load_manifest(pkg), backend, config)
    server = ServerThread(app).start()
    try:
        yield server, service, backend
    finally:
        server.stop()
        backend.close()


def on_loop(service, coro):
    """Run a coroutine on the gateway's own event loop (its server thread) and return its result."""
    return asyncio.run_coroutine_threadsafe(coro, service._loop).result(30)


def infer(url, name, x):
    body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP64", "data": x.ravel().tolist()}]}
    r = httpx.post(f"{url}/v2/models/{name}/infer", content=json.dumps(body), timeout=20)
    return r.status_code, r.json()


def _y(r):
    out = r["outputs"][0]
    return np.asarray(out["data"], np.float64).reshape(out["shape"])


def test_a_board_that_went_missing_is_reset_and_readmitted_after_its_self_test(golden_pkg, cloud, dev):
    ref = _reference(golden_pkg)
    name = load_manifest(golden_pkg).model.name
    with gateway(golden_pkg, cloud.url) as (gw, service, backend):
        x = inputs(3, seed=1)
        status, r = infer(gw.url, name, x)
        assert status == 200 and r["parameters"]["served_by"] == "edge"
        np.testing.assert_array_equal(_y(r), ref(x))

        dev.inject("missing")
        status, r = infer(gw.url, name, x)  # the batch fails: the cloud answers, the edge goes out at once
        assert status == 200 and r["parameters"]["served_by"] == "cloud"
        assert r["parameters"]["route_reason"] == "edge_failed"
        np.testing.assert_allclose(_y(r), ref(x), atol=1e-6)
        assert not service.edge_healthy and "batch failed" in service.monitor.detail
        ready = httpx.get(gw.url + "/v2/health/ready").json()
        assert ready["ready"] is True and ready["paths"] == {"edge": False, "cloud": True}
        model_ready = httpx.get(f"{gw.url}/v2/models/{name}/ready").json()
        assert model_ready["paths"] == {"edge": False, "cloud": True} and "edge_detail" in model_ready

        on_loop(service, service.health_step())  # still missing: the reset fails, the edge stays out
        assert not service.edge_healthy and "reset failed" in service.monitor.detail

        dev.clear()
        # What kept the board out before: its DMA comes back halted, and only a reset starts it again.
        assert backend.health().ok is False and "halted" in backend.health().detail
        status, r = infer(gw.url, name, x)
        assert r["parameters"]["served_by"] == "cloud" and r["parameters"]["route_reason"] == "edge_unhealthy"

        on_loop(service, service.health_step())
        assert service.edge_healthy and "self-test passed" in service.monitor.detail
        assert backend.health().ok
        status, r = infer(gw.url, name, x)
        assert status == 200 and r["parameters"]["served_by"] == "edge"
        np.testing.assert_array_equal(_y(r), ref(x))
        assert httpx.get(gw.url + "/v2/health/ready").json()["paths"]["edge"] is True
        metrics = httpx.get(gw.url + "/metrics").text
        assert 'lepton_gateway_edge_transitions_total{to="out"} 1.0' in metrics
        assert "lepton_gateway_edge_in_service 1.0" in metrics


def test_failed_probes_take_the_edge_out_only_after_several_in_a_row(golden_pkg, cloud, dev):
    name = load_manifest(golden_pkg).model.name
    with gateway(golden_pkg, cloud.url, probe_failures=3) as (gw, service, _):
        dev.inject("missing")
        on_loop(service, service.health_step())
        on_loop(service, service.health_step())
        assert service.edge_healthy  # two missed probes: a loaded CPU, not yet a board fault
        dev.clear()
        on_loop(service, service.health_step())  # halted after the blip: a failed probe, the third in a row
        assert not service.edge_healthy and "3 consecutive failed health probes" in service.monitor.detail
        on_loop(service, service.health_step())
        assert service.edge_healthy
        assert infer(gw.url, name, inputs(2))[1]["parameters"]["served_by"] == "edge"


def test_a_corrupted_batch_goes_to_the_cloud_and_the_board_stays_out_until_its_self_test_passes(
        golden_pkg, cloud, dev):
    ref = _reference(golden_pkg)
    name = load_manifest(golden_pkg).model.name
    with gateway(golden_pkg, cloud.url) as (gw, service, _):
        dev.inject("corrupt", xor_mask=0x1, every=1)
        for n in (2, 3):  # the IntegrityError batch, then the edge is out
            x = inputs(n, seed=n)
            status, r = infer(gw.url, name, x)
            assert status == 200 and r["parameters"]["served_by"] == "cloud"
            np.testing.assert_allclose(_y(r), ref(x), atol=1e-6)
        assert "IntegrityError" in service.monitor.detail or "check word" in service.monitor.detail
        on_loop(service, service.health_step())
        assert not service.edge_healthy and "self-test failed" in service.monitor.detail
        dev.clear()
        on_loop(service, service.health_step())
        assert service.edge_healthy
        x = inputs(5, seed=9)
        status, r = infer(gw.url, name, x)
        assert r["parameters"]["served_by"] == "edge"
        np.testing.assert_array_equal(_y(r), ref(x))


def test_with_no_path_left_readiness_says_so(golden_pkg, dev):
    with gateway(golden_pkg, None) as (gw, service, _):
        assert httpx.get(gw.url + "/v2/health/ready").json()["paths"] == {"edge": True, "cloud": False}
        dev.inject("missing")
        for _ in range(3):
            on_loop(service, service.health_step())
        r = httpx.get(gw.url + "/v2/health/ready")
        assert r.status_code == 503 and r.json()["ready"] is False
        assert r.json()["cloud_detail"] == "no cloud configured" and "missing" in r.json()["edge_detail"]
        dev.clear()
        on_loop(service, service.health_step())
        assert httpx.get(gw.url + "/v2/health/ready").status_code == 200


class WrongForBatchesOf:
    """A fabric right on every batch but those of `n` samples (the self-test's batches pass), where one bit of
    the first output is flipped before the check word is computed: the wire is intact, the answer wrong."""

    def __init__(self, compute, n: int):
        self.compute, self.n = compute, n

    def predict_raw(self, raw):
        out = np.array(self.compute.predict_raw(raw), dtype=np.int64)
        if len(out) == self.n:
            out.reshape(len(out), -1)[0, 0] ^= 1
        return out


def test_the_audit_takes_a_board_that_answers_wrongly_out(golden_pkg, cloud, dev):
    m = load_manifest(golden_pkg)
    audit = AuditConfig(fraction=1.0, window_s=0.0, window_answers=0)
    with gateway(golden_pkg, cloud.url, audit=audit) as (gw, service, _):
        x = inputs(2, seed=4)
        assert infer(gw.url, m.model.name, x)[1]["parameters"]["served_by"] == "edge"
        assert service.auditor.wait_idle(20)
        assert (service.auditor.audited, service.auditor.mismatches) == (2, 0)
        dev.attach(WrongForBatchesOf(CsimEmulator(golden_pkg), 3), model_sha256=m.model.sha256)
        status, r = infer(gw.url, m.model.name, inputs(3, seed=5))
        assert status == 200 and r["parameters"]["served_by"] == "edge"  # the wrong answer went out once...
        assert service.auditor.wait_idle(20)
        on_loop(service, asyncio.sleep(0))  # the audit thread hands the verdict to the loop
        assert service.auditor.mismatches == 1 and not service.edge_healthy  # ...and the board is out
        assert "differ from the bit-exact emulator" in service.monitor.detail
        metrics = httpx.get(gw.url + "/metrics").text
        assert 'lepton_gateway_audit_total{outcome="audited"} 5.0' in metrics
        assert 'lepton_gateway_audit_total{outcome="mismatches"} 1.0' in metrics
        status, r = infer(gw.url, m.model.name, inputs(3, seed=5))
        assert r["parameters"]["served_by"] == "cloud"


def test_the_audit_drops_rather_than_waits_and_audits_everything_after_a_recovery(golden_pkg):
    m = load_manifest(golden_pkg)
    emu = CsimEmulator(golden_pkg)
    release = threading.Event()

    def held_reference(x):  # the audit thread is busy until released
        release.wait(30)
        y = emu.predict(m.preprocessing.apply(x))
        return (y,)

    auditor = Auditor(held_reference, AuditConfig(fraction=0.25, window_s=0.0, window_answers=3, queue_size=2))
    auditor.start()
    try:
        x = inputs(1, seed=2)
        y = emu.predict(m.preprocessing.apply(x))
        auditor.start_window()
        taken = [auditor.offer(x, y) for _ in range(3)]  # the window: every answer, until the queue is full
        assert sum(taken) + auditor.dropped == 3 and auditor.dropped >= 1
        assert not auditor.in_window
        for _ in range(8):  # outside it: every 4th answer
            auditor.offer(x, y)
        release.set()
        assert auditor.wait_idle(30)
        assert auditor.mismatches == 0 and auditor.audited + auditor.dropped == 3 + 2
    finally:
        release.set()
        auditor.stop()
