"""lepton-hls check MODEL"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser(
        "check",
        help="list a model's layers and what each becomes; refuse what cannot be compiled (seconds, no compile)",
        description="Read the model's architecture, list each layer with its quantizers and the fixed-point type it "
        "will get, then load it with its weights (no HLS compile). Exit status 2 with one line naming the first layer "
        "that cannot become a verified accelerator. `build` runs the same check first.",
    )
    p.add_argument("model", nargs="?", help="zoo name, architecture .json, or full-model .h5")
    p.add_argument("--supported", action="store_true", help="print the supported layers and quantizers, and exit")
    p.add_argument("--weights", help="weights .h5 for a .json MODEL")
    p.add_argument("--config", help="YAML build configuration to check against the model")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.supported:
        from ..model_check import support_table_markdown

        print(support_table_markdown(), end="")
        return 0
    from ..build import check_spec, resolve_model
    from ..build_config import load_config
    from ..model_check import check_model

    if not args.model:
        from lepton_host.errors import LeptonError

        raise LeptonError("check needs a MODEL (zoo name, .json or .h5), or --supported")
    cfg = load_config(args.config) if args.config else None
    spec = resolve_model(args.model, args.weights)
    report = check_model(spec.files, io_type=cfg.io_type if cfg is not None else "io_parallel")
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    check_spec(spec, cfg)  # raises the one-line refusal (exit 2)
    from ..model_check import check_loaded
    from ..keras_io import load_keras
    from ..progress import stdout_to_stderr

    with stdout_to_stderr():
        model = load_keras(spec.files)  # the weights fit, and the rules that need shapes
    check_loaded(model)
    return 0


def print_report(report) -> None:
    rows = [("layer", "class", "quantizers", "type")]
    for c in report.layers:
        quant = ", ".join(f"{k}={v}" for k, v in c.quantizers.items()) or "-"
        rows.append((c.name, c.class_name, quant, f"REFUSED: {c.refusal}" if c.refusal else (c.result or "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r[:3], widths)) + "  " + r[3])
    if report.approximate:
        print(f"approximate (lookup tables; error measured by verify, shrunk by larger tables): "
              f"{', '.join(report.approximate)}")
    if not report.refused:
        print(f"{report.source}: every layer is supported")
