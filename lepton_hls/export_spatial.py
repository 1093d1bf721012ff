"""Exporters of hls4ml's spatial layers and depthwise convolutions to the engine IR (docs/engine-ir.md:
`crop`, `upsample`, `transpose`, `global_pool`, `depthwise1d`, `depthwise2d`).

Each function takes the running `engine_export._Exporter`, the hls4ml layer and the IR record to fill in, as
the exporter's own handlers do. hls4ml splits a separable convolution into a DepthwiseConv layer and a
(pointwise) Conv layer in its optimizers; the graph is read after them, so separable convolutions arrive here
as their depthwise half.
"""

from __future__ import annotations

from lepton_host.fixedpoint import FixedFormat


def _channels_last(exporter, layer):
    if str(layer.get_attr("data_format", "channels_last")) != "channels_last":
        exporter._unsupported(layer, "channels_first data")


def crop(exporter, layer, rec):
    rec["op"] = "crop"
    _channels_last(exporter, layer)
    a = layer.get_attr
    is2d = layer.class_name == "Cropping2D"
    rec["params"].update(
        in_height=int(a("in_height", 1)) if is2d else 1,
        in_width=int(a("in_width")),
        n_chan=int(a("n_chan")),
        crop_top=int(a("crop_top", 0)) if is2d else 0,
        crop_bottom=int(a("crop_bottom", 0)) if is2d else 0,
        crop_left=int(a("crop_left", 0)),
        crop_right=int(a("crop_right", 0)),
    )


def upsample(exporter, layer, rec):
    rec["op"] = "upsample"
    _channels_last(exporter, layer)
    a = layer.get_attr
    algorithm = str(a("algorithm", "nearest")).lower()
    if algorithm != "nearest":
        exporter._unsupported(layer, f"{algorithm!r} interpolation (the engine follows 'nearest' only)")
    if len(layer.inputs) != 1:
        exporter._unsupported(layer, "a resize with scale inputs (ONNX)")
    rec["params"].update(
        in_height=int(a("in_height", 1) or 1),
        in_width=int(a("in_width")),
        n_chan=int(a("n_chan")),
        out_height=int(a("out_height", 1) or 1),
        out_width=int(a("out_width")),
    )


def transpose(exporter, layer, rec):
    rec["op"] = "transpose"
    in_shape = [int(s) for s in layer.get_input_variable().shape]
    perm = [int(p) for p in layer.get_attr("perm")]
    if len(perm) == 1:  # hls4ml's stand-in for ONNX's one-axis transpose: the values unchanged
        perm = list(range(len(in_shape)))
    if sorted(perm) != list(range(len(in_shape))):
        exporter._unsupported(layer, f"permutation {perm} of a {len(in_shape)}-axis tensor")
    rec["params"].update(in_shape=in_shape, perm=perm)


def global_pool(exporter, layer, rec):
    rec["op"] = "global_pool"
    _channels_last(exporter, layer)
    a = layer.get_attr
    mode = {"max": "max", "average": "average"}.get(str(a("pool_op", "Max")).lower())
    if mode is None:
        exporter._unsupported(layer, f"global pooling operation {a('pool_op')!r}")
    is2d = layer.class_name == "GlobalPooling2D"
    io_type = str(exporter.model.config.get_config_value("IOType")).lower()
    rec["params"].update(
        mode=mode,
        accum=FixedFormat.parse(str(layer.types["accum_t"].precision)).to_dict(),
        in_height=int(a("in_height", 1)) if is2d else 1,
        in_width=int(a("in_width")) if is2d else int(a("n_in")),
        n_filt=int(a("n_filt")),
        stream=io_type == "io_stream",
    )


def depthwise(exporter, layer, rec):
    is2d = layer.class_name == "DepthwiseConv2D"
    rec["op"] = "depthwise2d" if is2d else "depthwise1d"
    _channels_last(exporter, layer)
    a = layer.get_attr
    if any(int(a(k, 1) or 1) != 1 for k in ("dilation", "dilation_height", "dilation_width")):
        exporter._unsupported(layer, "dilation other than 1")
    n_chan, mult = int(a("n_chan")), int(a("depth_multiplier", 1) or 1)
    if mult != 1 or int(a("n_filt")) != n_chan:
        # hls4ml's own depthwise kernels assert a multiplier of 1
        exporter._unsupported(layer, f"depth_multiplier {mult} (hls4ml implements 1 only)")
    geo = {
        "in_height": int(a("in_height", 1)) if is2d else 1,
        "in_width": int(a("in_width")),
        "n_chan": n_chan,
        "depth_multiplier": 1,
        "filt_height": int(a("filt_height", 1)) if is2d else 1,
        "filt_width": int(a("filt_width")),
        "n_filt": n_chan,
        "stride_height": int(a("stride_height", 1)) if is2d else 1,
        "stride_width": int(a("stride_width")),
        "pad_top": int(a("pad_top", 0)) if is2d else 0,
        "pad_bottom": int(a("pad_bottom", 0)) if is2d else 0,
        "pad_left": int(a("pad_left")),
        "pad_right": int(a("pad_right")),
        "out_height": int(a("out_height", 1)) if is2d else 1,
        "out_width": int(a("out_width")),
    }
    rec["params"].update(geo)
    taps = geo["filt_height"] * geo["filt_width"]
    if int(layer.weights["weight"].data.size) != taps * n_chan:
        exporter._unsupported(layer, f"a depthwise kernel of {layer.weights['weight'].data.shape}")
    # kernel [taps, n_chan]: rows in (kh, kw) order, one column per channel (Keras' kernel reshaped)
    exporter._mac_params(layer, rec, taps, n_chan)
