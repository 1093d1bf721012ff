"""A tiny QKeras MLP compiled by hls4ml into a package (manifest + C simulation), for the board tests.

Kept apart from the board tests so that no test module imports both TensorFlow and pynq.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
from pathlib import Path


def build_tiny_package(workdir, name="tiny_mlp", n_in=16, hidden=8, n_out=5, seed=1, out_precision="ap_fixed<14,5>",
                       preprocessing=None):
    """QKeras MLP -> hls4ml (Vitis, io_parallel) -> compiled C simulation -> a package directory holding the
    manifest and emulation/csim.so. Returns (package_dir, hls_model); hls_model.predict is the reference."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import hls4ml
    import tensorflow as tf
    from qkeras import QActivation, QDense, quantized_bits, quantized_relu

    from lepton_host.fixedpoint import FixedFormat
    from lepton_host.manifest import HlsInfo, Manifest, ModelInfo, Preprocessing, TensorSpec

    tf.random.set_seed(seed)
    q = quantized_bits(6, 0, alpha=1)
    inp = tf.keras.Input((n_in,), name="x")
    h = QDense(hidden, kernel_quantizer=q, bias_quantizer=q, name="fc1")(inp)
    h = QActivation(quantized_relu(6), name="relu1")(h)
    out = QDense(n_out, kernel_quantizer=q, bias_quantizer=q, name="fc2")(h)
    model = tf.keras.Model(inp, out)
    cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    if out_precision:
        cfg["LayerName"]["fc2"]["Precision"]["result"] = out_precision
    workdir = Path(workdir)
    hls = hls4ml.converters.convert_from_keras_model(
        model, hls_config=cfg, output_dir=str(workdir / "hls"), backend="Vitis", io_type="io_parallel",
        part="xc7z020clg400-1", write_weights_txt=False,
    )
    hls.compile()
    pkg = workdir / "pkg"
    (pkg / "emulation").mkdir(parents=True, exist_ok=True)
    shutil.copy(sorted(glob.glob(str(workdir / "hls" / "firmware" / "*.so")))[-1], pkg / "emulation" / "csim.so")
    fin = FixedFormat.parse(str(hls.get_input_variables()[0].type.precision))
    fout = FixedFormat.parse(str(hls.get_output_variables()[0].type.precision))
    m = Manifest(
        model=ModelInfo(name=name, source="test", sha256=hashlib.sha256(f"{name}{seed}".encode()).hexdigest()),
        inputs=[TensorSpec("x", (n_in,), fin)],
        outputs=[TensorSpec("y", (n_out,), fout)],
        hls=HlsInfo(backend="Vitis", board="pynq-z2", part="xc7z020clg400-1", clock_ns=10.0,
                    io_type="io_parallel", strategy="Latency", reuse_factor=1),
        preprocessing=preprocessing or Preprocessing(),
    )
    m.add_artifacts(pkg, ["emulation/csim.so"])
    m.save(pkg)
    return pkg, hls
