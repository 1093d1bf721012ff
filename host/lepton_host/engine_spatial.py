"""Engine builders for layers that move, repeat or reduce values over the spatial axes, and for depthwise
convolutions (docs/engine-ir.md: `crop`, `upsample`, `transpose`, `global_pool`, `depthwise1d`,
`depthwise2d`).

Each builder has engine.py's signature `(layer, params, inputs, result format, arrays) -> (fn, work, bounds)`
and is registered in `engine._BUILDERS`. Values are raw int64 integers; every assignment goes through
`_Convert`, so the bounds each node proves carry through.
"""

from __future__ import annotations

import numpy as np

from .errors import EmulationError


def _shape(layer) -> tuple[int, ...]:
    return tuple(int(s) for s in layer["shape"])


def _crop(layer, p, ins, fmt, arrays):
    """hls4ml cropping1d_cl / cropping2d_cl: the kept block, each value assigned to the result type."""
    x = ins[0]
    conv = _Convert(x.format.frac, fmt, x.lo, x.hi)
    ih, iw, ch = int(p["in_height"]), int(p["in_width"]), int(p["n_chan"])
    top, left = int(p["crop_top"]), int(p["crop_left"])
    bottom, right = ih - int(p["crop_bottom"]), iw - int(p["crop_right"])
    out_shape = _shape(layer)

    def fn(xs):
        v = xs[0].reshape(len(xs[0]), ih, iw, ch)[:, top:bottom, left:right]
        return conv(np.ascontiguousarray(v)).reshape((len(v),) + out_shape)

    return fn, 0, conv.bounds


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """The source index of each output position in hls4ml's resize_nearest: a 16-bit fixed-point ratio,
    `ratio = (n_in << 16) / n_out + 1`, `src = (i * ratio) >> 16` (not Keras' formula; equal for integer
    upsampling factors)."""
    ratio = (n_in << 16) // n_out + 1
    return (np.arange(n_out, dtype=np.int64) * ratio) >> 16


def _upsample(layer, p, ins, fmt, arrays):
    """hls4ml Resize with nearest interpolation: every output pixel copies one input pixel."""
    x = ins[0]
    conv = _Convert(x.format.frac, fmt, x.lo, x.hi)
    ih, iw, ch = int(p["in_height"]), int(p["in_width"]), int(p["n_chan"])
    rows = nearest_indices(ih, int(p["out_height"]))
    cols = nearest_indices(iw, int(p["out_width"]))
    out_shape = _shape(layer)

    def fn(xs):
        v = xs[0].reshape(len(xs[0]), ih, iw, ch)[:, rows][:, :, cols]
        return conv(v).reshape((len(v),) + out_shape)

    return fn, 0, conv.bounds


def _transpose(layer, p, ins, fmt, arrays):
    """hls4ml Transpose (Keras Permute): output axis k is input axis perm[k]."""
    x = ins[0]
    conv = _Convert(x.format.frac, fmt, x.lo, x.hi)
    in_shape = tuple(int(s) for s in p["in_shape"])
    axes = (0,) + tuple(int(a) + 1 for a in p["perm"])
    out_shape = _shape(layer)

    def fn(xs):
        v = xs[0].reshape((len(xs[0]),) + in_shape).transpose(axes)
        return conv(np.ascontiguousarray(v)).reshape((len(v),) + out_shape)

    return fn, 0, conv.bounds


