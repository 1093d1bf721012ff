"""The tracer's fixed-point semantics, checked exhaustively against `FixedFormat` (the ap_fixed reference the
C simulation agrees with), and its refusals. No Verilator: da4ml interprets the traced logic itself."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from lepton_host.fixedpoint import FixedFormat

from lepton_hls.rtl import fixed
from lepton_hls.rtl.errors import RtlCoverageError
from lepton_hls.rtl.graph import from_engine_ir

SRC = FixedFormat(10, 4)  # every raw value of it is tried


def _trace_cast(src: FixedFormat, dst: FixedFormat, relu: bool = False):
    from da4ml.trace import FixedVariableArrayInput, comb_trace

    x_in = FixedVariableArrayInput((1,))
    x = fixed.declare_input(x_in, src)
    y = fixed.cast(x.relu() if relu else x, dst)
    return comb_trace(x_in, y)


@pytest.mark.parametrize(
    "rounding,saturation,signed",
    list(itertools.product(("TRN", "RND", "RND_CONV", "RND_MIN_INF"), ("WRAP", "SAT", "SAT_SYM"), (True, False))),
)
def test_cast_matches_ap_fixed(rounding, saturation, signed):
    if saturation == "SAT_SYM" and not signed:
        pytest.skip("SAT_SYM is defined for signed formats")
    dst = FixedFormat(6, 2, signed, rounding, saturation)
    comb = _trace_cast(SRC, dst)
    raw = np.arange(SRC.raw_min, SRC.raw_max + 1)
    got = comb.predict(SRC.to_float(raw)[:, None]).ravel()
    expected = dst.to_float(dst.requantize(raw, SRC.frac))
    assert np.array_equal(got, expected), f"first difference at x={SRC.to_float(raw)[got != expected][:3]}"


def test_quantized_relu_cast_matches_ap_fixed():
    dst = FixedFormat(6, 0, False, "RND_CONV", "SAT")  # what hls4ml makes of quantized_relu(6)
    comb = _trace_cast(SRC, dst, relu=True)
    raw = np.arange(SRC.raw_min, SRC.raw_max + 1)
    got = comb.predict(SRC.to_float(raw)[:, None]).ravel()
    expected = dst.to_float(dst.requantize(np.maximum(raw, 0), SRC.frac))
    assert np.array_equal(got, expected)


def _graph(*layers):
    fmt = FixedFormat(16, 6).to_dict()
    base = [{"name": "x", "op": "input", "class_name": "InputLayer", "inputs": [], "shape": [4], "format": fmt,
             "params": {}}]
    prev = "x"
    for name, op, params in layers:
        base.append({"name": name, "op": op, "class_name": op, "inputs": [prev], "shape": [4], "format": fmt,
                     "params": params})
        prev = name
    return {"schema": "lepton-hls/engine", "version": 1, "io_type": "io_parallel", "layers": base,
            "inputs": ["x"], "outputs": [prev]}


@pytest.mark.parametrize(
    "layer,needle",
    [
        (("act7", "activation", {"function": "sigmoid"}), "act7"),
        (("pool3", "pool1d", {"mode": "average"}), "pool3"),
        (("dense9", "dense", {"product": "exponential"}), "power-of-two"),
        (("odd", "upsample", {}), "odd"),
    ],
)
def test_layers_outside_coverage_are_named(layer, needle):
    with pytest.raises(RtlCoverageError, match=needle):
        from_engine_ir(_graph(layer), {})


def test_softmax_tail_is_reported_not_traced():
    from lepton_hls.rtl.tracer import trace

    g = from_engine_ir(_graph(("a", "activation", {"function": "relu"}), ("sm", "softmax", {})), {})
    t = trace(g)
    assert t.output_layer == "a" and t.uncovered == ["sm (softmax)"]


def test_unsupported_rounding_mode_is_named():
    with pytest.raises(RtlCoverageError, match="AP_RND_ZERO"):
        _trace_cast(SRC, FixedFormat(6, 2, True, "RND_ZERO", "WRAP"))


def test_a_model_too_large_to_unroll_is_refused_by_name():
    from lepton_hls.rtl.tracer import trace

    big = _graph(("wide", "dense", {"product": "mult", "weight": FixedFormat(6, 1).to_dict(),
                                    "bias": FixedFormat(6, 1).to_dict(), "accum": FixedFormat(20, 8).to_dict()}))
    arrays = {"wide/kernel": np.ones((4, 4), dtype=np.int64), "wide/bias": np.zeros(4, dtype=np.int64)}
    with pytest.raises(RtlCoverageError, match="layer wide: .*16 multiplications"):
        trace(from_engine_ir(big, arrays), max_macs=10)


@pytest.mark.parametrize("impl", ["stable", "latency"])
def test_table_softmax_matches_the_engine(impl):
    """hls4ml's table softmax traced from synthetic tables, against the package engine's own softmax."""
    from lepton_host.engine import Engine

    from lepton_hls.rtl.tracer import trace

    x_fmt, out_fmt = FixedFormat(16, 6), FixedFormat(16, 6)
    accum, exp_t, inv_t = FixedFormat(18, 8), FixedFormat(18, 8, True, "RND", "SAT"), FixedFormat(18, 4, True, "RND", "SAT")
    inv_inp, norm = FixedFormat(18, 8), FixedFormat(16, 6)
    rng = np.random.default_rng(4)
    arrays = {
        "sm/exp_table": rng.integers(0, exp_t.raw_max // 64, size=256),
        "sm/inv_table": rng.integers(0, inv_t.raw_max, size=128),
    }
    params = {"implementation": impl, "n_slice": 5, "n_outer": 1, "exp_table_size": 256, "inv_table_size": 128,
              "accum": accum.to_dict(), "exp_table": exp_t.to_dict(), "inv_table": inv_t.to_dict(),
              "inv_inp": inv_inp.to_dict(), "inp_norm": norm.to_dict() if impl == "stable" else None}
    g = {"schema": "lepton-hls/engine", "version": 1, "io_type": "io_parallel", "inputs": ["x"], "outputs": ["sm"],
         "layers": [
             {"name": "x", "op": "input", "inputs": [], "shape": [5], "format": x_fmt.to_dict(), "params": {}},
             {"name": "sm", "op": "softmax", "inputs": ["x"], "shape": [5], "format": out_fmt.to_dict(), "params": params},
         ]}
    t = trace(from_engine_ir(g, arrays))
    assert t.uncovered == [] and t.output_layer == "sm"
    raw = np.concatenate([rng.integers(x_fmt.raw_min, x_fmt.raw_max + 1, size=(1500, 5)),
                          rng.integers(-2048, 2048, size=(1500, 5))])
    expected = Engine(g, arrays).run_raw(raw)
    got = out_fmt.quantize(t.comb.predict(x_fmt.to_float(raw)))
    assert np.ptp(expected) > 0
    assert np.array_equal(got, expected)
