"""`lepton-hls export-triton DIR OUT`: a Triton Inference Server model repository of the cloud model
(onnxruntime backend for GPU/CPU fleets, or the original TensorFlow SavedModel)."""

from __future__ import annotations

from .cloud import add_model_options


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export-triton", help="write a Triton model repository (model.onnx or SavedModel + config.pbtxt with "
        "dynamic batching)",
        description="Write a Triton model repository that takes the gateway's raw features under the package's "
        "tensor names. --backend onnxruntime (recommended: Triton's onnxruntime backend runs it on GPUs and CPUs) "
        "converts the cloud model to ONNX and checks it against TensorFlow; --backend tensorflow writes the "
        "package's own model as a SavedModel.",
    )
    p.add_argument("package", metavar="DIR", help="overlay package directory")
    p.add_argument("out", metavar="OUT", help="model repository directory (created)")
    p.add_argument("--backend", choices=("tensorflow", "onnxruntime"), default="tensorflow",
                   help="Triton backend the repository is for (default tensorflow, the SavedModel)")
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--max-queue-delay-us", type=int, default=2000)
    p.add_argument("--preferred-batch-size", type=int, action="append", default=[])
    p.add_argument("--instance-kind", choices=("KIND_CPU", "KIND_GPU", "KIND_AUTO"), default=None,
                   help="Triton instance group kind (default: Triton's choice, a GPU when present)")
    p.add_argument("--instance-count", type=int, default=1, help="model instances per device of that kind")
    p.add_argument("--overwrite", action="store_true")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from lepton_cloud.triton_export import export_triton

    from .cloud import model_choice

    e = export_triton(args.package, args.out, max_batch_size=args.max_batch_size,
                      max_queue_delay_us=args.max_queue_delay_us,
                      preferred_batch_sizes=tuple(args.preferred_batch_size), instance_kind=args.instance_kind,
                      overwrite=args.overwrite, backend=args.backend, instance_count=args.instance_count,
                      choice=model_choice(args))
    print(f"lepton-hls export-triton: wrote {e.model_dir} (config.pbtxt, {e.model_path.relative_to(e.repository)})")
    if e.note:
        print(f"  {e.note}")
    print(f"  run: tritonserver --model-repository {e.repository.resolve()}")
    return 0
