"""`lepton-hls serving-policy DIR POLICY.json`: install a routing policy into a package as `DIR/serving.json`,
recorded with its sha256 in the manifest (the gateway refuses a serving.json the manifest does not list, since it
can switch the input range check off)."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serving-policy",
        help="install a routing policy (serving.json) into a package and record it in the manifest",
        description="POLICY.json holds {\"routing\": {...}} with RoutingPolicy keys (mode, latency_budget_s, "
        "check_range, confidence_threshold, error_threshold, degrade_to_edge). It is checked, copied to "
        "DIR/serving.json and hashed into DIR/manifest.json; `serve` then reads it as its defaults.",
    )
    p.add_argument("package", metavar="DIR", help="overlay package directory")
    p.add_argument("policy", metavar="POLICY.json", help="the routing policy to install")
    p.set_defaults(func=run)


def run(args) -> int:
    from lepton_host.serving.errors import BadRequest

    src = Path(args.policy)
    if not src.is_file():
        raise BadRequest(f"policy file {src} does not exist")
    try:
        body = json.loads(src.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"{src} is not valid JSON: {e}") from None
    routing = body.get("routing") if isinstance(body, dict) else None
    if not isinstance(routing, dict):
        raise BadRequest(f"{src} must hold a JSON object with a 'routing' object")
    policy = install_policy(args.package, routing, where=str(src))
    print(f"lepton-hls serving-policy: {Path(args.package) / 'serving.json'} recorded in the manifest: "
          f"{json.dumps(policy.to_dict())}")
    return 0


def install_policy(package, routing: dict, where: str = "the policy", extra: dict | None = None):
    """Check `routing` (RoutingPolicy keys), write it as the package's serving.json (with `extra` sections
    beside it, e.g. the calibration that chose it) and record its hash in the manifest -> the RoutingPolicy."""
    from lepton_host.manifest import LOADED, POLICY_NAME, load_manifest

    from lepton_host.serving.errors import BadRequest
    from lepton_host.serving.routing import RoutingPolicy

    from lepton_hls.report_record import record_report

    pkg = Path(package)
    manifest = load_manifest(pkg, verify=False)
    # Everything but the policy being replaced must still match: this records one file, it does not bless
    # whatever else changed in the package.
    others = [rel for rel in manifest.artifacts if rel != POLICY_NAME]
    manifest.verify_artifacts(pkg, only=others + [p.split("*")[0] for p in LOADED if p != POLICY_NAME])
    known = {f.name for f in fields(RoutingPolicy)}
    unknown = sorted(set(routing) - known)
    if unknown:
        raise BadRequest(f"{where}: unknown routing keys {unknown}; known: {sorted(known)}")
    try:
        policy = RoutingPolicy(**routing)
    except TypeError as e:
        raise BadRequest(f"{where}: {e}") from None
    # The policy is a file of the package, not a tool's report: recorded with its hash, no summary.
    record_report(pkg, manifest, None, None, report_file=POLICY_NAME, report={"routing": routing, **(extra or {})})
    return policy
