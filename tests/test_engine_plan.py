"""The engine's compiled plan (engine_plan.py) against the interpreter (`Engine.run_raw_reference`), bit for bit.

Graphs are written directly in the engine IR (numpy only, no hls4ml), so every specialised path and its fallbacks
run in the default suite: dense and convolution layers as float64 products with fused activations (TRN, RND,
RND_CONV rounding; relu; saturation on one or both sides; results with more fraction bits than the accumulator),
max pooling on float values, both softmax variants with and without saturating sums, the float input
quantization (WRAP, SAT, unsigned, RND), and nodes the plan leaves to the interpreter's own code (batchnorm,
average pooling, padded max pooling, accumulators wider than float64 keeps exact, a wrapping result). The tests'
tiny QKeras MLP, as `lepton-hls build` packages it, is compared too.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from lepton_host.engine import Engine
from lepton_host.errors import FormatError
from lepton_host.fixedpoint import FixedFormat

F = FixedFormat
BATCHES = (1, 3, 64)


def _fmt(text: str) -> dict:
    return F.parse(text).to_dict()


def _layer(name, op, inputs, shape, fmt, params=None):
    return {"name": name, "op": op, "class_name": op, "inputs": inputs, "shape": list(shape), "format": _fmt(fmt),
            "params": params or {}}


def _graph(layers):
    return {"schema": "lepton-hls/engine", "version": 1, "io_type": "io_parallel", "layers": layers,
            "inputs": [layers[0]["name"]], "outputs": [layers[-1]["name"]]}


def _raw(rng, fmt: str, shape) -> np.ndarray:
    f = F.parse(fmt)
    return rng.integers(f.raw_min, f.raw_max + 1, size=shape, dtype=np.int64)


def _accum(x_fmt: str, n_in: int, weight="fixed<6,0>") -> str:
    """hls4ml's derived accumulator: the exact product's fraction bits, integer bits for n_in of them."""
    x, w = F.parse(x_fmt), F.parse(weight)
    frac, integer = x.frac + w.frac, x.integer + w.integer + int(np.ceil(np.log2(n_in))) + 1
    return f"fixed<{frac + integer},{integer}>"


def _dense(name, src, n_in, n_out, result, accum, arrays, rng, weight="fixed<6,0>", bias="fixed<6,0>"):
    arrays[f"{name}/kernel"] = _raw(rng, weight, (n_in, n_out))
    arrays[f"{name}/bias"] = _raw(rng, bias, (n_out,))
    return _layer(name, "dense", [src], [n_out], result, {
        "n_in": n_in, "n_out": n_out, "product": "mult", "weight": _fmt(weight), "bias": _fmt(bias),
        "accum": _fmt(accum)})


def _conv2d(name, src, ih, iw, ch, nf, k, stride, pad, result, accum, arrays, rng):
    oh, ow = (ih + 2 * pad - k) // stride + 1, (iw + 2 * pad - k) // stride + 1
    arrays[f"{name}/kernel"] = _raw(rng, "fixed<6,0>", (k * k * ch, nf))
    arrays[f"{name}/bias"] = _raw(rng, "fixed<6,0>", (nf,))
    return _layer(name, "conv2d", [src], [oh, ow, nf], result, {
        "n_in": k * k * ch, "n_out": nf, "product": "mult", "weight": _fmt("fixed<6,0>"), "bias": _fmt("fixed<6,0>"),
        "accum": _fmt(accum), "in_height": ih, "in_width": iw, "n_chan": ch, "filt_height": k, "filt_width": k,
        "n_filt": nf, "stride_height": stride, "stride_width": stride, "pad_top": pad, "pad_bottom": pad,
        "pad_left": pad, "pad_right": pad, "out_height": oh, "out_width": ow})


def _pool2d(name, src, ih, iw, nf, size, stride, pad, fmt, mode="max"):
    oh, ow = (ih + 2 * pad - size) // stride + 1, (iw + 2 * pad - size) // stride + 1
    return _layer(name, "pool2d", [src], [oh, ow, nf], fmt, {
        "mode": mode, "accum": _fmt(fmt), "in_height": ih, "in_width": iw, "n_filt": nf, "pool_height": size,
        "pool_width": size, "stride_height": stride, "stride_width": stride, "pad_top": pad, "pad_bottom": pad,
        "pad_left": pad, "pad_right": pad, "out_height": oh, "out_width": ow, "count_pad": False})


def _softmax(name, src, n, arrays, implementation="stable", accum="ufixed<18,3,RND,SAT>", exp_scale=1.0):
    """hls4ml-shaped tables: exp(-d) (stable) or exp(x) (latency) over the index range, 1/s for the sums;
    `exp_scale` above 1 makes sums that saturate the accumulator."""
    exp_t, inv_t = F.parse("ufixed<18,8,RND,SAT>"), F.parse("ufixed<18,8,RND,SAT>")
    n_e, n_i = 1024, 1024
    if implementation == "stable":
        xs = np.arange(n_e) * (16.0 / n_e)
        exp_vals = np.exp(-xs) * exp_scale
    else:
        xs = (np.arange(n_e) - n_e // 2) * (16.0 / n_e)
        exp_vals = np.exp(np.clip(xs, -8, 2)) * exp_scale / 8
    arrays[f"{name}/exp_table"] = exp_t.quantize(np.minimum(exp_vals, exp_t.max_value))
    arrays[f"{name}/inv_table"] = inv_t.quantize(1.0 / np.maximum(np.arange(n_i) * (8.0 / n_i), 0.02))
    params = {"implementation": implementation, "n_slice": n, "exp_table_size": n_e, "inv_table_size": n_i,
              "accum": _fmt(accum), "exp_table": exp_t.to_dict(), "inv_table": inv_t.to_dict(),
              "inv_inp": _fmt("ufixed<18,3,RND,SAT>")}
    if implementation == "stable":
        params["inp_norm"] = _fmt("ufixed<16,4,RND,SAT>")
    return _layer(name, "softmax", [src], [n], "ufixed<16,0,RND,SAT>", params)


def mlp(input_fmt="fixed<16,6>", hidden="ufixed<6,0,RND_CONV,SAT>", second="fixed<10,3,RND,SAT>",
        accum1=None, softmax="stable", exp_scale=1.0):
    """dense -> relu -> dense -> quantizing linear activation -> dense (a narrower TRN result) -> softmax."""
    rng = np.random.default_rng(5)
    arrays: dict = {}
    a1, a2, a3 = accum1 or _accum(input_fmt, 16), _accum(hidden, 12), _accum(second, 8)
    a3_fmt = F.parse(a3)
    out = f"fixed<{a3_fmt.width - 2},{a3_fmt.integer}>"  # two fraction bits fewer: rounds (TRN)
    layers = [
        _layer("x", "input", [], [16], input_fmt),
        _dense("fc1", "x", 16, 12, a1, a1, arrays, rng),
        _layer("r1", "activation", ["fc1"], [12], hidden, {"function": "relu"}),
        _dense("fc2", "r1", 12, 8, a2, a2, arrays, rng),
        _layer("q2", "activation", ["fc2"], [8], second, {"function": "linear"}),
        _dense("fc3", "q2", 8, 5, out, a3, arrays, rng),
        _softmax("sm", "fc3", 5, arrays, softmax, exp_scale=exp_scale),
    ]
    return Engine(_graph(layers), arrays)


def cnn(stride=1, pad=1, pool_pad=0, ch=2, softmax="stable"):
    """conv2d -> relu -> max pooling -> flatten -> dense -> softmax (8x8 input)."""
    rng = np.random.default_rng(6)
    arrays: dict = {}
    a = _accum("fixed<16,6>", 9 * ch)
    conv = _conv2d("conv", "x", 8, 8, ch, 4, 3, stride, pad, a, a, arrays, rng)
    oh, ow, nf = conv["shape"]
    relu = "ufixed<6,0,RND_CONV,SAT>"
    pool = _pool2d("pool", "relu", oh, ow, nf, 2, 2, pool_pad, relu)
    ph, pw, _ = pool["shape"]
    layers = [
        _layer("x", "input", [], [8, 8, ch], "fixed<16,6>"),
        conv,
        _layer("relu", "activation", ["conv"], conv["shape"], relu, {"function": "relu"}),
        pool,
        _layer("flat", "reshape", ["pool"], [ph * pw * nf], relu),
        _dense("fc", "flat", ph * pw * nf, 6, _accum(relu, ph * pw * nf), _accum(relu, ph * pw * nf), arrays, rng),
        _softmax("sm", "fc", 6, arrays, softmax),
    ]
    return Engine(_graph(layers), arrays)


def mixed():
    """Nodes the plan leaves to the interpreter, between and after float stages: batchnorm, average pooling, a
    dense whose accumulator is too wide for float64, a dense whose result wraps, a dense whose accumulator rounds
    each product; and a conv output (saturated, rounded) read by a dense directly."""
    rng = np.random.default_rng(7)
    arrays: dict = {"bn/scale": _raw(rng, "fixed<8,2>", (3,)), "bn/bias": _raw(rng, "fixed<8,2>", (3,))}
    a = _accum("fixed<14,5,RND,SAT>", 27)
    conv = _conv2d("conv", "bn", 6, 6, 3, 2, 3, 1, 0, "fixed<20,8,RND,SAT>", a, arrays, rng)
    layers = [
        _layer("x", "input", [], [6, 6, 3], "fixed<12,4,RND,SAT>"),
        _layer("bn", "batchnorm", ["x"], [6, 6, 3], "fixed<14,5,RND,SAT>",
               {"n_filt": 3, "scale": _fmt("fixed<8,2>"), "bias": _fmt("fixed<8,2>")}),
        conv,
        _layer("cflat", "reshape", ["conv"], [32], "fixed<20,8,RND,SAT>"),
        _dense("d1", "cflat", 32, 6, "fixed<16,6,RND,SAT>", _accum("fixed<20,8>", 32), arrays, rng),
        _layer("d1r", "reshape", ["d1"], [2, 3, 1], "fixed<16,6,RND,SAT>"),
        _pool2d("avg", "d1r", 2, 3, 1, 2, 1, 0, "fixed<16,6>", mode="average"),
        _layer("flat", "reshape", ["avg"], [2], "fixed<16,6>"),
        _dense("wide", "flat", 2, 6, "fixed<60,30>", "fixed<60,30>", arrays, rng, weight="fixed<40,10>",
               bias="fixed<40,10>"),
        _dense("wrap", "wide", 6, 4, "fixed<9,3>", "fixed<60,30>", arrays, rng),
        _dense("perprod", "wrap", 4, 3, "fixed<12,6>", "fixed<12,6>", arrays, rng),
        _layer("relu", "activation", ["perprod"], [3], "ufixed<8,2,RND,SAT>", {"function": "relu"}),
    ]
    return Engine(_graph(layers), arrays)


MODELS = {
    "mlp": mlp,
    "mlp-sat-input": lambda: mlp(input_fmt="fixed<12,5,RND,SAT>", hidden="ufixed<8,2,TRN,SAT>"),
    "mlp-unsigned-input": lambda: mlp(input_fmt="ufixed<10,4>", second="fixed<40,20>"),
    "mlp-wide-input": lambda: mlp(input_fmt="fixed<56,20>", accum1="fixed<62,20>"),
    "mlp-latency-softmax": lambda: mlp(softmax="latency"),
    "mlp-saturating-softmax": lambda: mlp(exp_scale=60.0),
    "cnn": cnn,
    "cnn-strided": lambda: cnn(stride=2, pad=0, ch=1, softmax="latency"),
    "cnn-padded-pool": lambda: cnn(pool_pad=1),
    "cnn-many-channels": lambda: cnn(ch=9),
    "mixed": mixed,
}


def _inputs(engine: Engine, n: int, seed: int) -> np.ndarray:
    """Real inputs on and off the grid, some far outside the input format (its overflow wraps or saturates)."""
    rng = np.random.default_rng(seed)
    shape = (n,) + engine.input_shape
    x = rng.normal(0, 1.5, shape) * rng.choice([1.0, 1.0, 1.0, 40.0, 3000.0], size=shape)
    x[rng.random(shape) < 0.05] = -0.0
    return x


def _check(engine: Engine, x: np.ndarray) -> None:
    fin, fout = engine.input_node.format, engine.output_node.format
    raw = fin.quantize(x)
    expected = engine.run_raw_reference(raw)
    np.testing.assert_array_equal(engine.run_raw(raw), expected)
    got = engine.predict(x)
    np.testing.assert_array_equal(got, fout.to_float(expected))
    assert not np.signbit(got[got == 0]).any(), "a zero came out as -0.0"


@pytest.mark.parametrize("name", MODELS)
def test_plan_matches_the_interpreter(name):
    engine = MODELS[name]()
    for n in BATCHES:
        _check(engine, _inputs(engine, n, seed=n))
        # raw words straight off a stream: every bit pattern of a wider integer, overflowed by the input format
        wide = np.random.default_rng(n).integers(-(1 << 40), 1 << 40, size=(n,) + engine.input_shape)
        np.testing.assert_array_equal(engine.run_raw(wide), engine.run_raw_reference(wide))


def test_specialised_paths_are_taken():
    """The fast paths the graphs above are meant to cover are the ones compiled (and the fallbacks stay so)."""

    def stages(engine, mode="float"):
        engine.run_raw(np.zeros((1,) + engine.input_shape, dtype=np.int64))
        engine.predict(np.zeros((1,) + engine.input_shape))
        return [type(s).__name__ for s in engine.plan._compiled[mode].stages]

    assert stages(mlp()) == ["_InputFloat", "_Linear", "_Linear", "_Linear", "_Softmax"]
    assert stages(mlp(), "raw") == ["_InputInt", "_Cast", "_Linear", "_Linear", "_Linear", "_Softmax"]
    assert stages(cnn()) == ["_InputFloat", "_Linear", "_MaxPoolFloat", "_Alias", "_Linear", "_Softmax"]
    assert "_Generic" in stages(cnn(pool_pad=1)) and "_Generic" in stages(cnn(ch=9))
    assert stages(mlp(exp_scale=60.0))[-1] == "_Generic"
    assert stages(mlp(input_fmt="fixed<56,20>", accum1="fixed<62,20>"))[:2] == ["_InputInt", "_Generic"]
    # batchnorm, average pooling, the wide, wrapping and per-product-rounding denses, and the relu after them
    assert stages(mixed()) == ["_InputFloat", "_Cast", "_Generic", "_Cast", "_Linear", "_Alias", "_Linear", "_Alias",
                               "_Cast", "_Generic", "_Alias", "_Generic", "_Generic", "_Generic", "_Generic"]


@pytest.mark.parametrize("name", ["mlp", "mlp-sat-input", "mlp-unsigned-input"])
def test_inputs_just_outside_the_input_format(name):
    """One value a little beyond each end of the input's range, the rest small: the batch's norm alone must not
    let the plan skip the overflow step."""
    engine = MODELS[name]()
    f = engine.input_node.format
    x = np.full((3,) + engine.input_shape, 0.25)
    x[0, 0], x[1, 5], x[2, 2] = f.max_value + 3 * f.step, f.min_value - 0.5, -f.step / 2
    _check(engine, x)
    for row in x:  # the check covers the whole batch: one sample at a time too
        _check(engine, row[None])
    for n in BATCHES:
        _check(engine, np.clip(_inputs(engine, n, seed=n), 1.2 * f.min_value - 1, 1.2 * f.max_value))


def test_extreme_inputs_take_the_quantizers_own_path():
    engine = mlp()
    x = _inputs(engine, 4, seed=1)
    x[1, 3] = 1e300  # quantize clips to +-2**62 before wrapping
    x[2, :] = 3e38
    _check(engine, x)
    x[1, 3] = -1e30
    _check(engine, x.astype(np.float32))  # float32 squares overflow: the quantizer's own path again
    _check(engine, np.float32(1e-45) * np.ones((2, 16), dtype=np.float32))  # float32's smallest subnormal
    for bad in (np.nan, np.inf, -np.inf):
        x[0, 0] = bad
        with pytest.raises(FormatError, match="NaN or Inf"):
            engine.predict(x)


def test_a_returned_answer_is_never_overwritten():
    for engine in (mlp(), cnn()):
        for n in BATCHES:
            x1, x2 = _inputs(engine, n, seed=1), _inputs(engine, n, seed=2)
            raw1 = engine.input_node.format.quantize(x1)
            first, first_raw = engine.predict(x1), engine.run_raw(raw1)
            keep, keep_raw = first.copy(), first_raw.copy()
            second, second_raw = engine.predict(x2), engine.run_raw(engine.input_node.format.quantize(x2))
            np.testing.assert_array_equal(first, keep)
            np.testing.assert_array_equal(first_raw, keep_raw)
            assert not np.shares_memory(first, second) and not np.shares_memory(first_raw, second_raw)


def test_chunked_batches_and_many_batch_sizes():
    engine = cnn()
    engine.chunk = 7  # 50 samples: 8 chunks, the last one short
    x = _inputs(engine, 50, seed=3)
    _check(engine, x)
    for n in (1, 2, 5, 6, 7, 1, 3, 0):  # more sizes than a thread keeps buffers for, and back; none at all
        _check(engine, x[:n])
    assert engine.predict(x[:0]).shape == (0,) + engine.output_shape


def test_threads_get_their_own_buffers():
    engine = mlp()
    xs = [_inputs(engine, 3, seed=s) for s in range(4)]
    expected = [engine.predict(x) for x in xs]
    errors = []

    def work(k):
        for _ in range(300):
            if not np.array_equal(engine.predict(xs[k]), expected[k]):
                errors.append(k)
                return

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_the_tiny_mlp_package(build_pkg, tiny_model):
    """The tests' QKeras MLP as the build packages it (hls4ml's own formats and a quantized_relu)."""
    engine = Engine.load(build_pkg(str(tiny_model), samples=200) / "engine")
    for n in BATCHES:
        _check(engine, _inputs(engine, n, seed=n))
    assert [type(s).__name__ for s in engine.plan._compiled["float"].stages][1:] == ["_Linear", "_Linear"]
