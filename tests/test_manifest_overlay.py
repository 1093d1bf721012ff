"""The manifest's overlay section: typed (`Manifest.overlay`), parsed and checked when the manifest loads,
written back under `reports.overlay` where `lepton-hls overlay` has always put it."""

from __future__ import annotations

import json

import pytest

from lepton_host.errors import ManifestError
from lepton_host.fixedpoint import FixedFormat
from lepton_host.manifest import (
    MANIFEST_NAME,
    HlsInfo,
    Manifest,
    ModelInfo,
    OverlaySection,
    TensorSpec,
    load_manifest,
)

FMT = FixedFormat.parse("ap_fixed<16,6>")

# reports.overlay as `lepton-hls overlay` wrote it before the section was typed: the board's fields beside the
# build side's own.
WRITTEN_BEFORE = {
    "board": "pynq-z2", "part": "xc7z020clg400-1", "clock_mhz": 100.0, "max_batch": 512, "dma": "axi_dma_0",
    "ip": "lepton_accel_0", "accel": "lepton_accel", "word_bits": 32, "in_lane_bits": 16, "out_lane_bits": 16,
    "in_words_max": 4096, "out_words_max": 1280, "dma_length_width": 15, "dma_offset": "0x40400000",
    "hls_script": "overlay/hls_ip.tcl", "vivado_script": "overlay/lepton_overlay.tcl",
    "bitstream": "overlay/lepton.bit", "hwh": "overlay/lepton.hwh", "bitstream_sha256": "ab" * 32, "built": True,
    "ip_csim": {"identical": True, "samples": 72, "summary": "wrapper == core"},
    "timing": {"wns_ns": 0.4, "met": True, "source": "overlay/timing_summary.rpt"},
    "utilization": {"used": {"LUT": 1526}, "source": "overlay/utilization.rpt"},
}  # fmt: skip


def _manifest(reports=None, overlay=None) -> Manifest:
    return Manifest(
        model=ModelInfo(name="m", source="test", sha256="0" * 64),
        inputs=[TensorSpec("x", (16,), FMT)],
        outputs=[TensorSpec("y", (5,), FMT)],
        hls=HlsInfo(backend="Vitis", board="pynq-z2", part="xc7z020clg400-1", clock_ns=10.0, io_type="io_parallel",
                    strategy="Latency", reuse_factor=1),
        reports=dict(reports or {}),
        overlay=overlay,
    )  # fmt: skip


def test_a_package_without_the_section_loads_with_none(tmp_path):
    _manifest(reports={"synth": {"tool": "vitis"}}).save(tmp_path)
    m = load_manifest(tmp_path)
    assert m.overlay is None and m.reports == {"synth": {"tool": "vitis"}}
    assert "overlay" not in json.loads((tmp_path / MANIFEST_NAME).read_text())["reports"]


def test_a_package_written_before_the_section_was_typed_loads_and_saves_unchanged(tmp_path):
    _manifest(reports={"overlay": WRITTEN_BEFORE}).save(tmp_path)  # as the old writer did: a plain report
    written = json.loads((tmp_path / MANIFEST_NAME).read_text())
    m = load_manifest(tmp_path)
    assert m.overlay == OverlaySection(
        board="pynq-z2", dma="axi_dma_0", ip="lepton_accel_0", max_batch=512, dma_length_width=15,
        bitstream="overlay/lepton.bit", hwh="overlay/lepton.hwh", bitstream_sha256="ab" * 32, built=True,
    )  # fmt: skip
    assert m.reports["overlay"] == WRITTEN_BEFORE  # the build side's fields are kept as they are
    assert m.to_dict() == written  # same JSON, same digest


def test_the_section_round_trips_in_its_json_place(tmp_path):
    section = OverlaySection(board="kv260", dma="axi_dma_0", ip="lepton_accel_0", max_batch=64, dma_length_width=14)
    _manifest(overlay=section).save(tmp_path)
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["reports"]["overlay"] == section.to_dict()
    m = load_manifest(tmp_path)
    assert m.overlay == section and (m.overlay.bitstream, m.overlay.built) == (None, False)
    # An edited section is written back over the old one; the build side's fields beside it stay.
    m.set_report("overlay", WRITTEN_BEFORE)
    m.overlay = OverlaySection(**{**m.overlay.to_dict(), "max_batch": 8})
    m.save(tmp_path)
    again = load_manifest(tmp_path)
    assert again.overlay.max_batch == 8 and again.overlay.board == "pynq-z2"
    assert again.reports["overlay"] == {**WRITTEN_BEFORE, "max_batch": 8}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"max_batch": "many"}, r"reports\.overlay\.max_batch must be an integer of at least 1, got 'many'"),
        ({"max_batch": 0}, r"reports\.overlay\.max_batch must be an integer"),
        ({"max_batch": True}, r"reports\.overlay\.max_batch must be an integer"),
        ({"dma_length_width": 40}, r"reports\.overlay\.dma_length_width must be an integer from 8 to 26, got 40"),
        ({"dma": 7}, r"reports\.overlay\.dma must be a non-empty string, got 7"),
        ({"board": ""}, r"reports\.overlay\.board must be a non-empty string"),
        ({"bitstream": "../elsewhere.bit"}, r"reports\.overlay\.bitstream must be a path inside the package"),
        ({"hwh": "/tmp/x.hwh"}, r"reports\.overlay\.hwh must be a path inside the package"),
        ({"bitstream_sha256": "abc"}, r"reports\.overlay\.bitstream_sha256 must be a sha256 hex digest"),
        ({"built": "yes"}, r"reports\.overlay\.built must be true or false, got 'yes'"),
        ({"ip": None}, r"reports\.overlay\.ip must be a non-empty string, got None"),
    ],
)
def test_a_malformed_section_is_refused_by_field(tmp_path, change, message):
    _manifest(reports={"overlay": {**WRITTEN_BEFORE, **change}}).save(tmp_path)
    with pytest.raises(ManifestError, match=message):
        load_manifest(tmp_path)


def test_a_section_missing_a_field_or_not_an_object_is_refused(tmp_path):
    _manifest(reports={"overlay": {k: v for k, v in WRITTEN_BEFORE.items() if k != "dma"}}).save(tmp_path)
    with pytest.raises(ManifestError, match=r"reports\.overlay is missing dma"):
        load_manifest(tmp_path)
    _manifest(reports={"overlay": ["pynq-z2"]}).save(tmp_path)
    with pytest.raises(ManifestError, match=r"reports\.overlay must be a JSON object"):
        load_manifest(tmp_path)


def test_recording_a_malformed_section_is_refused_before_anything_changes():
    m = _manifest(reports={"overlay": WRITTEN_BEFORE})
    m.set_report("overlay", WRITTEN_BEFORE)
    with pytest.raises(ManifestError, match=r"reports\.overlay\.max_batch"):
        m.set_report("overlay", {**WRITTEN_BEFORE, "max_batch": -1})
    assert m.reports["overlay"] == WRITTEN_BEFORE and m.overlay.max_batch == 512


def test_the_build_sides_plan_is_the_section_plus_its_own_fields():
    from lepton_hls.overlay import OverlayPlan

    assert issubclass(OverlayPlan, OverlaySection)
    plan = OverlayPlan(**WRITTEN_BEFORE)
    m = _manifest()
    m.set_report("overlay", plan.to_dict())
    assert m.overlay == OverlaySection.from_dict(plan.to_dict()) and m.reports["overlay"] == WRITTEN_BEFORE
