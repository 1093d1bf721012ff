"""Export the cloud model as a Triton Inference Server model repository: the scale-out path, where a real Triton
(or KServe with Triton's runtime) replaces the reference cloud server. Two backends:

- `onnxruntime` (for GPU and CPU fleets): `<version>/model.onnx` from onnx_export.py, the package's own model or
  another one that fits it (`--model`, as `lepton-hls cloud` takes it), checked against TensorFlow first.
- `tensorflow`: `<version>/model.savedmodel`, the package's own model (needs a Triton built with the TensorFlow
  backend, which recent Triton releases no longer ship).

Either way the model takes the same raw features as the gateway (the manifest's preprocessing is part of the
graph) under the same tensor names, so the gateway's cloud client talks to it unchanged; config.pbtxt declares
the tensors, dynamic batching and the instance group, and a classifier's class order as the output's labels.
Imports TensorFlow; never the board runtime."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lepton_host.errors import LeptonError
from lepton_host.manifest import Manifest, load_manifest

from .served_model import ModelChoice

# backend -> (Triton platform, the file or folder Triton's backend looks for in a version directory)
BACKENDS = {
    "tensorflow": ("tensorflow_savedmodel", "model.savedmodel"),
    "onnxruntime": ("onnxruntime_onnx", "model.onnx"),
}
INSTANCE_KINDS = ("KIND_CPU", "KIND_GPU", "KIND_AUTO")
LABELS_FILE = "labels.txt"  # Triton's label_filename: one class per line, in output order
SAVEDMODEL_DIR = BACKENDS["tensorflow"][1]


class ExportError(LeptonError):
    """The Triton model repository could not be written."""


@dataclass(frozen=True)
class TritonConfig:
    """What config.pbtxt says besides the tensors."""

    backend: str = "tensorflow"
    max_batch_size: int = 256
    max_queue_delay_us: int = 2000
    preferred_batch_sizes: tuple[int, ...] = ()
    instance_kind: str | None = None  # None: Triton's choice (a GPU when present)
    instance_count: int = 1  # model instances per device of the kind

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise ExportError(f"backend {self.backend!r} must be one of {', '.join(BACKENDS)}")
        if self.instance_kind not in (None, *INSTANCE_KINDS):
            raise ExportError(f"instance kind {self.instance_kind!r} must be {', '.join(INSTANCE_KINDS)}")
        if self.max_batch_size < 1:
            raise ExportError("max_batch_size must be at least 1 (dynamic batching needs a batch dimension)")
        if self.instance_count < 1:
            raise ExportError("instance count must be at least 1")
        too_big = [p for p in self.preferred_batch_sizes if not 1 <= p <= self.max_batch_size]
        if too_big:
            raise ExportError(f"preferred batch sizes {too_big} must lie in 1..max_batch_size "
                              f"({self.max_batch_size}); Triton refuses the model otherwise")


@dataclass(frozen=True)
class TritonExport:
    repository: Path
    model_dir: Path
    config_path: Path
    model_path: Path  # the version's model.onnx or model.savedmodel
    note: str = ""  # e.g. the ONNX export's numerics check

    @property
    def savedmodel(self) -> Path:
        return self.model_path


def config_pbtxt(manifest: Manifest, config: TritonConfig, classes: tuple[str, ...] = ()) -> str:
    def dims(shape) -> str:
        return ", ".join(str(d) for d in shape)

    labels = f' label_filename: "{LABELS_FILE}"' if classes else ""
    lines = [
        f'name: "{manifest.model.name}"',
        f'platform: "{BACKENDS[config.backend][0]}"',
        f"max_batch_size: {config.max_batch_size}",
        "input [",
        f'  {{ name: "{manifest.input.name}" data_type: TYPE_FP32 dims: [ {dims(manifest.input.shape)} ] }}',
        "]",
        "output [",
        f'  {{ name: "{manifest.output.name}" data_type: TYPE_FP32 dims: [ {dims(manifest.output.shape)} ]{labels} }}',
        "]",
        "dynamic_batching {",
    ]
    if config.preferred_batch_sizes:
        lines.append(f"  preferred_batch_size: [ {', '.join(str(p) for p in config.preferred_batch_sizes)} ]")
    lines += [f"  max_queue_delay_microseconds: {config.max_queue_delay_us}", "}"]
    if config.instance_kind or config.instance_count != 1:
        kind = f" kind: {config.instance_kind}" if config.instance_kind else ""
        lines += ["instance_group [", f"  {{ count: {config.instance_count}{kind} }}", "]"]
    lines.append("version_policy: { latest: { num_versions: 1 } }")
    return "\n".join(lines) + "\n"


def export_triton(package_dir: str | os.PathLike, out_dir: str | os.PathLike, max_batch_size: int = 256,
                  max_queue_delay_us: int = 2000, preferred_batch_sizes: tuple[int, ...] = (),
                  instance_kind: str | None = None, version: int = 1, overwrite: bool = False,
                  backend: str = "tensorflow", instance_count: int = 1,
                  choice: ModelChoice | None = None) -> TritonExport:
    """Write `out_dir/<model>/config.pbtxt` and `out_dir/<model>/<version>/model.{savedmodel,onnx}`."""
    config = TritonConfig(backend, max_batch_size, max_queue_delay_us, tuple(preferred_batch_sizes), instance_kind,
                          instance_count)
    config.check()
    if choice is not None and backend != "onnxruntime":
        raise ExportError(f"--model {choice.source} needs --backend onnxruntime (the SavedModel export writes the "
                          "package's own model)")
    manifest = load_manifest(package_dir)
    repo = Path(out_dir)
    model_dir = repo / manifest.model.name
    target = model_dir / str(version) / BACKENDS[backend][1]
    if target.exists():
        if not overwrite:
            raise ExportError(f"{target} exists; pass --overwrite to replace it")
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    if backend == "onnxruntime":
        from .onnx_export import convert, write_atomically

        onnx_model = convert(package_dir, choice, manifest=manifest)
        write_atomically(target, onnx_model.data)
        classes, note = onnx_model.contract.classes, onnx_model.check.summary()
    else:
        _write_savedmodel(package_dir, manifest, target)
        classes, note = tuple(manifest.model.classes), ""
    if classes:
        (model_dir / LABELS_FILE).write_text("".join(f"{c}\n" for c in classes))
    else:
        (model_dir / LABELS_FILE).unlink(missing_ok=True)
    path = model_dir / "config.pbtxt"
    path.write_text(config_pbtxt(manifest, config, classes))
    return TritonExport(repo, model_dir, path, target, note)


def _write_savedmodel(package_dir, manifest: Manifest, saved: Path) -> None:
    import tensorflow as tf

    from .served_model import load_keras_model

    model = load_keras_model(package_dir)
    pre = manifest.preprocessing
    mean = np.asarray(pre.mean if pre.kind == "standard" else 0.0, np.float32)
    scale = np.asarray(pre.scale if pre.kind == "standard" else 1.0, np.float32)
    in_name, out_name = manifest.input.name, manifest.output.name

    class Served(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.mean = tf.constant(mean)
            self.scale = tf.constant(scale)

        @tf.function(input_signature=[tf.TensorSpec([None, *manifest.input.shape], tf.float32, name=in_name)])
        def serve(self, x):
            y = self.model((x - self.mean) / self.scale, training=False)
            return {out_name: tf.cast(y, tf.float32)}

    module = Served()
    fn = module.serve.get_concrete_function()
    try:
        saved.parent.mkdir(parents=True, exist_ok=True)
        tf.saved_model.save(module, str(saved), signatures={"serving_default": fn})
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot write the SavedModel to {saved}: {e}") from None
