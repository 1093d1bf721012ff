"""Golden-vector self-test: known inputs through a backend, compared bit for bit with known raw outputs.

`lepton-hls build` stores `selftest/golden.npz` in the package (raw inputs on the input grid and the raw
outputs the package's bit-exact C simulation gives for them), listed and hashed in the manifest. Every backend
offers `self_test() -> SelfTestResult`, which runs those inputs through its own path (for a board: packing,
DMA, fabric, check word, unpacking) and counts the samples whose raw outputs differ in any bit. A gateway calls
it before sending traffic to a board again after a fault.

Packages built before golden vectors existed get them computed from the package's fast engine when it has one;
otherwise the result is `passed=None` with the reason. numpy only: this runs on the board.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import LeptonError
from .manifest import Manifest, TensorSpec

GOLDEN = "selftest/golden.npz"
DEFAULT_SAMPLES = 32


@dataclass(frozen=True)
class SelfTestResult:
    """`passed` is None when there was nothing to compare with (no golden vectors, no fast engine)."""

    passed: bool | None
    samples: int
    mismatches: int
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GoldenVectors:
    inputs: np.ndarray  # raw int64, (N, *input_shape)
    outputs: np.ndarray  # raw int64, (N, *output_shape)
    source: str  # where the expected outputs come from, for messages


def golden_inputs(spec: TensorSpec, n: int = DEFAULT_SAMPLES, seed: int = 0) -> np.ndarray:
    """Raw inputs on the input grid: the first half over the whole range (both extremes included, to exercise
    saturation and sign extension), the rest over real values in [-4, 4] where networks do their work."""
    fmt = spec.format
    rng = np.random.default_rng(seed)
    half = n // 2
    wide = rng.integers(fmt.raw_min, fmt.raw_max + 1, size=(half, spec.size), dtype=np.int64)
    if half:
        wide[0, :] = fmt.raw_min
        wide[-1, :] = fmt.raw_max
    lo, hi = fmt.quantize(np.array([max(fmt.min_value, -4.0), min(fmt.max_value, 4.0)]))
    narrow = rng.integers(lo, hi + 1, size=(n - half, spec.size), dtype=np.int64)
    return np.concatenate([wide, narrow]).reshape((n, *spec.shape))


def write_golden(package_dir, compute, n: int = DEFAULT_SAMPLES, seed: int = 0) -> Path:
    """Write `selftest/golden.npz` from `compute` (an emulator: `.input`, `.output`, `predict_raw`); the
    caller lists it in the manifest's artifacts."""
    raw_in = golden_inputs(compute.input, n, seed)
    raw_out = np.asarray(compute.predict_raw(raw_in), dtype=np.int64).reshape((n, *compute.output.shape))
    path = Path(package_dir) / GOLDEN
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, inputs=raw_in, outputs=raw_out, input_format=np.array(str(compute.input.format)),
                 output_format=np.array(str(compute.output.format)))  # fmt: skip
    return path


def golden_vectors(package_dir, manifest: Manifest) -> GoldenVectors | str:
    """The package's golden vectors (checked against the manifest), else ones computed from its fast engine,
    else the reason there are none."""
    root = Path(package_dir)
    if GOLDEN in manifest.artifacts:
        try:
            manifest.verify_artifacts(root, only=[GOLDEN])
        except LeptonError as e:
            return str(e)
        with np.load(root / GOLDEN, allow_pickle=False) as z:
            raw_in, raw_out = z["inputs"], z["outputs"]
            formats = (str(z["input_format"]), str(z["output_format"]))
        want = (str(manifest.input.format), str(manifest.output.format))
        shapes = (raw_in.shape[1:], raw_out.shape[1:])
        if formats != want or shapes != (tuple(manifest.input.shape), tuple(manifest.output.shape)):
            return (
                f"{GOLDEN} describes {formats} {shapes}, the manifest {want}: the package is inconsistent, rebuild it"
            )
        return GoldenVectors(raw_in.astype(np.int64), raw_out.astype(np.int64), GOLDEN)
    if (root / "engine" / "graph.json").is_file():
        from .emulator import FastEmulator

        try:
            engine = FastEmulator(root)
            raw_in = golden_inputs(manifest.input)
            raw_out = np.asarray(engine.predict_raw(raw_in), dtype=np.int64)
        except LeptonError as e:
            return f"no {GOLDEN} and the fast engine cannot compute reference outputs: {e}"
        return GoldenVectors(raw_in, raw_out.reshape((len(raw_in), *manifest.output.shape)), "the fast engine")
    return (
        f"the package has no {GOLDEN} and no fast engine (engine/graph.json) to compute reference outputs; "
        "rebuild it with `lepton-hls build`"
    )


def run_self_test(predict_raw: Callable[[np.ndarray], np.ndarray], vectors: GoldenVectors | str,
                  where: str = "") -> SelfTestResult:  # fmt: skip
    """Run the golden inputs through `predict_raw` and compare bit for bit. A device error is a failed test
    (with the error as its detail), not an exception: the caller decides what to do with the board."""
    if isinstance(vectors, str):
        return SelfTestResult(passed=None, samples=0, mismatches=0, detail=vectors)
    n = len(vectors.inputs)
    try:
        got = np.asarray(predict_raw(vectors.inputs), dtype=np.int64).reshape(vectors.outputs.shape)
    except LeptonError as e:
        return SelfTestResult(passed=False, samples=n, mismatches=n, detail=f"{where}: {type(e).__name__}: {e}")
    bad = np.any((got != vectors.outputs).reshape(n, -1), axis=1)
    mismatches = int(bad.sum())
    if mismatches:
        i = int(np.argmax(bad))
        detail = (
            f"{where}: {mismatches} of {n} samples differ from {vectors.source}; first, sample {i}: got "
            f"{got[i].reshape(-1).tolist()} expected {vectors.outputs[i].reshape(-1).tolist()} (raw values)"
        )
    else:
        detail = f"{where}: {n} samples identical to {vectors.source}"
    return SelfTestResult(passed=not mismatches, samples=n, mismatches=mismatches, detail=detail)
