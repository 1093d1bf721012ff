"""Every file the emulators, the board and the gateway load from a package is listed with its sha256 in the
manifest and checked before it is loaded; a file in those places that the manifest does not list is refused by
name. Each tamper case runs on a copy of a package built once per session. Also: two builds run at once into
different folders without touching each other or the working directory."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cli_runner import CLI, run_cli
from lepton_host.emulator import load_emulator
from lepton_host.errors import ChecksumError
from lepton_host.manifest import load_manifest, unlisted_files


def cli(*args, cwd=None):
    return run_cli(*args, timeout=900, cwd=cwd)


def one_line_refusal(proc, *words):
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def built(build_pkg, tiny_model) -> Path:
    return build_pkg(str(tiny_model), samples=200)


@pytest.fixture
def pkg(built, tmp_path) -> Path:
    copy = tmp_path / "pkg"
    shutil.copytree(built, copy)
    return copy


def _remove_listing(pkg: Path, rel: str) -> None:
    m = load_manifest(pkg, verify=False)
    del m.artifacts[rel]
    m.save(pkg)  # a consistent manifest (its digest rewritten), only without the listing


def test_build_lists_every_file_the_emulators_load(built):
    m = load_manifest(built)
    assert unlisted_files(m, built) == []
    loaded = [p.relative_to(built).as_posix() for sub in ("emulation", "engine", "hls/firmware/weights")
              for p in (built / sub).rglob("*") if p.is_file()]
    assert {"emulation/csim.so", "engine/graph.json", "engine/weights.npz"} <= set(loaded)
    assert any(rel.endswith(".txt") for rel in loaded)  # the weights the C simulation reads at its first call
    assert set(loaded) <= set(m.artifacts)


def test_untouched_copy_loads_on_every_engine(pkg):
    x = np.random.default_rng(0).standard_normal((5, 16))
    assert np.array_equal(load_emulator(pkg, "csim").predict(x), load_emulator(pkg, "fast").predict(x))


def test_edited_weight_text_is_refused_by_the_c_simulation(pkg):
    weights = sorted((pkg / "hls/firmware/weights").glob("*.txt"))[0]
    text = weights.read_text()
    weights.write_text(text.replace("0", "1", 1) if "0" in text else text + " ")
    rel = weights.relative_to(pkg).as_posix()
    with pytest.raises(ChecksumError, match=f"sha256 mismatch for {rel}.*rebuild"):
        load_emulator(pkg, "csim")
    one_line_refusal(cli("predict", pkg, "--input", _batch(pkg), "--target", "emulator", "--engine", "csim"), rel)


@pytest.mark.parametrize("rel", ["emulation/evil.so", "emulation/weights/w2.txt", "hls/firmware/weights/w9.txt"])
def test_dropped_in_file_beside_the_c_simulation_is_refused(pkg, rel):
    (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pkg / "emulation/csim.so" if rel.endswith(".so") else sorted(
        (pkg / "hls/firmware/weights").glob("*.txt"))[0], pkg / rel)
    with pytest.raises(ChecksumError, match=f"{rel} is not listed in its manifest.*remove it, or rebuild"):
        load_emulator(pkg, "csim")
    line = one_line_refusal(cli("predict", pkg, "--input", _batch(pkg), "--target", "emulator"), rel)
    assert "lepton-hls build" in line


def test_c_simulation_dropped_from_the_listing_is_refused(pkg):
    _remove_listing(pkg, "emulation/csim.so")
    with pytest.raises(ChecksumError, match="emulation/csim.so is not listed"):
        load_emulator(pkg, "csim")


@pytest.mark.parametrize("rel", ["engine/graph.json", "engine/weights.npz"])
def test_engine_files_dropped_from_the_listing_or_edited_are_refused(pkg, rel):
    _remove_listing(pkg, rel)
    with pytest.raises(ChecksumError, match=f"{rel} is not listed"):
        load_emulator(pkg, "fast")


def test_edited_engine_weights_are_refused(pkg):
    path = pkg / "engine/weights.npz"
    data = dict(np.load(path))
    key = sorted(data)[0]
    data[key] = data[key] + 1
    np.savez(path, **data)
    with pytest.raises(ChecksumError, match="sha256 mismatch for engine/weights.npz"):
        load_emulator(pkg, "fast")


@pytest.mark.parametrize("rel", ["overlay/lepton.bit", "overlay/lepton.hwh", "selftest/extra.npz"])
def test_unlisted_bitstream_or_golden_vectors_are_refused(pkg, rel):
    (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
    (pkg / rel).write_bytes(b"\0" * 64)
    with pytest.raises(ChecksumError, match=f"{rel} is not listed"):
        load_manifest(pkg)


# ---- serving.json: the routing policy, which can switch the input range check off ------------------------------
def _policy(tmp_path: Path, **routing) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"routing": routing}))
    return path


def test_serving_policy_command_records_the_policy_in_the_manifest(pkg, tmp_path):
    from lepton_host.serving.routing import RoutingPolicy

    proc = cli("serving-policy", pkg, _policy(tmp_path, check_range=False, mode="edge"))
    assert proc.returncode == 0, proc.stderr
    m = load_manifest(pkg)  # every artifact checked, serving.json included
    assert "serving.json" in m.artifacts
    policy = RoutingPolicy.for_package(m, pkg)
    assert policy.check_range is False and policy.mode == "edge"


def test_edited_serving_json_is_refused_with_the_command_that_records_it(pkg, tmp_path):
    assert cli("serving-policy", pkg, _policy(tmp_path, check_range=True)).returncode == 0
    (pkg / "serving.json").write_text(json.dumps({"routing": {"check_range": False}}))
    with pytest.raises(ChecksumError, match="sha256 mismatch for serving.json.*lepton-hls serving-policy"):
        load_manifest(pkg)
    one_line_refusal(cli("predict", pkg, "--input", _batch(pkg), "--target", "emulator"), "serving.json",
                     "serving-policy")
    # Recording a new policy repairs it; nothing else is blessed along the way.
    assert cli("serving-policy", pkg, _policy(tmp_path, check_range=False)).returncode == 0
    assert _policy_of(pkg).check_range is False


def test_dropped_in_serving_json_is_refused(pkg):
    (pkg / "serving.json").write_text(json.dumps({"routing": {"check_range": False}}))
    with pytest.raises(ChecksumError, match="serving.json is not listed.*serving-policy"):
        load_manifest(pkg)


def test_serving_policy_command_does_not_re_sign_other_edits(pkg, tmp_path):
    weights = sorted((pkg / "hls/firmware/weights").glob("*.txt"))[0]
    weights.write_text(weights.read_text() + " ")
    one_line_refusal(cli("serving-policy", pkg, _policy(tmp_path, check_range=False)), "sha256 mismatch",
                     weights.name)
    assert not (pkg / "serving.json").exists()


def test_serving_policy_command_refuses_unknown_keys(pkg, tmp_path):
    one_line_refusal(cli("serving-policy", pkg, _policy(tmp_path, check_ranges=False)), "unknown routing keys")
    assert "serving.json" not in load_manifest(pkg).artifacts


def _policy_of(pkg):
    from lepton_host.serving.routing import RoutingPolicy

    return RoutingPolicy.for_package(load_manifest(pkg), pkg)


def _batch(pkg: Path) -> Path:
    path = pkg.parent / "x.npy"
    np.save(path, np.zeros((2, 16)))
    return path


# ---- two builds at once ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_builds_at_once_into_different_folders(tiny_model, tmp_path):
    """Two `lepton-hls build` processes of different packages at the same time, from the same working directory:
    both finish verified, and nothing is written outside their --out folders."""
    work = tmp_path / "cwd"
    work.mkdir()
    outs = [tmp_path / "a" / "pkg", tmp_path / "b" / "pkg"]
    configs = [[], ["--config", _config(tmp_path)]]
    procs = [subprocess.Popen([*CLI, "build", str(tiny_model), "--out", str(out), "--samples", "200", *cfg],
                              cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for out, cfg in zip(outs, configs)]
    results = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err
    assert list(work.iterdir()) == []
    a, b = (load_manifest(o) for o in outs)  # every artifact matches in both
    assert a.verification.passed and b.verification.passed
    assert a.hls.reuse_factor != b.hls.reuse_factor
    x = np.random.default_rng(0).standard_normal((20, 16))
    assert np.array_equal(load_emulator(outs[0], "csim").predict(x), load_emulator(outs[1], "csim").predict(x))


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "cfg.yml"
    path.write_text("reuse_factor: 2\n")
    return path
