"""The model the host-overhead benchmark serves, built through hls4ml's VivadoAccelerator backend so that hls4ml
writes its own PYNQ driver for it. Kept apart from the benchmark, which drives pynq: no module imports both
TensorFlow and pynq."""

from __future__ import annotations

import glob
import hashlib
import shutil
from pathlib import Path


def build(model_name: str, work: Path):
    """The zoo model through hls4ml's VivadoAccelerator backend (pynq-z2, axi_stream, float IO): its project
    holds the driver hls4ml writes and the C simulation; a package directory is made from the same model."""
    import hls4ml

    from lepton_hls import zoo
    from lepton_host.fixedpoint import FixedFormat
    from lepton_host.manifest import HlsInfo, Manifest, ModelInfo, TensorSpec

    z = zoo.get(model_name)
    model = z.load_keras()
    prj = work / "hls4ml_prj"
    if prj.exists():
        shutil.rmtree(prj)
    cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="VivadoAccelerator")
    hls = hls4ml.converters.convert_from_keras_model(
        model, hls_config=cfg, output_dir=str(prj), backend="VivadoAccelerator", board="pynq-z2",
        io_type="io_parallel", interface="axi_stream", driver="python", input_type="float", output_type="float",
    )
    hls.compile()
    pkg = work / "package"
    if pkg.exists():
        shutil.rmtree(pkg)
    (pkg / "emulation").mkdir(parents=True)
    shutil.copy(sorted(glob.glob(str(prj / "firmware" / "*.so")))[-1], pkg / "emulation" / "csim.so")
    iv, ov = hls.get_input_variables()[0], hls.get_output_variables()[0]
    m = Manifest(
        model=ModelInfo(name=model_name, source=f"zoo:{model_name}",
                        sha256=hashlib.sha256(z.weights_path.read_bytes()).hexdigest(), task=z.task,
                        classes=tuple(z.classes)),
        inputs=[TensorSpec("input", tuple(int(d) for d in iv.shape), FixedFormat.parse(str(iv.type.precision)))],
        outputs=[TensorSpec("output", tuple(int(d) for d in ov.shape), FixedFormat.parse(str(ov.type.precision)))],
        hls=HlsInfo(backend="VivadoAccelerator", board="pynq-z2", part="xc7z020clg400-1", clock_ns=10.0,
                    io_type="io_parallel", strategy="Latency", reuse_factor=1, project_name="myproject",
                    hls4ml_version=hls4ml.__version__),
        preprocessing=z.preprocessing,
    )
    m.add_artifacts(pkg, ["emulation/csim.so"])
    m.save(pkg)
    return pkg, prj / "axi_stream_driver.py", hls