def _global_pool(layer, p, ins, fmt, arrays):
    """hls4ml global_pooling1d_cl / global_pooling2d_cl over every spatial position of each channel."""
    x = ins[0]
    xf, accum = x.format, _fmt(p["accum"])
    count, nf = int(p["in_height"]) * int(p["in_width"]), int(p["n_filt"])
    stream = bool(p.get("stream", False))  # io_stream converts each value to accum first
    out_shape = _shape(layer)
    if p["mode"] == "max":
        to_accum = _Convert(xf.frac, accum, x.lo, x.hi)
        to_result = _Convert(accum.frac, fmt, *to_accum.bounds)

        def fn_max(xs):
            v = xs[0].reshape(len(xs[0]), count, nf)
            # io_parallel takes the max in the input type, io_stream of the converted values; they differ
            # only where the conversion wraps (it is monotonic otherwise).
            m = to_accum(v).max(axis=1) if stream else to_accum(v.max(axis=1))
            return to_result(m).reshape((len(v),) + out_shape)

        return fn_max, count * nf, to_result.bounds
    if p["mode"] != "average":
        raise EmulationError(f"engine layer {layer['name']!r}: global pooling mode {p['mode']!r} is not supported")
    # s = accum(s + x) per position in order; then s / count, truncated toward zero at accum's fraction bits
    # (ap_fixed's operator/ by an unsigned), assigned to the result type.
    shift = accum.frac - xf.frac
    frac = max(accum.frac, xf.frac)
    in_accum = _Convert(xf.frac, accum, x.lo, x.hi) if stream else None
    if stream:
        lo, hi = count * in_accum.lo, count * in_accum.hi
    elif shift >= 0:
        lo, hi = count * (x.lo << shift), count * (x.hi << shift)
    else:
        lo, hi = accum.raw_min, accum.raw_max
    exact_sum = (stream or shift >= 0) and lo >= accum.raw_min and hi <= accum.raw_max
    if not exact_sum:
        lo, hi = accum.raw_min, accum.raw_max
    # modular sums: the order and the intermediate wrap-arounds do not matter
    modular = accum.saturation == "WRAP" and (stream or shift >= 0)
    q_lo, q_hi = _trunc_div(lo, count), _trunc_div(hi, count)
    to_result = _Convert(accum.frac, fmt, q_lo, q_hi)

    def fn_avg(xs):
        v = xs[0].reshape(len(xs[0]), count, nf)
        if stream:
            v = in_accum(v)
        if modular:
            s = (v if stream else v << shift).sum(axis=1)
            if not exact_sum:
                s = accum.overflow(s)
        else:
            s = np.zeros((len(v), nf), dtype=np.int64)
            for i in range(count):
                if stream:
                    s = accum.overflow(s + v[:, i])
                else:
                    s = accum.requantize((s << (frac - accum.frac)) + (v[:, i] << (frac - xf.frac)), frac)
        q = np.where(s >= 0, s // count, -((-s) // count))
        return to_result(q).reshape((len(v),) + out_shape)

    return fn_avg, count * nf, to_result.bounds


def _trunc_div(a: int, b: int) -> int:
    return a // b if a >= 0 else -((-a) // b)


def _channel_arrays(name: str, arrays: dict, c: int) -> dict:
    """One channel's column of a depthwise layer's arrays, keyed as _Mac reads a one-output layer."""
    prefix = f"{name}/"
    return {k: v[..., c : c + 1] for k, v in arrays.items() if k.startswith(prefix)}


def _depthwise(layer, p, ins, fmt, arrays):
    """hls4ml depthwise_conv_{1,2}d: every channel convolved with its own kernel; per channel and output pixel
    the products, bias and accumulation of a one-output dense layer (kernel positions in (kh, kw) order)."""
    name = layer["name"]
    x = ins[0]
    padded = any(int(p[k]) for k in ("pad_top", "pad_bottom", "pad_left", "pad_right"))
    x_lo, x_hi = (min(x.lo, 0), max(x.hi, 0)) if padded else (x.lo, x.hi)
    ih, iw, ch = int(p["in_height"]), int(p["in_width"]), int(p["n_chan"])
    kh, kw = int(p["filt_height"]), int(p["filt_width"])
    oh, ow = int(p["out_height"]), int(p["out_width"])
    if int(p.get("depth_multiplier", 1)) != 1 or int(p["n_filt"]) != ch:
        raise EmulationError(f"engine layer {name!r}: depthwise convolution with a depth multiplier other than 1")
    macs = [_Mac(layer, p, x.format, _channel_arrays(name, arrays, c), x_lo, x_hi) for c in range(ch)]
    accum = macs[0].accum
    lo, hi = min(m.lo for m in macs), max(m.hi for m in macs)
    conv = _Convert(accum.frac, fmt, lo, hi)
    out_shape = _shape(layer)
    linear = all(m.linear for m in macs)
    if linear:
        # Exact products, modular accumulation: a multiply-add per kernel position in int64 (which wraps
        # modulo 2**64, exact modulo 2**width of the WRAP accumulator).
        w = np.concatenate([m.w for m in macs], axis=1).reshape(kh, kw, ch)
        bias = np.concatenate([m.bias for m in macs])
        shift, overflow = macs[0].shift, any(m.overflow for m in macs)

    def fn(xs):
        n = len(xs[0])
        win = _windows(xs[0].reshape(n, ih, iw, ch), p, kh, kw, 0)  # (n, oh, ow, kh, kw, ch)
        if linear:
            s = np.zeros((n, oh, ow, ch), dtype=np.int64)
            for a in range(kh):
                for b in range(kw):
                    s += win[:, :, :, a, b, :] * w[a, b]
            if shift:
                s <<= shift
            s += bias
            if overflow:
                s = accum.overflow(s)
        else:
            cols = win.reshape(n * oh * ow, kh * kw, ch)
            s = np.stack([m(np.ascontiguousarray(cols[:, :, c]))[:, 0] for c, m in enumerate(macs)], axis=-1)
        return conv(s).reshape((n,) + out_shape)

    return fn, oh * ow * ch * (kh * kw + 2), conv.bounds


BUILDERS = {
    "crop": _crop,
    "upsample": _upsample,
    "transpose": _transpose,
    "global_pool": _global_pool,
    "depthwise1d": _depthwise,
    "depthwise2d": _depthwise,
}

# Imported last: engine.py registers BUILDERS when it finishes loading, so either module may be imported first.
from .engine_ops import _Convert, _fmt, _Mac, _windows  # noqa: E402
