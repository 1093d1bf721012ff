"""Let QKeras quantizers run in float64 so a float64 model is an exact reference for fixed-point C simulation.

A float32 model cannot hold a 27-bit accumulation, so it is not a bit-exact reference for hls4ml's csim. QKeras
0.9 quantizers, however, hard-code float32 in places (`quantized_relu` casts its input to float32;
`quantized_bits` casts to Keras' floatx; the power-of-two clip mixes a float32 epsilon into `tf.where`), so a
model whose layers are float64 fails or silently rounds through float32.

`install()` makes the quantizers follow their input's dtype: while one is called on a float64 tensor, every
request for float32 inside `qkeras.quantizers` becomes float64. Float32 models are not affected. The patch reaches
into QKeras' module globals, so it lives with the project's other QKeras hooks (`compat.qkeras`).
"""

from __future__ import annotations

from .compat.qkeras import install_float64_quantizers


def install() -> None:
    """Idempotently patch qkeras.quantizers; call before building or running a float64 QKeras model."""
    install_float64_quantizers()
