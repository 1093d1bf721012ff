"""`lepton-hls export-onnx DIR --out FILE.onnx`: the cloud model (the package's own, or --model MODEL as
`lepton-hls cloud` takes it) as one ONNX file that takes the gateway's raw features, checked against TensorFlow."""

from __future__ import annotations

from .cloud import add_model_options


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export-onnx", help="write the cloud model as ONNX (raw features in, preprocessing inside the graph)",
        description="Convert the model `lepton-hls cloud DIR` serves to one ONNX file for onnxruntime servers "
        "(Triton's onnxruntime backend, the Ray Serve tier). The file takes the gateway's raw features under the "
        "package's tensor names and states them in its metadata; onnxruntime's answers are compared with "
        "TensorFlow's before it is written.",
    )
    p.add_argument("package", metavar="DIR", help="overlay package directory (served name, tensors, contract)")
    p.add_argument("--out", metavar="FILE.onnx", required=True, help="the ONNX file to write")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--overwrite", action="store_true")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from lepton_cloud.onnx_export import OPSET, export_onnx

    from .cloud import model_choice

    e = export_onnx(args.package, args.out, model_choice(args), opset=args.opset or OPSET, overwrite=args.overwrite)
    c = e.model.contract
    print(f"lepton-hls export-onnx: wrote {e.path} ({c.source}, opset {e.model.opset}, {len(e.model.data)} bytes)")
    print(f"  serves {c.model_name}: {c.input_name} [N, {', '.join(map(str, c.input_shape))}] raw features -> "
          f"{c.output_name} [N, {', '.join(map(str, c.output_shape))}]")
    print(f"  {e.model.check.summary()}")
    return 0
