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
    from lepton_host.manifest import LOADED, POLICY_NAME, load_manifest

    from lepton_host.serving.errors import BadRequest
    from lepton_host.serving.routing import RoutingPolicy

    from lepton_hls.report_record import record_report

    pkg, src = Path(args.package), Path(args.policy)
    manifest = load_manifest(pkg, verify=False)
    # Everything but the policy being replaced must still match: this command records one file, it does not
    # bless whatever else changed in the package.
    others = [rel for rel in manifest.artifacts if rel != POLICY_NAME]
    manifest.verify_artifacts(pkg, only=others + [p.split("*")[0] for p in LOADED if p != POLICY_NAME])
    if not src.is_file():
        raise BadRequest(f"policy file {src} does not exist")
    try:
        body = json.loads(src.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"{src} is not valid JSON: {e}") from None
    routing = body.get("routing") if isinstance(body, dict) else None
    if not isinstance(routing, dict):
        raise BadRequest(f"{src} must hold a JSON object with a 'routing' object")
    known = {f.name for f in fields(RoutingPolicy)}
    unknown = sorted(set(routing) - known)
    if unknown:
        raise BadRequest(f"{src}: unknown routing keys {unknown}; known: {sorted(known)}")
    try:
        policy = RoutingPolicy(**routing)
    except TypeError as e:
        raise BadRequest(f"{src}: {e}") from None
    dest = pkg / POLICY_NAME
    # The policy is a file of the package, not a tool's report: recorded with its hash, no summary.
    record_report(pkg, manifest, None, None, report_file=POLICY_NAME, report={"routing": routing})
    print(f"lepton-hls serving-policy: {dest} recorded in the manifest: {json.dumps(policy.to_dict())}")
    return 0
