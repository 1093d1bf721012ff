"""`lepton-hls export-triton DIR OUT`: a Triton Inference Server model repository of the original model."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export-triton", help="write a Triton model repository (SavedModel + config.pbtxt with dynamic batching)",
    )
    p.add_argument("package", metavar="DIR", help="overlay package directory")
    p.add_argument("out", metavar="OUT", help="model repository directory (created)")
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--max-queue-delay-us", type=int, default=2000)
    p.add_argument("--preferred-batch-size", type=int, action="append", default=[])
    p.add_argument("--instance-kind", choices=("KIND_CPU", "KIND_GPU", "KIND_AUTO"), default=None,
                   help="Triton instance group kind (default: Triton's choice, a GPU when present)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from lepton_cloud.triton_export import export_triton

    e = export_triton(args.package, args.out, max_batch_size=args.max_batch_size,
                      max_queue_delay_us=args.max_queue_delay_us,
                      preferred_batch_sizes=tuple(args.preferred_batch_size), instance_kind=args.instance_kind,
                      overwrite=args.overwrite)
    print(f"lepton-hls export-triton: wrote {e.model_dir} (config.pbtxt, {e.savedmodel.relative_to(e.repository)})")
    print(f"  run: tritonserver --model-repository {e.repository.resolve()}")
    return 0
