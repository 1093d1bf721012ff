"""Compile da4ml's matrix solver ahead of the first RTL build.

da4ml's solver is numba code cached beside its sources; a fresh environment compiles it on the first trace, which
takes about three minutes on two cores. `make env` runs this once, so that `lepton-hls rtl` (and the tests) start
from the cache.

    python -m lepton_hls.rtl.warmup
"""

from __future__ import annotations

import sys
import time

import numpy as np
from da4ml.trace import FixedVariableArrayInput, comb_trace
from lepton_host.fixedpoint import FixedFormat

from . import fixed


def warm_solver() -> float:
    """Trace a 4x3 product as the tracer traces a dense layer; returns the seconds it took."""
    start = time.perf_counter()
    x_in = FixedVariableArrayInput((4,))
    x = fixed.declare_input(x_in, FixedFormat(8, 3))
    w = np.array([[0.5, -1.25, 2.0], [0.75, 0.0, -0.5], [1.5, 0.25, -2.0], [-0.125, 1.0, 0.375]])
    comb_trace(x_in.ravel(), (x @ w).ravel())
    return time.perf_counter() - start


def main() -> int:
    print("compiling da4ml's matrix solver once (a few minutes in a fresh environment) ...", file=sys.stderr, flush=True)
    print(f"da4ml's solver is compiled and cached ({warm_solver():.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
