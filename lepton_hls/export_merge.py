"""Export hls4ml's two-input layers (Merge, Concatenate, Dot) and io_stream's Clone to the engine IR.

Each function fills an `engine_export._Exporter` record (docs/engine-ir.md: `merge`, `concatenate`, `dot`,
`clone`); the exporter has already named the record's inputs after the layers producing them.
"""

from __future__ import annotations

import numpy as np

from lepton_host.engine_merge import MERGE_FUNCTIONS
from lepton_host.fixedpoint import FixedFormat


def _inputs(exporter, layer) -> list:
    if len(layer.inputs) != 2:
        exporter._unsupported(layer, f"{len(layer.inputs)} inputs (hls4ml merges exactly two)")
    return [layer.get_input_variable(name) for name in layer.inputs]


def merge(exporter, layer, rec) -> None:
    a, b = _inputs(exporter, layer)
    fn = str(layer.get_attr("op", "")).lower()
    if fn not in MERGE_FUNCTIONS:
        exporter._unsupported(layer, f"merge operation {fn!r} (supported: {', '.join(MERGE_FUNCTIONS)})")
    rec["op"] = "merge"
    n1, n2 = int(np.prod(a.shape)), int(np.prod(b.shape))
    if max(n1, n2) != int(np.prod(rec["shape"])):
        exporter._unsupported(layer, f"inputs of {n1} and {n2} values into {rec['shape']}")
    rec["params"].update(function=fn, n_elem1=n1, n_elem2=n2)


def concat_axis(rank: int, axis: int) -> int:
    """The per-sample axis nnet_merge.h joins along for the Keras `axis` (batch axis counted): concatenate2d
    takes axis 2 or -1 as the last axis and anything else as the first; concatenate3d takes 3 or -1 as the last,
    2 or -2 as the middle, anything else as the first; concatenate1d has one axis."""
    if rank == 1:
        return 0
    if rank == 2:
        return 1 if axis in (2, -1) else 0
    return 2 if axis in (3, -1) else 1 if axis in (2, -2) else 0


def concatenate(exporter, layer, rec) -> None:
    a, b = _inputs(exporter, layer)
    rank = len(a.shape)
    if rank not in (1, 2, 3) or len(b.shape) != rank:
        exporter._unsupported(layer, f"concatenating shapes {list(a.shape)} and {list(b.shape)} (ranks 1-3)")
    axis = concat_axis(rank, int(layer.get_attr("axis", -1)))
    joined = list(a.shape)
    joined[axis] += int(b.shape[axis])
    if joined != rec["shape"]:
        exporter._unsupported(layer, f"concatenating {list(a.shape)} and {list(b.shape)} into {rec['shape']}")
    rec["op"] = "concatenate"
    rec["params"].update(axis=axis)


def dot(exporter, layer, rec) -> None:
    from hls4ml.backends import get_backend

    a, b = _inputs(exporter, layer)
    if len(a.shape) != 1 or list(a.shape) != list(b.shape):
        exporter._unsupported(layer, f"dot of shapes {list(a.shape)} and {list(b.shape)} (two equal vectors)")
    product = get_backend("vivado").product_type(a.type.precision, b.type.precision)
    if product != "mult":
        exporter._unsupported(layer, f"the {product} product of {a.type.precision} and {b.type.precision}")
    fa, fb = _format(a.type.precision), _format(b.type.precision)
    if (fa.width == 1 and not fa.signed) or (fb.width == 1 and not fb.signed):
        exporter._unsupported(layer, "binary (1-bit unsigned) inputs")
    rec["op"] = "dot"
    rec["params"].update(n_in=int(a.shape[0]), accum=_format(layer.types["accum_t"].precision).to_dict())


def clone(exporter, layer, rec) -> None:
    if rec["format"] != _format(layer.get_input_variable().type.precision).to_dict():
        exporter._unsupported(layer, "a clone that changes the fixed-point format")
    rec["op"] = "clone"


def _format(precision) -> FixedFormat:
    """hls4ml precision type -> FixedFormat (as engine_export.fixed_format; kept here so that this module does
    not import the exporter that imports it)."""
    return FixedFormat.parse(str(precision))
