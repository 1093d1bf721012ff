"""`lepton-hls verify`: does the package's C simulation compute what the model computes?

The reference is the model itself run in float64 (float32 cannot hold a quantized layer's accumulation exactly).
Three input sets: on the input grid (where bit-exactness is promised), off it (input quantization shows), and
the model's real-domain data where the zoo ships some. Before the final softmax, rows must be identical; after it
the lookup-table softmax may differ slightly, so argmax agreement is what counts. When anything differs, the
C simulation is traced layer by layer and the first layer that differs is named with its likely cause.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lepton_host.errors import LeptonError
from lepton_host.fixedpoint import FixedFormat
from lepton_host.manifest import Verification, load_manifest

from .build_config import BuildConfig
from .keras_io import ModelFiles, architecture_layers, layer_outputs, load_keras
from .progress import Progress
from .report_record import record_report

REPORT_PATH = "reports/verify.json"


class VerifyArgumentError(LeptonError):
    """A verification was asked for with an unusable setting (no samples)."""


def check_samples(samples) -> int:
    """At least one sample per input set: with none, no agreement can be measured."""
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise VerifyArgumentError(f"samples per input set must be a whole number of at least 1, got {samples!r}")
    return int(samples)


@dataclass
class LayerComparison:
    name: str
    layer_class: str
    format: str
    identical_rows: float
    max_abs_diff: float
    cause: str = ""
    values_need: str = ""  # the narrowest type holding every value the model computed here (differing layers)


@dataclass
class SetResult:
    name: str
    samples: int
    identical_rows: float  # before the final softmax
    max_abs_diff: float  # before the final softmax
    argmax_agreement: float | None  # after it (classifiers)
    max_abs_diff_output: float  # the package's final output
    emulator_identical: bool | None = None  # fast engine == C simulation, bit for bit


@dataclass
class VerifyReport:
    package: str
    samples: int
    identical_rows: float
    argmax_agreement: float | None
    max_abs_diff: float
    passed: bool
    fidelity: dict
    sets: list = field(default_factory=list)
    layers: list = field(default_factory=list)
    first_difference: dict | None = None
    notes: list = field(default_factory=list)
    # labelled per input set: only on-grid rows are promised identical; off-grid inputs are first rounded to the
    # input type, which the model does not do
    identical_rows_on_grid: float | None = None
    identical_rows_off_grid: float | None = None
    off_grid_explanation: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def verify_package(package_dir, samples: int = 2000, seed: int = 0, progress: Progress | None = None,
                   data: np.ndarray | None = None) -> dict:
    """`data`: the user's own model inputs (as the model sees them), compared as one more input set that must
    keep the declared agreement; values outside the input type's range are counted and named."""
    samples = check_samples(samples)
    progress = progress or Progress(enabled=False)
    root = Path(package_dir)
    with progress.step("load the package, its model and the input sets"):
        manifest = load_manifest(root)
        record = json.loads((root / "hls" / "lepton_conversion.json").read_text())
        files = ModelFiles(
            name=manifest.model.name,
            source=manifest.model.source,
            architecture_json=(root / "model" / "model.json").read_text(),
            weights_path=root / "model" / "weights.h5",
        )
        model32 = load_keras(files)
        model64 = load_keras(files, "float64")
        logits64 = _logits_twin(files)
        in_fmt = manifest.input.format
        shape = manifest.input.shape

        rng = np.random.default_rng(seed)
        normal = rng.standard_normal((samples, *shape))
        sets = {"on_grid": in_fmt.cast(np.clip(normal, in_fmt.min_value, in_fmt.max_value)), "off_grid": normal}
        real = _real_data(manifest, samples)
        if real is not None:
            sets["real"] = real
        data_note = None
        if data is not None:
            data = _user_data(data, shape)
            sets["data"] = data
            outside = (data < in_fmt.min_value) | (data > in_fmt.max_value)
            if outside.any():
                data_note = (
                    f"{outside.mean():.1%} of the values in the given data lie outside the input type {in_fmt} "
                    f"[{in_fmt.min_value:g}, {in_fmt.max_value:g}] and saturate there: standardize the features, or "
                    f"set input_precision wide enough (e.g. ap_fixed<{in_fmt.width + 8},{in_fmt.integer + 8}>)"
                )

    with progress.step("rebuild the C simulation with per-layer tracing", heartbeat_s=30):
        traced = _traced_model(model32, record, root, progress)
    final_layer = list(traced.get_layers())[-1]
    softmax_final = final_layer is not None and final_layer.class_name == "Softmax"
    from lepton_host.emulator import CsimEmulator, FastEmulator

    csim, fast = CsimEmulator(root), FastEmulator(root)
    results, layers, first = [], [], None
    compare = f"compare C simulation and model on {len(sets)} input sets of {samples} samples"
    with progress.step(compare), progress.bar(len(sets), "input sets") as bar:
        for name, x in sets.items():
            y_csim, trace = traced.trace(np.ascontiguousarray(x, dtype=np.float32))
            y_lib = csim.predict(x)
            y_ref = np.asarray(model64.predict(x, verbose=0), dtype=np.float64).reshape(len(x), -1)
            pre_ref = np.asarray(logits64.predict(x, verbose=0), dtype=np.float64).reshape(len(x), -1)
            pre = trace[final_layer.inputs[0]].reshape(len(x), -1) if softmax_final else y_lib.reshape(len(x), -1)
            out = y_lib.reshape(len(x), -1)
            argmax = _agreement(out, y_ref, final_layer) if manifest.model.task == "classifier" else None
            res = SetResult(
                name=name,
                samples=len(x),
                identical_rows=float(np.mean(np.all(pre == pre_ref, axis=1))),
                max_abs_diff=float(np.max(np.abs(pre - pre_ref))),
                argmax_agreement=argmax,
                max_abs_diff_output=float(np.max(np.abs(out - y_ref))),
                emulator_identical=bool(np.array_equal(fast.predict(x), csim.predict(x))),
            )
            results.append(res)
            if name == "on_grid" or (first is None and res.identical_rows < 1.0 and name != "off_grid"):
                layer_rows = _compare_layers(traced, trace, layer_outputs(model64, x), pre_ref, softmax_final, name)
                if name == "on_grid":
                    layers = layer_rows
                diff = _first_real_difference(layer_rows)
                if diff is not None and first is None:
                    first = {"set": name, **asdict(diff), **_suggestion(traced, diff)}
            progress.note(
                f"{name}: identical rows {res.identical_rows:.4f}, argmax {res.argmax_agreement}, "
                f"max|diff| {res.max_abs_diff:.3g}, fast engine == csim: {res.emulator_identical}"
            )
            bar.advance(detail=name)

    grid = results[0]
    fid = manifest.fidelity
    passed = grid.identical_rows >= fid.identical_rows_min and all(r.emulator_identical for r in results)
    if grid.argmax_agreement is not None:
        passed = passed and grid.argmax_agreement >= fid.argmax_agreement_min
    user = next((r for r in results if r.name == "data"), None)
    if user is not None and user.argmax_agreement is not None:
        passed = passed and user.argmax_agreement >= fid.argmax_agreement_min
    notes = [data_note] if data_note else []
    if record.get("firmware_patches"):
        po2 = '"exponential"' in (root / "engine" / "graph.json").read_text()
        notes += [f"firmware patched: {p}" for p in record["firmware_patches"] if po2 or "quantized_po2" not in p]
    if fid.note:
        notes.append(fid.note)
    report = VerifyReport(
        package=str(root),
        samples=samples,
        identical_rows=grid.identical_rows,
        argmax_agreement=grid.argmax_agreement,
        max_abs_diff=grid.max_abs_diff,
        passed=bool(passed),
        fidelity=asdict(fid),
        sets=[asdict(r) for r in results],
        layers=[asdict(l) for l in layers],
        first_difference=first,
        notes=notes,
        identical_rows_on_grid=grid.identical_rows,
        identical_rows_off_grid=next((r.identical_rows for r in results if r.name == "off_grid"), None),
        off_grid_explanation=(
            f"off-grid inputs are rounded to the input type {in_fmt} before the first layer, while the model sees "
            "them unrounded: differences there come from input quantization, not from the accelerator"
        ),
    ).to_dict()
    scratch = Path(traced.config.get_output_dir()).parent
    if scratch.name.startswith("lepton-verify-"):  # the traced twin's project: nothing in it is kept
        shutil.rmtree(scratch, ignore_errors=True)
    _record(root, manifest, report)
    return report


