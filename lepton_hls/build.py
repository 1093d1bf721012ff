"""`lepton-hls build`: model -> verified overlay package (hls4ml project, C simulation, fast engine, manifest)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lepton_host.errors import LeptonError
from lepton_host.manifest import (
    Fidelity,
    HlsInfo,
    Manifest,
    ModelInfo,
    Preprocessing,
    TensorSpec,
    load_manifest,
)

from . import __version__
from .build_config import BuildConfig
from .compat.hls4ml import link_written_project
from .convert import ConversionReport, convert, fmt_of
from .firmware import patch_firmware
from .inexact import approximate_layers
from .keras_io import ModelFiles, load_keras, resolve_files
from .progress import Progress

HLS_DIR, MODEL_DIR = "hls", "model"
CONVERSION_RECORD = "hls/lepton_conversion.json"


class BuildError(LeptonError):
    """The package could not be built."""


@dataclass(frozen=True)
class ModelSpec:
    """A model to build, with what the manifest says about it beyond its files."""

    files: ModelFiles
    task: str = "classifier"
    classes: tuple[str, ...] = ()
    preprocessing: Preprocessing = Preprocessing()
    threshold: float | None = None
    zoo_name: str | None = None


def resolve_model(model: str, weights: str | None = None) -> ModelSpec:
    """MODEL is a zoo name, an architecture .json (+ weights), or a full-model .h5."""
    from . import zoo

    if model in zoo.names("cloud"):
        entry = zoo.get(model)
        raise BuildError(f"{model} is a float cloud model (the partner of {entry.partner}); it is served by "
                         f"`lepton-hls cloud DIR --model zoo:{model}`, not compiled. Build one of: "
                         f"{', '.join(zoo.names('edge'))}")
    if model in zoo.names():
        if weights:
            raise BuildError(f"{model} is a zoo model with its own weights; --weights applies to a .json MODEL")
        entry = zoo.get(model)
        files = ModelFiles(
            name=entry.name,
            source=f"zoo:{entry.name}",
            architecture_json=entry.json_path.read_text(),
            weights_path=entry.weights_path,
        )
        return ModelSpec(
            files=files,
            task=entry.task,
            classes=tuple(entry.classes),
            preprocessing=entry.preprocessing,
            threshold=entry.threshold,
            zoo_name=entry.name,
        )
    if not Path(model).suffix:
        raise BuildError(f"{model!r} is neither a zoo model ({', '.join(zoo.names('edge'))}) nor a model file")
    files = resolve_files(model, weights)
    return ModelSpec(files=files, task=_task_of(files))


def _task_of(files: ModelFiles) -> str:
    """A user model ending in softmax or sigmoid is a classifier (argmax / decision agreement means something);
    anything else is a regressor (identical values are what counts)."""
    from .keras_io import architecture_layers

    try:
        layers = architecture_layers(json.loads(files.architecture_json))
    except json.JSONDecodeError:
        return "classifier"  # the model check names the problem
    if not layers:
        return "classifier"
    last = layers[-1]
    act = (last.get("config", {}) or {}).get("activation", "")
    text = json.dumps(act) if not isinstance(act, str) else act
    return "classifier" if last.get("class_name") == "Softmax" or "softmax" in text or "sigmoid" in text else "regressor"


def calibration_inputs(spec: ModelSpec, input_shape, n: int, seed: int = 0) -> np.ndarray:
    from .calibration import calibration_inputs as inputs

    return inputs(input_shape, n, seed=seed, zoo_name=spec.zoo_name, preprocessing=spec.preprocessing)


def check_spec(spec: ModelSpec, cfg: BuildConfig | None = None):
    """The front door (seconds, no TensorFlow): every layer supported, every configured layer present."""
    from .model_check import check_model, refuse_unsupported

    report = check_model(spec.files, io_type=cfg.io_type if cfg is not None else "io_parallel")
    refuse_unsupported(report)
    if cfg is not None and cfg.layer_precision:
        names = {c.name for c in report.layers}
        unknown = sorted(set(cfg.layer_precision) - names)
        if unknown:
            raise BuildError(
                f"layer_precision names layer(s) {', '.join(map(repr, unknown))}, which the model does not have; "
                f"layers: {', '.join(c.name for c in report.layers)}"
            )
    return report


def build_package(
    model: str,
    out: str | Path,
    cfg: BuildConfig,
    weights: str | None = None,
    verify_samples: int = 2000,
    force: bool = False,
    progress: Progress | None = None,
    data: np.ndarray | None = None,
):
    """Build the package into `out`; returns (Manifest, verification report dict).

    The package is built in a temporary folder beside `out` and moved into place only when complete: a failed
    or interrupted build leaves neither a half-built `out` nor the temporary folder, and an existing `out`
    (with `force`) is replaced only by a finished package. A package that misses its fidelity is still moved
    into place, marked failed in its manifest, so that it can be inspected."""
    progress = progress or Progress()
    # The front door: a refusal is one line, in seconds, before anything is written.
    spec = resolve_model(model, weights)
    check_spec(spec, cfg)
    keras_model = load_keras(spec.files)
    from .model_check import check_loaded

    check_loaded(keras_model)
    final = Path(out).absolute()
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        if not force:
            what = "a lepton-hls package" if (final / "manifest.json").is_file() else "files"
            raise BuildError(
                f"{out} already holds {what}; pass --force to replace it (a built bitstream in it would be lost) "
                "or choose another --out directory"
            )
        if not final.is_dir():
            raise BuildError(f"{out} is a file, not a directory; choose another --out directory")
    final.parent.mkdir(parents=True, exist_ok=True)
    # Beside `out`, so the final move is a rename on one file system; made with mkdir so that it gets the
    # permissions a plain directory gets (mkdtemp's are owner-only).
    work = final.parent / f".{final.name}.building-{secrets.token_hex(4)}"
    work.mkdir()
    try:
        manifest, result = _build_into(spec, keras_model, work, cfg, verify_samples, progress, data)
        manifest = _relocate(work, final, result)
        _move_into_place(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest, result


def _build_into(spec: ModelSpec, keras_model, out: Path, cfg: BuildConfig, verify_samples: int, progress: Progress,
                data: np.ndarray | None = None):
    input_shape = tuple(int(d) for d in keras_model.input_shape[1:])

    with progress.step("convert with hls4ml"):
        calib = calibration_inputs(spec, input_shape, cfg.profile_samples)
        hls_model, conv = convert(keras_model, cfg, str(out / HLS_DIR), calibration=calib, progress=progress.note)
        shutil.rmtree(str(out / HLS_DIR) + "_profile", ignore_errors=True)

    with progress.step("write HLS project and compile C simulation"):
        hls_model.write()
        patches = patch_firmware(out / HLS_DIR)
        link_written_project(hls_model)

    with progress.step("export emulators"):
        from .engine_export import export_emulation

        export_emulation(hls_model, out)
        from lepton_host.emulator import CsimEmulator
        from lepton_host.selftest import write_golden

        write_golden(out, CsimEmulator(out))  # the board's self-test vectors, from the reference C simulation
        model_dir = out / MODEL_DIR
        model_dir.mkdir(exist_ok=True)
        (model_dir / "model.json").write_text(spec.files.architecture_json)
        shutil.copyfile(spec.files.weights_path, model_dir / "weights.h5")
        record = {"conversion": asdict(conv), "firmware_patches": patches, "config": cfg.to_dict()}
        (out / CONVERSION_RECORD).write_text(json.dumps(record, indent=2))

    manifest = _manifest(spec, hls_model, cfg, conv)
    manifest.add_artifacts(out, _artifact_paths(out))
    manifest.save(out)

    from .verify import verify_package

    with progress.step(f"verify C simulation against the model ({verify_samples} samples per set)"):
        result = verify_package(out, samples=verify_samples, progress=progress, data=data)
    return manifest, result


def _relocate(work: Path, final: Path, result: dict) -> Manifest:
    """Files that name the build folder (hls4ml's config, the verification report) name the package's final
    place instead; the manifest re-hashes them. The compiled C simulation needs nothing: it finds its weights
    beside itself (WEIGHTS_LOCATOR), and the engine's files are relative."""
    manifest = load_manifest(work, verify=False)
    old, new = str(work).encode(), str(final).encode()
    changed = []
    for rel in manifest.artifacts:
        path = work / rel
        data = path.read_bytes()
        if old not in data:
            continue
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # binary files are not rewritten (the emulators hold no build path; see patch_firmware)
        path.write_bytes(data.replace(old, new))
        changed.append(rel)
    if changed:
        manifest.add_artifacts(work, changed)
        manifest.save(work)
    for key, value in list(result.items()):
        if isinstance(value, str) and str(work) in value:
            result[key] = value.replace(str(work), str(final))
    return manifest


def _move_into_place(work: Path, final: Path) -> None:
    """Swap the finished package in; an old package is set aside first and removed only after the swap."""
    old = None
    if final.exists():
        if final.is_dir() and not any(final.iterdir()):
            final.rmdir()
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.replaced-", dir=final.parent))
            os.replace(final, old / final.name)
    try:
        os.replace(work, final)
    except BaseException:
        if old is not None:
            os.replace(old / final.name, final)  # put the old package back
            old.rmdir()
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _manifest(spec: ModelSpec, hls_model, cfg: BuildConfig, conv: ConversionReport) -> Manifest:
    import hls4ml

    ins = [
        TensorSpec(name=v.name, shape=tuple(int(s) for s in v.shape), format=fmt_of(v.type.precision))
        for v in hls_model.get_input_variables()
    ]
    outs = [
        TensorSpec(name=v.name, shape=tuple(int(s) for s in v.shape), format=fmt_of(v.type.precision))
        for v in hls_model.get_output_variables()
    ]
    for t in ins + outs:
        if t.format is None:
            raise BuildError(f"port {t.name} has no fixed-point type the runtime can pack")
    if conv.float_model:
        fidelity = Fidelity(
            identical_rows_min=0.0,
            argmax_agreement_min=0.99,
            note="float model: fixed-point types chosen by profiling; residual error reported by verify",
        )
    elif approximate := approximate_layers(hls_model):
        fidelity = Fidelity(
            identical_rows_min=0.0,
            argmax_agreement_min=0.995,
            note=f"not bit-exact by nature: {', '.join(approximate)} (lookup tables of sigmoid/tanh/..., or averages "
            f"over a count that is not a power of two); agreement and max|diff| measured by verify; larger tables "
            f"shrink a table's error (config table_bits, now {cfg.table_bits}; softmax_table_bits for softmax)",
        )
    else:
        fidelity = Fidelity(identical_rows_min=1.0, argmax_agreement_min=0.995)
    return Manifest(
        model=ModelInfo(
            name=spec.files.name,
            source=spec.files.source,
            sha256=spec.files.sha256,
            task=spec.task,
            classes=spec.classes,
            threshold=spec.threshold,
            framework="keras" if conv.float_model else "qkeras",
        ),
        inputs=ins,
        outputs=outs,
        hls=HlsInfo(
            backend=cfg.backend,
            board=cfg.board,
            part=cfg.part,
            clock_ns=cfg.clock_ns,
            io_type=cfg.io_type,
            strategy=cfg.strategy,
            reuse_factor=cfg.reuse_factor,
            project_name=cfg.project_name,
            hls4ml_version=hls4ml.__version__,
        ),
        preprocessing=spec.preprocessing,
        fidelity=fidelity,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        tool_version=__version__,
    )


def _artifact_paths(root: Path) -> list[Path]:
    paths = []
    for sub in (MODEL_DIR, "emulation", "engine", HLS_DIR, "selftest"):
        for p in sorted((root / sub).rglob("*")):
            if p.is_file() and not _is_build_output(p):
                paths.append(p.relative_to(root))
    return paths


def _is_build_output(p: Path) -> bool:
    # The hls4ml project's own compiled libraries are rebuilt on every compile; the package's copy is emulation/.
    return p.suffix in (".so", ".o") and p.parent.name == "firmware"
