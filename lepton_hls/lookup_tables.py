"""Element-wise layers as step functions read from the C simulation's own code.

Any element-wise hls4ml layer (sigmoid and tanh tables, elu, softplus, leaky relu, PReLU, QKeras hard
activations, binary and ternary quantizers) maps each input value to an output value, possibly per position. A
probe program calls the layer's own generated statement with every position set to one value and records the
outputs. Over a narrow input type it visits every value; over a wide one it finds where the output changes by
exponential and binary search, which is exact for the monotone functions hls4ml implements, and then checks
itself on random inputs, so a function that is not a step function of its input is refused, never emulated
wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lepton_host.errors import EmulationError
from lepton_host.fixedpoint import FixedFormat

from . import hls_probe

EXHAUSTIVE_BITS = 18  # input types up to this width are tabulated value by value
MAX_ENTRIES = 1 << 22  # segments x positions kept in a package
CHECK_SAMPLES = 20000


@dataclass
class StepTable:
    starts: np.ndarray  # (S,) raw input values where each segment starts, ascending; starts[0] = the type's minimum
    values: np.ndarray  # (S, P) raw outputs per segment and position (position = flat index mod P)


def tabulate(
    hls_model, layer, in_fmt: FixedFormat, out_fmt: FixedFormat, size: int, period: int, lo: int, hi: int
) -> StepTable:
    """The step function of an element-wise layer of `size` elements, over the raw inputs [lo, hi] it can
    receive; per-position behaviour repeats every `period` elements (the channel count) at most."""
    stream = str(hls_model.config.get_config_value("IOType")) == "io_stream"
    call, loads = hls_probe.layer_call(hls_model, layer.name)
    in_var, out_var = layer.get_input_variable(), layer.get_output_variable()
    call = _rename(call, in_var.name, "x")
    call = _rename(call, out_var.name, "y")
    body = _PROBE.format(
        in_t=in_var.type.name,
        out_t=out_var.type.name,
        n=size,
        loads="\n    ".join(loads),
        fill=_STREAM_FILL if stream else _ARRAY_FILL,
        call=call,
    )
    what = f"layer {layer.name!r}'s lookup table"
    lo, hi = max(int(lo), in_fmt.raw_min), min(int(hi), in_fmt.raw_max)
    mode = "all" if hi - lo < (1 << EXHAUSTIVE_BITS) else "search"
    max_segments = max(2, MAX_ENTRIES // max(1, period))
    with hls_probe.compiled(hls_model, body, what, optimize="-O1") as exe:
        args = [mode, str(lo), str(hi), str(in_fmt.frac), str(max_segments), str(CHECK_SAMPLES)]
        r = hls_probe.run(exe, args, what)
    if r.returncode == 3:
        raise EmulationError(
            f"layer {layer.name!r} ({layer.class_name}): its output changes at more than {max_segments:,} input "
            f"values of {in_fmt}; quantize its input to fewer bits (a QActivation before it) or give its result "
            "a narrower type"
        )
    if r.returncode == 4:
        raise EmulationError(
            f"layer {layer.name!r} ({layer.class_name}): its output is not a step function of its input "
            f"({r.stderr.strip()}); this layer cannot be emulated element by element"
        )
    if r.returncode != 0:
        raise EmulationError(f"{what}: the probe exited with {r.returncode}: {r.stderr.strip()[-400:]}")
    rows = [line.split() for line in r.stdout.splitlines() if line.strip()]
    starts = np.array([int(row[0]) for row in rows], dtype=np.int64)
    outs = np.array([[float(v) for v in row[1:]] for row in rows], dtype=np.float64).reshape(len(rows), size)
    values = out_fmt.quantize(outs)
    if not np.array_equal(out_fmt.to_float(values), outs):
        raise EmulationError(f"{what}: outputs are not values of the result type {out_fmt}")
    return StepTable(starts, _fold_positions(values, period))


def _fold_positions(values: np.ndarray, period: int) -> np.ndarray:
    """(S, size) -> (S, P): one column when every position behaves alike, else one per channel."""
    if np.all(values == values[:, :1]):
        return values[:, :1].copy()
    size = values.shape[1]
    if period and size % period == 0:
        per = values.reshape(len(values), size // period, period)
        if np.all(per == per[:, :1, :]):
            return per[:, 0, :].copy()
    return values


def _rename(call: str, old: str, new: str) -> str:
    import re

    out, n = re.subn(rf"\b{re.escape(old)}\b", new, call)
    if n != 1:
        raise EmulationError(f"cannot locate variable {old!r} exactly once in hls4ml's call `{call}`")
    return out


_ARRAY_FILL = """
static void eval(double v, double *out) {
    static lepton_in_t x[N];
    static lepton_out_t y[N];
    for (int i = 0; i < N; i++) x[i] = v;
    CALL_LAYER;
    for (int i = 0; i < N; i++) out[i] = y[i].to_double();
}
"""

_STREAM_FILL = """
static void eval(double v, double *out) {
    hls::stream<lepton_in_t> x("x");
    hls::stream<lepton_out_t> y("y");
    for (int i = 0; i < N / (int)lepton_in_t::size; i++) {
        lepton_in_t p;
        for (int j = 0; j < (int)lepton_in_t::size; j++) p[j] = v;
        x.write(p);
    }
    CALL_LAYER;
    for (int i = 0; i < N / (int)lepton_out_t::size; i++) {
        lepton_out_t p = y.read();
        for (int j = 0; j < (int)lepton_out_t::size; j++) out[i * lepton_out_t::size + j] = p[j].to_double();
    }
}
"""

# argv: mode (all|search) lo hi frac max_segments check_samples. Prints one line per segment:
# "start out_0 ... out_{N-1}". Exit 3: too many segments; 4: the search's result fails the random check.
_PROBE = r"""
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>
#include "defines.h"
#include "parameters.h"

