"""`lepton-hls sign DIR --key KEYDIR/NAME.key`: sign a package so edge nodes that trust the key accept it."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sign",
        help="sign a package's manifest (which hashes every artifact) with an Ed25519 key",
        description="Checks every artifact against the manifest, then writes DIR/signature.json. Any later change to "
        "the manifest (recording a report, installing a serving policy) voids the signature: sign last.",
    )
    p.add_argument("package", metavar="DIR", help="overlay package directory")
    p.add_argument("--key", required=True, metavar="KEY", help="private key file from `lepton-hls keygen`")
    p.add_argument("--signer", default=None, help="name recorded as the signer (default: the key file's name)")
    p.set_defaults(func=run)


def run(args) -> int:
    from lepton_host.signing import sign_package

    sig = sign_package(args.package, args.key, signer=args.signer)
    print(f"lepton-hls sign: {args.package} signed by {sig.signer!r} (key {sig.key_id}) at {sig.signed}")
    return 0
