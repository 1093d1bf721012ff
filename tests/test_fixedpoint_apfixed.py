"""FixedFormat against the real ap_fixed library (the headers hls4ml ships): every rounding and overflow mode."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lepton_host.fixedpoint import ROUNDING_MODES, SATURATION_MODES, FixedFormat

FORMATS = [
    FixedFormat(8, 3, True), FixedFormat(6, 0, False), FixedFormat(12, 12, True), FixedFormat(5, -2, True),
    FixedFormat(10, 14, False),
]


def _ap_types_dir() -> Path:
    import hls4ml

    return Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"


@pytest.fixture(scope="module")
def ap_cast(tmp_path_factory):
    """A compiled program that reads doubles and prints the raw bits ap_fixed<...> assigns for each case."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    cases = [(f, r, s) for f in FORMATS for r in ROUNDING_MODES for s in SATURATION_MODES]
    lines = []
    for i, (f, r, s) in enumerate(cases):
        t = f"ap_{'' if f.signed else 'u'}fixed<{f.width},{f.integer},AP_{r},AP_{s}>"
        lines.append(f"    case {i}: {{ {t} v = x; std::cout << v.range().to_int64(); break; }}")
    src = """#include <iostream>
#include "ap_fixed.h"
int main() { int c; double x;
  while (std::cin >> c >> x) { switch (c) {
%s
  } std::cout << "\\n"; } }
""" % "\n".join(lines)
    d = tmp_path_factory.mktemp("apcast")
    (d / "cast.cpp").write_text(src)
    subprocess.run(["g++", "-O0", "-std=c++14", f"-I{_ap_types_dir()}", str(d / "cast.cpp"), "-o", str(d / "cast")],
                   check=True, capture_output=True)

    def run(case_index: int, xs: np.ndarray) -> np.ndarray:
        stdin = "".join(f"{case_index} {x!r}\n" for x in xs)
        out = subprocess.run([str(d / "cast")], input=stdin, capture_output=True, text=True, check=True).stdout
        return np.array([int(v) for v in out.split()], dtype=np.int64)

    return cases, run


def test_quantize_matches_ap_fixed_for_every_mode(ap_cast):
    cases, run = ap_cast
    rng = np.random.default_rng(7)
    for i, (f, r, s) in enumerate(cases):
        span = max(abs(f.min_value), f.max_value) * 1.6 + f.step
        # half-LSB ties and values just beyond the range are where the modes differ
        ties = (rng.integers(-(2 ** f.width), 2 ** f.width, 60) + 0.5) * f.step
        xs = np.concatenate([rng.uniform(-span, span, 200), ties, [0.0, f.max_value, f.min_value, -f.step / 2]])
        fmt = FixedFormat(f.width, f.integer, f.signed, r, s)
        raw = fmt.quantize(xs)
        # ap_fixed's range() is the bit pattern; sign-extend it like the raw value
        expect = run(i, xs)
        if f.signed:
            expect = np.where(expect >= 2 ** (f.width - 1), expect - 2 ** f.width, expect)
        bad = np.nonzero(raw != expect)[0]
        assert bad.size == 0, f"{fmt}: x={xs[bad[:3]]} ours={raw[bad[:3]]} ap_fixed={expect[bad[:3]]}"


def test_requantize_matches_quantize_of_the_exact_value():
    rng = np.random.default_rng(3)
    for r in ROUNDING_MODES:
        for s in SATURATION_MODES:
            fmt = FixedFormat(7, 2, True, r, s)
            raw = rng.integers(-(2**20), 2**20, 500)
            from_frac = 12
            exact = np.ldexp(raw.astype(np.float64), -from_frac)
            assert np.array_equal(fmt.requantize(raw, from_frac), fmt.quantize(exact)), f"{fmt}"


def test_parse_and_print_round_trip():
    for text in ("ap_fixed<16,6>", "ap_ufixed<8,0,AP_RND_CONV,AP_SAT>", "fixed<27,12,TRN,WRAP,0>", "ap_int<8>",
                 "uint<1>", "ufixed<6,0,RND_CONV,SAT,0>"):
        f = FixedFormat.parse(text)
        assert FixedFormat.parse(str(f)) == f


def test_bad_type_strings_are_named():
    from lepton_host.errors import FormatError

    for text in ("float", "ap_fixed<16>", "ap_fixed<a,b>", "ap_fixed<16,6,AP_BOGUS>"):
        with pytest.raises(FormatError, match="cannot read|unknown"):
            FixedFormat.parse(text)
