"""The engine continued from a layer whose output was computed elsewhere (`run_raw(..., after=layer)`): what the
RTL emulator runs after the Verilator core. It must give what the whole-network run gives, through the same
loop and chunking, and refuse a layer the rest of the network cannot continue from."""

from __future__ import annotations

import numpy as np
import pytest
from lepton_host.engine import Engine
from lepton_host.errors import EmulationError
from lepton_host.fixedpoint import FixedFormat

WIDE, NARROW = FixedFormat(16, 6), FixedFormat(8, 3, rounding="RND", saturation="SAT")


def _layer(name, op, inputs, fmt, params=None):
    return {"name": name, "op": op, "class_name": op, "inputs": inputs, "shape": [4], "format": fmt.to_dict(),
            "params": params or {}}


def _graph(layers):
    return {"schema": "lepton-hls/engine", "version": 1, "io_type": "io_parallel", "layers": layers,
            "inputs": ["x"], "outputs": [layers[-1]["name"]]}


CHAIN = _graph([
    _layer("x", "input", [], WIDE),
    _layer("a", "activation", ["x"], WIDE, {"function": "relu"}),
    _layer("b", "activation", ["a"], NARROW, {"function": "linear"}),
    _layer("c", "merge", ["b", "b"], WIDE, {"function": "add", "n_elem1": 4, "n_elem2": 4}),
])
# `s` adds the network's input to `a`: nothing after `a` can run on `a`'s output alone.
SKIP = _graph([
    _layer("x", "input", [], WIDE),
    _layer("a", "activation", ["x"], WIDE, {"function": "relu"}),
    _layer("s", "merge", ["a", "x"], WIDE, {"function": "add", "n_elem1": 4, "n_elem2": 4}),
])


def _raw(n=64):
    return np.random.default_rng(3).integers(WIDE.raw_min, WIDE.raw_max + 1, size=(n, 4))


@pytest.mark.parametrize("after", ["x", "a", "b", "c"])
def test_continuing_after_a_layer_matches_the_whole_run(after):
    engine = Engine(CHAIN, {})
    raw = _raw()
    full = engine.run_raw(raw, trace=True)
    out = engine.run_raw(full[after], after=after)
    np.testing.assert_array_equal(out, full["c"])
    names = [layer["name"] for layer in CHAIN["layers"]]
    tail = engine.run_raw(full[after], trace=True, after=after)
    assert list(tail) == names[names.index(after):]
    for name, v in tail.items():
        np.testing.assert_array_equal(v, full[name])


def test_a_continued_run_is_chunked_like_a_whole_one():
    engine = Engine(CHAIN, {})
    raw = _raw(50)
    expected = engine.run_raw(raw)
    mid = engine.run_raw(raw, trace=True)["a"]
    engine.chunk = 7  # 50 samples: 8 chunks, the last one short
    np.testing.assert_array_equal(engine.run_raw(raw), expected)
    np.testing.assert_array_equal(engine.run_raw(mid, after="a"), expected)
    traced = engine.run_raw(mid, trace=True, after="a")
    np.testing.assert_array_equal(traced["c"], expected)


def test_a_layer_the_rest_cannot_continue_from_is_refused_by_name():
    engine = Engine(SKIP, {})
    with pytest.raises(EmulationError, match=r"'s' after 'a' reads 'x'"):
        engine.run_raw(_raw(), after="a")
    engine.tail_start("s")  # the last layer: nothing after it reads anything


def test_an_unknown_layer_and_a_wrong_shape_are_refused():
    engine = Engine(CHAIN, {})
    with pytest.raises(EmulationError, match="no layer 'nope'"):
        engine.run_raw(_raw(), after="nope")
    with pytest.raises(EmulationError, match=r"after layer 'a'; expected \(N, \(4,\)\)"):
        engine.run_raw(np.zeros((3, 5), dtype=np.int64), after="a")
