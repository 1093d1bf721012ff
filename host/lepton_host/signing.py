"""Who built a package: an Ed25519 signature over its manifest.

The manifest already holds the sha256 of every artifact, so one signature over the manifest's bytes, checked
together with those hashes, covers the whole package. The signature lives beside the manifest in
`signature.json` (it cannot sit inside what it signs); any later change to the manifest, such as recording a new
report, voids it until the package is signed again.

Keys are files: `NAME.key` (PKCS#8 PEM, private, mode 0600) and `NAME.pub` (SubjectPublicKeyInfo PEM). An edge node
trusts the `.pub` files in one folder. A key is known by its id, the first 16 hex digits of the sha256 of its raw
32 public bytes, which is what logs and `info` show.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import LeptonError
from .manifest import MANIFEST_NAME, load_manifest

SIGNATURE_NAME = "signature.json"
ALGORITHM = "ed25519"
# Domain separation: a signature made for a package cannot be replayed as a signature over anything else.
_CONTEXT = b"lepton-hls package manifest v1\n"
PRIVATE_SUFFIX, PUBLIC_SUFFIX = ".key", ".pub"


class SignatureError(LeptonError):
    """A package is unsigned, signed by a key the node does not trust, or its signature does not match."""


class SigningKeyError(LeptonError):
    """A key file is missing, unreadable or not an Ed25519 key."""


@dataclass(frozen=True)
class Signature:
    """The contents of `signature.json`."""

    algorithm: str
    key_id: str
    signer: str
    signed: str  # ISO 8601, UTC
    signature: str  # base64 of the 64-byte Ed25519 signature

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d, where: str) -> Signature:
        if not isinstance(d, dict):
            raise SignatureError(f"{where} must hold a JSON object")
        missing = [k for k in ("algorithm", "key_id", "signer", "signed", "signature") if not isinstance(d.get(k), str)]
        if missing:
            raise SignatureError(f"{where} lacks {', '.join(missing)} (or they are not strings): sign the package "
                                 "again with `lepton-hls sign`")
        if d["algorithm"] != ALGORITHM:
            raise SignatureError(f"{where} uses {d['algorithm']!r}; this node checks {ALGORITHM} signatures only")
        return cls(**{k: d[k] for k in ("algorithm", "key_id", "signer", "signed", "signature")})


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    name: str  # the file's stem: who the key belongs to, as the operator named it
    public_key: object  # cryptography's Ed25519PublicKey


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise LeptonError("package signatures need the `cryptography` library: pip install 'lepton-hls[board]'") from None
    return ed25519, serialization, InvalidSignature


def key_id(public_key) -> str:
    _, serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key(out_dir: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Write a new key pair `out_dir/name.key` and `out_dir/name.pub`; never overwrites an existing key."""
    ed25519, serialization, _ = _crypto()
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise SigningKeyError(f"key name {name!r} must be a plain file name (letters, digits, - or _)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out / (name + PRIVATE_SUFFIX), out / (name + PUBLIC_SUFFIX)
    for p in (priv_path, pub_path):
        if p.exists():
            raise SigningKeyError(f"{p} already exists: choose another --name or move the old key away (a lost private key "
                            "cannot be recovered, so it is never overwritten)")
    key = ed25519.Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    # Created 0600 from the start: the private key is never readable by others, not even briefly.
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(priv)
    pub_path.write_bytes(pub)
    return priv_path, pub_path


def load_private_key(path: str | os.PathLike):
    ed25519, serialization, _ = _crypto()
    p = Path(path)
    try:
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
    except FileNotFoundError:
        raise SigningKeyError(f"private key {p} does not exist (make one with `lepton-hls keygen --out DIR`)") from None
    except (ValueError, TypeError) as e:
        raise SigningKeyError(f"{p} is not an unencrypted PEM private key: {e}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SigningKeyError(f"{p} holds a {type(key).__name__}; lepton-hls signs with Ed25519 keys only")
    return key


def load_public_key(path: str | os.PathLike):
    ed25519, serialization, _ = _crypto()
    p = Path(path)
    try:
        key = serialization.load_pem_public_key(p.read_bytes())
    except FileNotFoundError:
        raise SigningKeyError(f"public key {p} does not exist") from None
    except (ValueError, TypeError) as e:
        raise SigningKeyError(f"{p} is not a PEM public key: {e}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SigningKeyError(f"{p} holds a {type(key).__name__}; lepton-hls trusts Ed25519 keys only")
    return key


def load_trusted_keys(folder: str | os.PathLike) -> dict[str, TrustedKey]:
    """Every `*.pub` in `folder`, by key id. An empty or missing folder is an error: a node that trusts nobody would
    refuse every package, which is never what was meant."""
    d = Path(folder)
    if not d.is_dir():
        raise SigningKeyError(f"trusted-keys folder {d} does not exist")
    keys = {}
    for p in sorted(d.glob("*" + PUBLIC_SUFFIX)):
        pub = load_public_key(p)
        keys[key_id(pub)] = TrustedKey(key_id(pub), p.stem, pub)
    if not keys:
        raise SigningKeyError(f"{d} holds no *{PUBLIC_SUFFIX} public keys: copy the signer's .pub file there")
    return keys


def sign_package(package_dir: str | os.PathLike, private_key_path: str | os.PathLike,
                 signer: str | None = None) -> Signature:
    """Sign `package_dir`'s manifest after checking every artifact against it (a signature vouches for the files
    as they are, so a package that does not match its own manifest is refused, not signed)."""
    root = Path(package_dir)
    load_manifest(root, verify=True)
    key = load_private_key(private_key_path)
    body = (root / MANIFEST_NAME).read_bytes()
    sig = Signature(
        algorithm=ALGORITHM,
        key_id=key_id(key.public_key()),
        signer=signer or Path(private_key_path).stem,
        signed=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        signature=base64.b64encode(key.sign(_CONTEXT + body)).decode(),
    )
    tmp = root / (SIGNATURE_NAME + ".tmp")
    tmp.write_text(json.dumps(sig.to_dict(), indent=2) + "\n")
    os.replace(tmp, root / SIGNATURE_NAME)
    return sig


def read_signature(package_dir: str | os.PathLike) -> Signature | None:
    path = Path(package_dir) / SIGNATURE_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SignatureError(f"{path} is not valid JSON: {e}") from None
    return Signature.from_dict(data, str(path))


def verify_package(package_dir: str | os.PathLike, trusted: dict[str, TrustedKey]) -> Signature:
    """Check that `package_dir` is signed by one of `trusted` and that its manifest is the one signed; the caller
    still checks the artifacts against the manifest (load_manifest(verify=True))."""
    _, _, InvalidSignature = _crypto()
    root = Path(package_dir)
    sig = read_signature(root)
    if sig is None:
        raise SignatureError(f"{root} is not signed (no {SIGNATURE_NAME}): sign it with `lepton-hls sign {root} "
                             "--key KEY`, or start the node with --allow-unsigned for development")
    key = trusted.get(sig.key_id)
    if key is None:
        raise SignatureError(f"{root} is signed by key {sig.key_id} ({sig.signer!r}), which this node does not trust; "
                             f"trusted: {', '.join(sorted(trusted)) or 'none'}")
    try:
        raw = base64.b64decode(sig.signature, validate=True)
    except ValueError:
        raise SignatureError(f"{root / SIGNATURE_NAME}: the signature is not base64") from None
    body = (root / MANIFEST_NAME).read_bytes() if (root / MANIFEST_NAME).is_file() else b""
    try:
        key.public_key.verify(raw, _CONTEXT + body)
    except InvalidSignature:
        raise SignatureError(f"{root}: the signature by {key.name!r} ({sig.key_id}) does not match {MANIFEST_NAME}: "
                             "the manifest changed after signing (a report recorded, or tampering); sign it again "
                             "or rebuild") from None
    return sig