typedef {in_t} lepton_in_t;
typedef {out_t} lepton_out_t;
static const int N = {n};
#define CALL_LAYER {call}
{fill}
typedef long long i64;
static int frac_bits;
static void at(i64 raw, std::vector<double> &out) {{ eval(std::ldexp((double)raw, -frac_bits), out.data()); }}

int main(int argc, char **argv) {{
    {loads}
    if (argc < 7) return 2;
    bool all = std::strcmp(argv[1], "all") == 0;
    i64 lo = std::atoll(argv[2]), hi = std::atoll(argv[3]);
    frac_bits = std::atoi(argv[4]);
    i64 max_segments = std::atoll(argv[5]);
    int checks = std::atoi(argv[6]);
    std::vector<i64> starts;
    std::vector<std::vector<double> > vals;
    std::vector<double> cur(N), probe(N);
    at(lo, cur);
    starts.push_back(lo);
    vals.push_back(cur);
    if (all) {{
        for (i64 r = lo + 1; r <= hi; r++) {{
            at(r, probe);
            if (probe != cur) {{
                cur = probe;
                starts.push_back(r);
                vals.push_back(cur);
                if ((i64)starts.size() > max_segments) return 3;
            }}
        }}
    }} else {{
        i64 x = lo;
        while (x < hi) {{
            i64 same = x, diff = x, step = 1;
            bool changed = false;
            while (true) {{
                i64 y = (hi - x < step) ? hi : x + step;
                at(y, probe);
                if (probe != cur) {{ diff = y; changed = true; break; }}
                same = y;
                if (y == hi) break;
                step *= 2;
            }}
            if (!changed) break;
            while (diff - same > 1) {{
                i64 mid = same + (diff - same) / 2;
                at(mid, probe);
                if (probe == cur) same = mid; else diff = mid;
            }}
            at(diff, cur);
            starts.push_back(diff);
            vals.push_back(cur);
            if ((i64)starts.size() > max_segments) return 3;
            x = diff;
        }}
        std::mt19937_64 rng(12345);
        for (int c = 0; c < checks; c++) {{
            i64 r = lo + (i64)(rng() % (unsigned long long)(hi - lo + 1));
            at(r, probe);
            size_t k = std::upper_bound(starts.begin(), starts.end(), r) - starts.begin() - 1;
            if (probe != vals[k]) {{ std::fprintf(stderr, "raw input %lld", r); return 4; }}
        }}
    }}
    for (size_t k = 0; k < starts.size(); k++) {{
        std::printf("%lld", starts[k]);
        for (int i = 0; i < N; i++) std::printf(" %.17g", vals[k][i]);
        std::printf("\n");
    }}
    return 0;
}}
"""
