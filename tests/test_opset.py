"""Every layer kind is declared once in lepton_host.opset; the exporter, the engine, the RTL tracer, the model
check and the docs all answer for exactly that set."""

from __future__ import annotations

import re

import pytest

from lepton_host import opset
from lepton_host.engine import _BUILDERS
from paths import ROOT


def test_engine_evaluates_every_declared_op_and_nothing_else():
    assert set(_BUILDERS) == set(opset.ops())


def test_exporter_has_a_handler_for_every_declared_op():
    from lepton_hls.engine_export import CLASS_OPS, _Exporter

    exporter = _Exporter.__new__(_Exporter)
    missing = [op for op in opset.ops() if exporter.handler(op) is None]
    assert not missing, f"ops without an export handler: {missing}"
    assert set(CLASS_OPS) == set(opset.hls4ml_classes())


def test_rtl_tracer_reads_or_refuses_every_declared_op():
    from lepton_hls.rtl.graph import _READERS
    from lepton_hls.rtl.tracer import _OPS

    for kind in opset.KINDS:
        if kind.rtl:
            assert kind.op not in _READERS, f"{kind.op} is refused ({kind.rtl}) yet has a reader"
        else:
            assert kind.op in _READERS, f"{kind.op} claims RTL coverage but the graph reader has none"
    # every op kind the readers produce has a tracer op
    assert {"dense", "conv", "relu", "linear", "batchnorm", "reshape", "maxpool", "zeropad", "softmax"} <= set(_OPS)


def test_docs_document_every_declared_op():
    text = (ROOT / "docs" / "engine-ir.md").read_text()
    documented = set(re.findall(r"^### (.+)$", text, re.M))
    names = {op for line in documented for op in re.findall(r"`(\w+)`", line)}
    missing = [op for op in opset.ops() if op not in names]
    assert not missing, f"docs/engine-ir.md lacks a section for {missing}"


def test_model_check_accepts_exactly_the_declared_keras_classes():
    from lepton_hls.model_check import _SPECIFIC, KERAS_RULES

    declared = set(opset.keras_classes()) | set(opset.DROPPED_KERAS_CLASSES)
    assert set(KERAS_RULES) == declared
    stale = set(_SPECIFIC) - declared
    assert not stale, f"option rules for classes no kind declares: {sorted(stale)}"


@pytest.mark.parametrize("kind", opset.KINDS, ids=lambda k: k.op)
def test_each_kind_names_its_classes(kind):
    # keras_classes may be empty for kinds hls4ml inserts itself (io_stream clones)
    assert kind.hls4ml_classes and kind.summary


def test_readme_support_table_is_the_generated_one():
    from lepton_hls.model_check import support_table_markdown

    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- support-table")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- /support-table -->")
    assert readme[start:end] == support_table_markdown(), "regenerate the README table from the opset"
