"""The tests' tiny QKeras MLP (16-8-4, 6-bit weights, a quantized_relu): conftest's `tiny_model` is seed 1; the
model-lifecycle tests build other seeds for versions of the same contract that answer differently. Imports
TensorFlow inside the function only."""

from __future__ import annotations

from pathlib import Path


def save_tiny_mlp(path: Path, seed: int) -> Path:
    import numpy as np
    import tensorflow as tf
    from qkeras import QActivation, QDense, quantized_bits, quantized_relu

    inp = tf.keras.Input((16,), name="inp")
    x = QDense(8, kernel_quantizer=quantized_bits(6, 0, alpha=1), bias_quantizer=quantized_bits(6, 0, alpha=1),
               name="fc1")(inp)
    x = QActivation(quantized_relu(6), name="relu1")(x)
    x = QDense(4, kernel_quantizer=quantized_bits(6, 0, alpha=1), bias_quantizer=quantized_bits(6, 0, alpha=1),
               name="fc2")(x)
    model = tf.keras.Model(inp, x)
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if layer.get_weights():
            layer.set_weights([rng.randn(*w.shape) * 0.5 for w in layer.get_weights()])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path
