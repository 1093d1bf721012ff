"""Package signatures: real Ed25519 keys from the `cryptography` library, real packages, real tampering."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from lepton_host.errors import ChecksumError
from lepton_host.manifest import load_manifest
from lepton_host.signing import (SIGNATURE_NAME, SignatureError, SigningKeyError, generate_key, key_id,
                                 load_private_key, load_public_key, load_trusted_keys, sign_package, verify_package)


@pytest.fixture
def pkg(jet_package, tmp_path):
    out = tmp_path / "pkg"
    shutil.copytree(jet_package, out)
    return out


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    priv, pub = generate_key(folder, "builder")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    shutil.copy(pub, trusted)
    return priv, trusted


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lepton_hls.cli", *map(str, args)], capture_output=True, text=True)


def test_signed_package_verifies_and_names_its_signer(pkg, keys):
    priv, trusted = keys
    sig = sign_package(pkg, priv)
    got = verify_package(pkg, load_trusted_keys(trusted))
    assert got == sig
    assert got.signer == "builder"
    assert got.key_id == key_id(load_public_key(trusted / "builder.pub"))
    load_manifest(pkg, verify=True)  # signature.json is beside the manifest, not an unlisted artifact


def test_private_key_is_not_readable_by_others_and_never_overwritten(tmp_path):
    priv, pub = generate_key(tmp_path, "k")
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    before = priv.read_bytes()
    with pytest.raises(SigningKeyError, match="already exists"):
        generate_key(tmp_path, "k")
    assert priv.read_bytes() == before


def test_unsigned_package_is_refused(pkg, keys):
    with pytest.raises(SignatureError, match="not signed"):
        verify_package(pkg, load_trusted_keys(keys[1]))


def test_package_signed_by_an_untrusted_key_is_refused(pkg, keys, tmp_path):
    other, _ = generate_key(tmp_path / "other", "stranger")
    sign_package(pkg, other)
    with pytest.raises(SignatureError, match="does not trust"):
        verify_package(pkg, load_trusted_keys(keys[1]))


def test_manifest_changed_after_signing_is_refused(pkg, keys):
    priv, trusted = keys
    sign_package(pkg, priv)
    m = load_manifest(pkg)
    # a legitimate re-save, as recording a report does, still voids the signature
    m.created = "2000-01-01T00:00:00+00:00"
    m.save(pkg)
    with pytest.raises(SignatureError, match="changed after signing"):
        verify_package(pkg, load_trusted_keys(trusted))


def test_forged_signature_bytes_are_refused(pkg, keys):
    priv, trusted = keys
    sign_package(pkg, priv)
    doc = json.loads((pkg / SIGNATURE_NAME).read_text())
    raw = bytearray(base64.b64decode(doc["signature"]))
    raw[0] ^= 1
    doc["signature"] = base64.b64encode(bytes(raw)).decode()
    (pkg / SIGNATURE_NAME).write_text(json.dumps(doc))
    with pytest.raises(SignatureError, match="does not match"):
        verify_package(pkg, load_trusted_keys(trusted))


def test_tampered_artifact_is_caught_by_the_hashes_the_signature_covers(pkg, keys):
    priv, trusted = keys
    sign_package(pkg, priv)
    weights = next(p for p in sorted((pkg / "engine").rglob("*")) if p.is_file())
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    verify_package(pkg, load_trusted_keys(trusted))  # the manifest is intact ...
    with pytest.raises(ChecksumError):  # ... and it no longer describes the files
        load_manifest(pkg, verify=True)


def test_a_package_that_does_not_match_its_manifest_is_not_signed(pkg, keys):
    weights = next(p for p in sorted((pkg / "engine").rglob("*")) if p.is_file())
    weights.write_bytes(weights.read_bytes() + b"\0")
    with pytest.raises(ChecksumError):
        sign_package(pkg, keys[0])
    assert not (pkg / SIGNATURE_NAME).exists()


def test_trust_folder_without_keys_is_an_error(tmp_path):
    with pytest.raises(SigningKeyError, match="no \\*.pub"):
        load_trusted_keys(tmp_path)
    with pytest.raises(SigningKeyError, match="does not exist"):
        load_trusted_keys(tmp_path / "missing")


def test_a_non_ed25519_key_is_refused_by_name(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    k = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "ec.key"
    path.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    with pytest.raises(SigningKeyError, match="Ed25519"):
        load_private_key(path)


def test_keygen_and_sign_from_the_command_line(pkg, tmp_path):
    r = _cli("keygen", "--out", tmp_path / "k", "--name", "ci")
    assert r.returncode == 0, r.stderr
    r = _cli("sign", pkg, "--key", tmp_path / "k" / "ci.key")
    assert r.returncode == 0, r.stderr
    assert verify_package(pkg, load_trusted_keys(tmp_path / "k")).signer == "ci"
    r = _cli("sign", pkg, "--key", tmp_path / "k" / "nope.key")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
