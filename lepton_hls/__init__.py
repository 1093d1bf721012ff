"""lepton-hls: QKeras models compiled into verified FPGA accelerators, served at the edge with a cloud fallback.

The build side (this package) needs TensorFlow, QKeras and hls4ml; the board side (`lepton_host`) needs only
numpy and pynq. Heavy imports happen inside the functions that need them so `lepton-hls --help` is instant.
"""

__version__ = "0.1.0"


def load(package_dir, engine: str = "fast", verify: bool = True):
    """Open a built overlay package: `lepton_hls.load(DIR).predict(X)` is bit-identical to its C simulation."""
    from .package import load as _load

    return _load(package_dir, engine=engine, verify=verify)
