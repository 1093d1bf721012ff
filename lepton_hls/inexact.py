"""Layers that cannot reproduce the model bit for bit, whatever their types: lookup tables of transcendental
functions and averages over counts that are not powers of two. The manifest's fidelity and verify's diagnosis
both ask here."""

from __future__ import annotations

import numpy as np


def approximate_layers(hls_model) -> list[str]:
    """Layers that cannot reproduce the model bit for bit: lookup tables of a transcendental function (other than
    a final softmax, whose argmax is what a classifier promises anyway), and averages over a count that is not a
    power of two (1/n has no exact binary fraction)."""
    from .model_check import APPROXIMATE

    layers = list(hls_model.get_layers())
    out = []
    for i, layer in enumerate(layers):
        fn = str(layer.get_attr("activation", "")).lower()
        if layer.class_name == "Softmax" and i == len(layers) - 1:
            continue
        if layer.class_name == "Softmax" or (layer.class_name in ("Activation", "ELU", "ParametrizedActivation")
                                             and fn in APPROXIMATE):
            out.append(layer.name)
        elif any(n & (n - 1) for n in average_counts(layer)):
            out.append(layer.name)
    return out


def average_counts(layer) -> set[int]:
    """The numbers of values an average-pooling layer divides by (edge windows of 'same' padding count fewer)."""
    a = layer.get_attr
    if str(a("pool_op", "")).lower() != "average":
        return set()
    if layer.class_name.startswith("GlobalPooling"):
        shape = layer.get_input_variable().shape
        return {int(np.prod(shape[:-1]))}
    is2d = layer.class_name == "Pooling2D"
    ih, iw = (int(a("in_height", 1)) if is2d else 1), int(a("in_width") if is2d else a("n_in"))
    ph, pw = (int(a("pool_height", 1)) if is2d else 1), int(a("pool_width"))
    if a("count_pad", False):
        return {ph * pw}
    ones = np.pad(np.ones((ih, iw), dtype=np.int64), ((int(a("pad_top", 0)) if is2d else 0,
                                                      int(a("pad_bottom", 0)) if is2d else 0),
                                                     (int(a("pad_left", 0)), int(a("pad_right", 0)))))
    win = np.lib.stride_tricks.sliding_window_view(ones, (ph, pw))
    sh, sw = (int(a("stride_height", 1)) if is2d else 1), int(a("stride_width"))
    return {int(c) for c in win[::sh, ::sw].sum(axis=(2, 3)).ravel() if c}
