"""`lepton-hls keygen --out KEYDIR [--name NAME]`: make an Ed25519 key pair for signing packages."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "keygen",
        help="make an Ed25519 key pair for signing packages",
        description="Writes KEYDIR/NAME.key (private, mode 0600: keep it on the build machine) and KEYDIR/NAME.pub "
        "(copy it into each edge node's --trusted-keys folder). An existing key is never overwritten.",
    )
    p.add_argument("--out", required=True, metavar="KEYDIR", help="folder for the key files (created if missing)")
    p.add_argument("--name", default="signer", help="key name, used for the file names and as the signer shown "
                   "by the edge (default: signer)")
    p.set_defaults(func=run)


def run(args) -> int:
    from lepton_host.signing import generate_key, key_id, load_public_key

    priv, pub = generate_key(args.out, args.name)
    print(f"lepton-hls keygen: key {key_id(load_public_key(pub))}")
    print(f"  private: {priv}  (sign with: lepton-hls sign DIR --key {priv})")
    print(f"  public:  {pub}  (trust on a node with: lepton-hls serve ... --trusted-keys {pub.parent})")
    return 0
