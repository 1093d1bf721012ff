"""lepton-hls: QKeras models compiled into verified FPGA accelerators, served at the edge with a cloud fallback.

The build side (this package) needs TensorFlow, QKeras and hls4ml; the board side (`lepton_host`) needs only
numpy and pynq. Heavy imports happen inside the functions that need them so `lepton-hls --help` is instant.
"""

__version__ = "0.1.0"
