"""Triton's perf_analyzer, a load generator written against Triton itself, against the edge gateway and the cloud
server: it reads their metadata, model configuration and statistics, then measures a short time window of
binary-tensor inferences, over HTTP (and gRPC when the servers have a gRPC port), without an error.

Slow: perf_analyzer 2.51 comes from its own scratch environment (benchmarks/perf_analyzer.py builds it on first
use, from PyPI and Debian's libb64); the tests skip, saying why, where it cannot be built."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _load_benchmark(name: str):
    """benchmarks/<name>.py as a module, without putting benchmarks/ on sys.path: its coverage.py would shadow
    the coverage package that numba (through da4ml) looks for."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"lepton_benchmarks_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


pa = _load_benchmark("perf_analyzer")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tool():
    try:
        return pa.perf_tool(log=lambda *_: None)
    except pa.PerfToolUnavailable as e:
        pytest.skip(f"perf_analyzer cannot be set up on this machine: {e}")


@pytest.fixture(scope="module")
def servers(tool, jet_package, tmp_path_factory):
    from lepton_hls.serving_processes import stop_process

    logs = tmp_path_factory.mktemp("perf_logs")
    grpc = pa.has_grpc("serve") and pa.has_grpc("cloud")
    started = {}
    try:
        started["gateway"] = pa.start_lepton("gateway", ["serve", str(jet_package), "--target", "emulator"],
                                             logs / "gateway.log", grpc)
        started["cloud"] = pa.start_lepton("cloud", ["cloud", str(jet_package)], logs / "cloud.log", grpc)
        yield started
    finally:
        for s in started.values():
            stop_process(s.proc)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("name", ["gateway", "cloud"])
def test_perf_analyzer_measures_the_server_without_errors(tool, servers, jet_package, name, protocol):
    from lepton_host.manifest import load_manifest

    server = servers[name]
    target = server.http if protocol == "http" else server.grpc
    if target is None:
        pytest.skip("lepton-hls serve/cloud have no --grpc-port: gRPC not measured")
    model = load_manifest(jet_package).model.name
    for batch in (1, 4):
        m = pa.measure(tool, name, target, model, protocol, batch, concurrency=2, interval_ms=1000, max_trials=4,
                       stability=100)
        assert m.error == "", m.error
        assert m.infer_per_s is not None and m.infer_per_s > 0
