"""Export a package's original model as a Triton Inference Server model repository: the scale-out path, where
a real Triton (or KServe with Triton's runtime) replaces the reference cloud server. The SavedModel takes the
same raw features as the gateway (the manifest's preprocessing is part of the graph) under the same tensor
names, so the gateway's cloud client talks to it unchanged. Imports TensorFlow; never the board runtime."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lepton_host.errors import LeptonError
from lepton_host.manifest import Manifest, load_manifest

from .server import load_keras_model

SAVEDMODEL_DIR = "model.savedmodel"  # the name Triton's TensorFlow backend looks for


class ExportError(LeptonError):
    """The Triton model repository could not be written."""


@dataclass(frozen=True)
class TritonExport:
    repository: Path
    model_dir: Path
    config_path: Path
    savedmodel: Path


def config_pbtxt(manifest: Manifest, max_batch_size: int, max_queue_delay_us: int, preferred: tuple[int, ...],
                 instance_kind: str | None) -> str:
    def dims(shape) -> str:
        return ", ".join(str(d) for d in shape)

    lines = [
        f'name: "{manifest.model.name}"',
        'platform: "tensorflow_savedmodel"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        f'  {{ name: "{manifest.input.name}" data_type: TYPE_FP32 dims: [ {dims(manifest.input.shape)} ] }}',
        "]",
        "output [",
        f'  {{ name: "{manifest.output.name}" data_type: TYPE_FP32 dims: [ {dims(manifest.output.shape)} ] }}',
        "]",
        "dynamic_batching {",
    ]
    if preferred:
        lines.append(f"  preferred_batch_size: [ {', '.join(str(p) for p in preferred)} ]")
    lines += [f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}"]
    if instance_kind:
        lines += ["instance_group [", f"  {{ count: 1 kind: {instance_kind} }}", "]"]
    lines.append('version_policy: { latest: { num_versions: 1 } }')
    return "\n".join(lines) + "\n"


def export_triton(package_dir: str | os.PathLike, out_dir: str | os.PathLike, max_batch_size: int = 256,
                  max_queue_delay_us: int = 2000, preferred_batch_sizes: tuple[int, ...] = (),
                  instance_kind: str | None = None, version: int = 1, overwrite: bool = False) -> TritonExport:
    """Write `out_dir/<model>/config.pbtxt` and `out_dir/<model>/<version>/model.savedmodel/`."""
    import tensorflow as tf

    manifest = load_manifest(package_dir)
    if instance_kind not in (None, "KIND_CPU", "KIND_GPU", "KIND_AUTO"):
        raise ExportError(f"instance kind {instance_kind!r} must be KIND_CPU, KIND_GPU or KIND_AUTO")
    if max_batch_size < 1:
        raise ExportError("max_batch_size must be at least 1 (dynamic batching needs a batch dimension)")
    repo = Path(out_dir)
    model_dir = repo / manifest.model.name
    saved = model_dir / str(version) / SAVEDMODEL_DIR
    if saved.exists():
        if not overwrite:
            raise ExportError(f"{saved} exists; pass --overwrite to replace it")
        shutil.rmtree(saved)
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
    config = model_dir / "config.pbtxt"
    config.write_text(config_pbtxt(manifest, max_batch_size, max_queue_delay_us, tuple(preferred_batch_sizes),
                                   instance_kind))
    return TritonExport(repo, model_dir, config, saved)
