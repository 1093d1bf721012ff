"""Every layer kind builds with the default configuration, verifies, runs on the fast engine bit for bit, and goes
through the RTL tracer or is refused there by name (slow: one HLS compile per model; the same models feed
benchmarks/coverage.py)."""

from __future__ import annotations

import pytest

from lepton_host import opset
from lepton_hls.zoo.layer_models import MODELS

pytestmark = pytest.mark.slow


def test_every_kind_has_a_model():
    covered = {op for m in MODELS for op in m.ops}
    missing = [k.op for k in opset.KINDS if k.op not in covered and k.op not in ("input", "dot")]
    assert not missing, f"layer kinds without a tiny model: {missing}"


@pytest.mark.parametrize("lm", MODELS, ids=lambda m: m.name)
def test_builds_exact_with_defaults(lm, tmp_path):
    import json

    from lepton_hls.build import build_package
    from lepton_hls.build_config import load_config
    from lepton_hls.progress import Progress
    from lepton_hls.rtl.errors import RtlCoverageError
    from lepton_hls.rtl.graph import load_engine_ir
    from lepton_hls.rtl.tracer import trace

    path = tmp_path / f"{lm.name}.h5"
    lm.make().save(path)
    out = tmp_path / "pkg"
    _, report = build_package(str(path), out, load_config(None, **lm.config), verify_samples=1000,
                              progress=Progress(enabled=False))
    assert report["passed"], json.dumps(report.get("first_difference"))
    assert all(s["emulator_identical"] for s in report["sets"])
    ops = {layer["op"] for layer in json.loads((out / "engine" / "graph.json").read_text())["layers"]}
    assert set(lm.ops) <= ops, f"expected ops {lm.ops}, the package has {sorted(ops)}"
    if not lm.note:  # exact models: identical rows on the grid
        assert report["sets"][0]["identical_rows"] == 1.0
    refused = [opset.BY_OP[op] for op in ops if opset.BY_OP[op].rtl]
    if refused:
        with pytest.raises(RtlCoverageError):
            trace(load_engine_ir(out / "engine"))
    else:
        trace(load_engine_ir(out / "engine"))
