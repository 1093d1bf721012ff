"""lepton-hls demo"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="build, verify and serve the embedded default models (no board, no vendor tools)")
    p.add_argument("--out", default="out/demo", help="where the demo's packages and results go (default out/demo)")
    p.add_argument("--samples", type=int, default=2000, help="verification samples per input set")
    p.add_argument("--no-serving", action="store_true", help="stop after build and verification")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import run_demo

    result = run_demo(args.out, samples=args.samples, serving=not args.no_serving)
    return 0 if all(r["verdict"] == "PASS" for r in result["models"]) else 1
