"""`lepton-hls push DIR --to URL [--canary PERCENT]`: send a signed package to an edge node, which stores it as the
model's next version, checks it and serves it (or first a share of traffic, with --canary)."""

from __future__ import annotations

import os

from .serve import TOKEN_ENV

PUSH_PATH = "/v2/repository/models/{model}/push"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "push",
        help="send a signed package to an edge node as the model's next version",
        description="The node stores the upload (streamed to disk, size-limited), checks its signature and hashes, "
        "loads it and runs its golden-vector self-test, then switches to it; any failure keeps the serving version "
        f"and is reported here. The node's token comes from --token or {TOKEN_ENV}.",
    )
    p.add_argument("package", metavar="DIR", help="signed overlay package (lepton-hls sign DIR --key KEY)")
    p.add_argument("--to", required=True, metavar="URL", help="edge node, e.g. http://10.0.0.7:8000")
    p.add_argument("--model", default=None, help="model name on the node (default: the package's own)")
    p.add_argument("--canary", type=float, default=None, metavar="PERCENT",
                   help="send this share of traffic (0-100) to the new version first; the node promotes it after its "
                   "soak period or rolls it back by itself")
    p.add_argument("--token", default=None, help=f"bearer token (prefer the {TOKEN_ENV} environment variable)")
    p.add_argument("--timeout-s", type=float, default=300.0,
                   help="how long to wait for the node to store, check and load the version")
    p.set_defaults(func=run)


def run(args) -> int:
    import tempfile

    from lepton_host.errors import LeptonError
    from lepton_host.manifest import load_manifest
    from lepton_host.package_transfer import CONTENT_TYPE, pack_package

    if args.canary is not None and not 0 < args.canary < 100:
        raise LeptonError(f"--canary {args.canary:g}: give a share of traffic between 0 and 100 (exclusive)")
    manifest = load_manifest(args.package, verify=True)
    model = args.model or manifest.model.name
    token = args.token or os.environ.get(TOKEN_ENV)
    headers = {"Content-Type": CONTENT_TYPE}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    params = {} if args.canary is None else {"canary": f"{args.canary:g}"}
    url = args.to.rstrip("/") + PUSH_PATH.format(model=model)
    with tempfile.TemporaryFile() as tar:
        names = pack_package(args.package, tar)
        size = tar.tell()
        tar.seek(0)
        headers["Content-Length"] = str(size)
        print(f"lepton-hls push: {len(names)} files, {size / 1e6:.1f} MB -> {url}", flush=True)
        response = _post(url, tar, headers, params, args.timeout_s)
    body = _json(response)
    if response.status_code >= 400:
        raise LeptonError(f"{args.to} refused {args.package} ({response.status_code}): "
                          f"{body.get('error', response.text[:300])}")
    state = body.get("state", "?")
    print(f"lepton-hls push: {model} version {body.get('version')} {state}"
          + (f" ({body['detail']})" if body.get("detail") else ""))
    return 0


def _post(url, tar, headers, params, timeout_s):
    import httpx

    from lepton_host.errors import LeptonError

    try:
        return httpx.post(url, content=_chunks(tar), headers=headers, params=params,
                          timeout=httpx.Timeout(timeout_s, connect=10.0))
    except httpx.HTTPError as e:
        raise LeptonError(f"cannot push to {url}: {type(e).__name__}: {e}") from None


def _chunks(f, size: int = 1 << 20):
    while chunk := f.read(size):
        yield chunk


def _json(response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
