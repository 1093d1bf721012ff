"""`record_report`, the one way a command records its result in a package, on a copy of a package built by
`lepton-hls build`: afterwards the package still verifies (every listed file's sha256, nothing unlisted where
the board loads files)."""

from __future__ import annotations

import json
import shutil

import pytest

from lepton_host.errors import ManifestError
from lepton_host.manifest import MANIFEST_NAME, load_manifest, unlisted_files
from lepton_hls.report_record import record_report


@pytest.fixture
def pkg(jet_package, tmp_path):
    own = tmp_path / "pkg"
    shutil.copytree(jet_package, own)
    return own


def test_a_report_file_files_and_summary_are_recorded_and_the_package_verifies(pkg):
    (pkg / "extra").mkdir()
    a, b = pkg / "extra" / "a.txt", pkg / "extra" / "b.txt"
    a.write_text("a")
    b.write_text("b")
    before = load_manifest(pkg)
    report = {"tool": "t", "details": [1, 2, 3], "ok": True}
    record_report(pkg, before, "extra", {"ok": True}, report_file="reports/extra.json", report=report,
                  files=[a, b], replace_prefix="extra/")  # fmt: skip
    m = load_manifest(pkg)  # every artifact hashed again and matching
    assert m.reports["extra"] == {"ok": True}
    assert json.loads((pkg / "reports" / "extra.json").read_text()) == report
    assert {"extra/a.txt", "extra/b.txt", "reports/extra.json"} <= set(m.artifacts)
    assert m.reports["verification"] == before.reports["verification"] and m.verification == before.verification
    assert set(before.artifacts) <= set(m.artifacts)

    # A rerun replaces the folder's entries: b.txt is no longer listed (nor loaded, so it may stay on disk).
    b.write_text("changed after the first run")
    record_report(pkg, m, "extra", {"ok": False}, files=[a], replace_prefix="extra")
    again = load_manifest(pkg)
    assert "extra/b.txt" not in again.artifacts and "extra/a.txt" in again.artifacts and b.is_file()
    assert again.reports["extra"] == {"ok": False}


def test_the_report_file_defaults_to_the_summary(pkg):
    record_report(pkg, load_manifest(pkg), "synth", {"latency": 3}, report_file="reports/synth.json")
    assert json.loads((pkg / "reports" / "synth.json").read_text()) == {"latency": 3}
    assert load_manifest(pkg).reports["synth"] == {"latency": 3}


def test_a_stale_file_the_board_loads_is_removed_with_its_entry(pkg):
    """Regenerated scripts for another board: the old bitstream's entries go, and so do its files, which
    unlisted would make the package refused; a stale file the board never loads only loses its entry."""
    out = pkg / "overlay"
    out.mkdir()
    files = {name: out / name for name in ("lepton.bit", "lepton.hwh", "timing_summary.rpt", "hls_ip.tcl")}
    for path in files.values():
        path.write_bytes(b"old " + path.name.encode())
    record_report(pkg, load_manifest(pkg, verify=False), None, None, files=files.values())
    assert {f"overlay/{n}" for n in files} <= set(load_manifest(pkg).artifacts)

    m = load_manifest(pkg)
    files["hls_ip.tcl"].write_text("regenerated")
    record_report(pkg, m, None, None, files=[files["hls_ip.tcl"]], replace_prefix="overlay/")
    m = load_manifest(pkg)  # would raise if the old bitstream were still there, unlisted
    assert not files["lepton.bit"].exists() and not files["lepton.hwh"].exists()
    assert files["timing_summary.rpt"].is_file() and "overlay/timing_summary.rpt" not in m.artifacts
    assert "overlay/hls_ip.tcl" in m.artifacts and unlisted_files(m, pkg) == []


def test_a_package_named_relative_to_the_working_directory(pkg, monkeypatch):
    monkeypatch.chdir(pkg.parent)
    root = pkg.relative_to(pkg.parent)
    (root / "notes.txt").write_text("n")
    record_report(root, load_manifest(root), None, None, files=[root / "notes.txt"], report_file="serving.json",
                  report={"routing": {"mode": "edge"}})  # fmt: skip
    m = load_manifest(pkg)
    assert {"notes.txt", "serving.json"} <= set(m.artifacts)


def test_a_refused_summary_or_a_file_outside_changes_nothing(pkg, tmp_path):
    manifest_bytes = (pkg / MANIFEST_NAME).read_bytes()
    with pytest.raises(ManifestError, match=r"reports\.overlay is missing"):
        record_report(pkg, load_manifest(pkg), "overlay", {"board": "pynq-z2"}, report_file="reports/overlay.json",
                      replace_prefix="engine/")  # fmt: skip
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("x")
    with pytest.raises(ValueError, match="not inside the package"):
        record_report(pkg, load_manifest(pkg), "x", {}, files=[outside], replace_prefix="engine/")
    assert (pkg / MANIFEST_NAME).read_bytes() == manifest_bytes
    assert not (pkg / "reports" / "overlay.json").exists()
    load_manifest(pkg)