def _user_data(data, shape) -> np.ndarray:
    x = np.asarray(data, dtype=np.float64)
    if x.ndim == len(shape):
        x = x[None]
    if x.shape[1:] != tuple(shape) or not len(x):
        raise VerifyArgumentError(f"--data holds an array of shape {x.shape}; the model takes (N, {', '.join(map(str, shape))})")
    if not np.all(np.isfinite(x)):
        raise VerifyArgumentError(f"--data holds NaN or inf in {int((~np.isfinite(x)).any(axis=tuple(range(1, x.ndim))).sum())} rows")
    return x


def _agreement(out: np.ndarray, ref: np.ndarray, final_layer) -> float:
    """Argmax agreement; for a single output, agreement of the decision (above the middle of the final
    activation's range: 0.5 after a sigmoid, 0 otherwise)."""
    if out.shape[1] > 1:
        return float(np.mean(out.argmax(1) == ref.argmax(1)))
    fn = str(final_layer.get_attr("activation", "")).lower() if final_layer is not None else ""
    middle = 0.5 if "sigmoid" in fn else 0.0
    return float(np.mean((out[:, 0] > middle) == (ref[:, 0] > middle)))


def _record(root: Path, manifest, report: dict) -> None:
    manifest.verification = Verification.from_report(
        report, REPORT_PATH, verified=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    summary = {k: report[k] for k in ("samples", "identical_rows", "argmax_agreement", "max_abs_diff", "passed")}
    record_report(root, manifest, "verification", summary, report_file=REPORT_PATH, report=report)


def _real_data(manifest, n: int):
    if not manifest.model.source.startswith("zoo:"):
        return None
    from . import zoo

    data = zoo.get(manifest.model.source[4:]).eval_data(n)
    return None if data is None else manifest.preprocessing.apply(data[0])


def _logits_twin(files: ModelFiles):
    """The float64 model with its final softmax made linear: the reference for the pre-softmax values."""
    arch = json.loads(files.architecture_json)
    last = architecture_layers(arch)[-1]["config"]
    if last.get("activation") == "softmax" or (
        isinstance(last.get("activation"), dict) and last["activation"].get("class_name") == "softmax"
    ):
        last["activation"] = "linear"
    twin = ModelFiles(files.name, files.source, json.dumps(arch), files.weights_path)
    return load_keras(twin, "float64")


def _traced_model(model32, record: dict, root: Path, progress: Progress):
    """The package's hls4ml model rebuilt with every layer traced (same conversion, same firmware patches)."""
    from .calibration import calibration_inputs
    from .compat.hls4ml import keep_linked_library, link_written_project
    from .convert import convert
    from .firmware import patch_firmware

    cfg = BuildConfig(**record["config"])
    tmp = Path(tempfile.mkdtemp(prefix="lepton-verify-"))
    calib = None
    if record["conversion"]["float_model"]:  # the build's profiling inputs (user models: no zoo data)
        calib = calibration_inputs(tuple(model32.input_shape[1:]), cfg.profile_samples)
    hls_model, _ = convert(model32, cfg, str(tmp / "hls"), calibration=calib)
    for layer in hls_model.get_layers():
        # io_stream's stream copies write no trace of their own; asking for one breaks hls4ml's trace reader
        layer.set_attr("trace", layer.class_name != "Clone")
    hls_model.config.trace_output = True
    hls_model.write()
    patch_firmware(tmp / "hls")
    link_written_project(hls_model)
    # hls4ml's trace() rewrites and recompiles the project on every call, which would also drop the firmware
    # patches; the library built above already traces.
    keep_linked_library(hls_model)
    return hls_model


def _compare_layers(hls_model, trace: dict, keras_out: dict, logits_ref, softmax_final: bool, set_name: str):
    from .convert import fmt_of

    rows = []
    layers = list(hls_model.get_layers())
    final = layers[-1]
    names = {layer.name for layer in layers}
    for layer in layers:
        if layer.name not in trace or f"{layer.name}_alpha" in names:
            continue  # a layer whose QKeras alpha hls4ml applies after it: the model's output is the _alpha layer's
        got = trace[layer.name].reshape(len(trace[layer.name]), -1).astype(np.float64)
        ref = _keras_twin(layer, keras_out)
        if softmax_final and final.inputs and layer.name == final.inputs[0]:
            ref = logits_ref
        if ref is None:
            continue
        ref = np.asarray(ref, dtype=np.float64).reshape(len(got), -1)
        if ref.shape != got.shape:
            continue
        same = np.all(got == ref, axis=1)
        fmt = fmt_of(layer.get_output_variable().type.precision)
        row = LayerComparison(
            name=layer.name,
            layer_class=layer.class_name,
            format=str(fmt) if fmt else str(layer.get_output_variable().type.precision),
            identical_rows=float(same.mean()),
            max_abs_diff=float(np.max(np.abs(got - ref))),
        )
        if row.identical_rows < 1.0:
            table = _table_function(layer)
            from .inexact import average_counts

            uneven = sorted(n for n in average_counts(layer) if n & (n - 1))
            if uneven:
                row.cause = (
                    f"average over {', '.join(map(str, uneven))} values: 1/{uneven[0]} has no exact binary fraction, "
                    f"so the quotient is rounded (max|diff| {row.max_abs_diff:.3g}); a power-of-two window is exact"
                )
            elif table:
                size = layer.get_attr("table_size", None)
                row.cause = (
                    f"{table} lookup table{f' ({size} entries)' if size else ''}: hls4ml approximates {table} by a "
                    f"table, never bit-exact; measured max|diff| {row.max_abs_diff:.3g}; raise table_bits (or "
                    "softmax_table_bits) in the build config to shrink it"
                )
            else:
                row.cause = likely_cause(layer.class_name, fmt, got, ref, first=not rows, set_name=set_name)
                row.values_need = _type_for_values(ref)
        rows.append(row)
    return rows


def _first_real_difference(rows: list) -> LayerComparison | None:
    """The first layer whose difference reaches the output: one that a later layer makes identical again (a
    real-valued batch-normalisation scale rounded away by the next quantizer) is not the cause."""
    for i, row in enumerate(rows):
        if row.identical_rows < 1.0 and not any(r.identical_rows == 1.0 for r in rows[i + 1 :]):
            return row  # a lookup table in the middle is the cause of what follows it
    return None


def _table_function(layer) -> str:
    """The transcendental function a layer computes by lookup table, or ''."""
    from .model_check import APPROXIMATE

    if layer.class_name == "Softmax":
        return "softmax"
    fn = str(layer.get_attr("activation", "")).lower()
    return fn if fn in APPROXIMATE and layer.class_name in ("Activation", "ELU", "ParametrizedActivation") else ""


def _type_for_values(ref: np.ndarray) -> str:
    """The narrowest rounding, saturating type that holds every value in `ref` (24 fraction bits at most)."""
    from .convert import _frac_bits, _hls_str, _signed_int_bits

    frac = _frac_bits(ref, limit=24)
    frac = 24 if frac is None else frac
    integer = _signed_int_bits(float(ref.min()), float(ref.max()), frac)
    return _hls_str(FixedFormat(width=integer + frac, integer=integer, signed=True, rounding="RND", saturation="SAT"))


def _suggestion(hls_model, diff: LayerComparison) -> dict:
    """The `layer_precision` entry that makes the differing layer exact: the build's exact-type rule for its kind
    where one applies (it knows the weights and the input range), else a type holding the values seen."""
    import yaml

    from .convert import _current_format, _exact_types, _hls_str, _holds, fmt_of

    layer = next((l for l in hls_model.get_layers() if l.name == diff.name), None)
    if layer is not None and _table_function(layer):
        return {}
    want = {}
    if layer is not None and layer.inputs:
        in_vars = [layer.get_input_variable(i) for i in layer.inputs]
        in_fmts = [fmt_of(v.type.precision) for v in in_vars if v is not None]
        if in_fmts and len(in_fmts) == len(in_vars) and all(f is not None for f in in_fmts):
            for key, fmt in _exact_types(layer, in_fmts).items():
                if not _holds(_current_format(layer, key), fmt):
                    want[key] = _hls_str(fmt)
    if not want and diff.values_need:
        want["result"] = diff.values_need
    if not want:
        return {}
    snippet = yaml.safe_dump({"layer_precision": {diff.name: want}}, default_flow_style=False, sort_keys=False)
    return {"suggested_layer_precision": {diff.name: want}, "suggested_config": snippet}


def _keras_twin(layer, keras_out: dict):
    """The Keras output that corresponds to an hls4ml layer, or None when hls4ml split it out of a fused layer."""
    name = layer.name
    for act in ("relu", "linear", "softmax", "sigmoid", "tanh", "alpha"):
        if name.endswith("_" + act) and name[: -len(act) - 1] in keras_out:
            return keras_out[name[: -len(act) - 1]]
    if name in keras_out and layer.class_name not in ("Dense", "Conv1D", "Conv2D"):
        return keras_out[name]
    if name in keras_out and layer.get_attr("activation", "linear") == "linear":
        # hls4ml keeps the fused activation as a separate layer named <name>_<act>; only a linear one is this output
        return keras_out[name]
    return None


def likely_cause(layer_class: str, fmt: FixedFormat | None, got, ref, first: bool, set_name: str) -> str:
    """A hardware engineer's first guess at why a layer's values differ from the model's."""
    if layer_class == "Softmax":
        return "softmax lookup tables (exp and 1/x tables): bounded table error, argmax is what is promised"
    if first and set_name == "off_grid":
        return "input quantization: off-grid inputs are rounded to the input type before the first layer"
    bad = got != ref
    if fmt is not None:
        outside = (ref < fmt.min_value) | (ref > fmt.max_value)
        if np.any(outside & bad):
            mode = "saturation" if fmt.saturation != "WRAP" else "overflow (wrap-around)"
            return f"{mode}: the model's values exceed the range of {fmt} [{fmt.min_value:g}, {fmt.max_value:g}]"
        if np.max(np.abs(got - ref)) <= fmt.step:
            return f"truncation/rounding to {fmt} (differences of at most one LSB, {fmt.step:g})"
    if not first:
        return "propagated from an earlier layer, or an accumulator narrower than the exact sum"
    return "arithmetic differs by more than one LSB: accumulator narrower than the exact sum"
