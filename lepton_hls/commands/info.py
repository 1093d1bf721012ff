"""`lepton-hls info DIR|REPO|URL`: what a package holds, what a model repository offers, or what an edge node
serves (versions, signer, hashes, self-test, traffic split). Board side only: numpy, httpx."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .serve import TOKEN_ENV


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "info", help="show a package, a model repository, or what an edge node serves",
        description="DIR: a package (model, tensors, formats, signer, artifacts checked, self-test on the emulator). "
        "REPO: each model's versions and version policy. URL: an edge node's models, versions, signers, self-tests, "
        f"traffic split and recent lifecycle events (its token from --token or {TOKEN_ENV}).",
    )
    p.add_argument("where", metavar="DIR|REPO|URL")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-self-test", action="store_true", help="DIR: skip the golden-vector self-test")
    p.add_argument("--token", default=None, help=f"bearer token for a URL (prefer {TOKEN_ENV})")
    p.set_defaults(func=run)


def run(args) -> int:
    where = args.where
    if where.startswith(("http://", "https://")):
        info = node_info(where, args.token or os.environ.get(TOKEN_ENV))
    elif (Path(where) / "manifest.json").is_file():
        info = package_info(Path(where), self_test=not args.no_self_test)
    else:
        info = repository_info(Path(where))
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        _print(info)
    return 0


def package_info(pkg: Path, self_test: bool = True) -> dict:
    from lepton_host.errors import LeptonError
    from lepton_host.manifest import load_manifest
    from lepton_host.signing import read_signature

    manifest = load_manifest(pkg, verify=False)
    try:
        manifest.verify_artifacts(pkg)
        artifacts = f"{len(manifest.artifacts)} files match the manifest"
    except LeptonError as e:
        artifacts = f"MISMATCH: {e}"
    try:
        sig = read_signature(pkg)
        signer = "unsigned" if sig is None else f"{sig.signer} (key {sig.key_id}, {sig.signed})"
    except LeptonError as e:
        signer = f"unreadable signature: {e}"
    out = {
        "package": str(pkg), "model": manifest.model.name, "source": manifest.model.source,
        "model_sha256": manifest.model.sha256, "task": manifest.model.task,
        "input": f"{manifest.input.name} {list(manifest.input.shape)} {manifest.input.format}",
        "output": f"{manifest.output.name} {list(manifest.output.shape)} {manifest.output.format}",
        "built": manifest.created, "tool_version": manifest.tool_version, "signer": signer, "artifacts": artifacts,
        "verification": manifest.verification.summary() if manifest.verification.recorded else "not recorded",
        "overlay": "none" if manifest.overlay is None else (
            f"{manifest.overlay.board}, bitstream {'built' if manifest.overlay.built else 'not built'}"),
    }
    if self_test and not artifacts.startswith("MISMATCH"):
        out["self_test"] = _self_test(pkg)
    return out


def _self_test(pkg: Path) -> str:
    from lepton_host.backends import EmulatorBackend
    from lepton_host.errors import LeptonError

    try:
        backend = EmulatorBackend(pkg)
    except LeptonError as e:
        return f"not run: {e}"
    try:
        r = backend.self_test()
    finally:
        backend.close()
    verdict = {True: "passed", False: "FAILED", None: "not run"}[r.passed]
    return f"{verdict} on the emulator: {r.detail}"


def repository_info(repo: Path) -> dict:
    from lepton_host.model_repository import scan_repository
    from lepton_host.signing import read_signature

    models = {}
    for name, entry in scan_repository(repo).items():
        versions = {}
        for v in entry.versions:
            sig = read_signature(entry.version_dir(v))
            versions[str(v)] = "unsigned" if sig is None else f"signed by {sig.signer} ({sig.key_id})"
        models[name] = {"policy": entry.policy.to_config(), "versions": versions, "ignored": list(entry.ignored),
                        "would_serve": entry.policy.choose(list(entry.versions))}
    return {"repository": str(repo), "models": models}


def node_info(url: str, token: str | None) -> dict:
    import httpx

    from lepton_host.errors import LeptonError

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = url.rstrip("/")
    try:
        with httpx.Client(timeout=10.0, headers=headers) as c:
            r = c.get(base + "/v2/repository/info")
            if r.status_code == 404:  # a gateway serving one package
                meta = c.get(base + "/v2").json()
                return {"node": base, "server": meta, "note": "serves one package (no model repository)"}
            if r.status_code >= 400:
                raise LeptonError(f"{base} answered {r.status_code}: {r.text[:300]}")
            return {"node": base, **r.json()}
    except httpx.HTTPError as e:
        raise LeptonError(f"cannot reach {base}: {type(e).__name__}: {e}") from None


def _print(info: dict, indent: int = 0) -> None:
    pad = "  " * indent
    for k, v in info.items():
        if isinstance(v, dict):
            print(f"{pad}{k}:")
            _print(v, indent + 1)
        elif isinstance(v, list):
            print(f"{pad}{k}:" + ("" if v else " none"))
            for item in v:
                if isinstance(item, dict):
                    print(f"{pad}  -")
                    _print(item, indent + 2)
                else:
                    print(f"{pad}  - {item}")
        else:
            print(f"{pad}{k}: {v}")
