"""Moving a package to an edge node: one tar stream, written to disk as it arrives, unpacked without trust.

The sender packs exactly what the manifest lists (plus the manifest and its signature), so stray files in a build
folder never travel. The node receives into a hidden staging folder inside the model's folder (same file system,
so the final rename into `REPO/<model>/<N>/` is atomic), refuses a stream over its size limit as soon as it
passes it, and unpacks regular files only, each inside the staging folder; the caller then checks signature and
hashes before the version exists for anybody.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from .errors import LeptonError
from .manifest import MANIFEST_NAME, load_manifest
from .signing import SIGNATURE_NAME

STAGING_PREFIX = ".incoming-"
CONTENT_TYPE = "application/x-tar"
DEFAULT_MAX_BYTES = 512 << 20  # a package with bitstream and emulation library is tens of MiB


class TransferError(LeptonError):
    """An upload was cut short or is not a package."""


class UploadTooLarge(TransferError):
    """An upload passed the node's size limit."""


def pack_package(package_dir: str | os.PathLike, out) -> list[str]:
    """Write `package_dir` as an uncompressed tar to `out` (a path or binary file object); -> the names packed.
    The package is checked against its manifest first: sending a broken package would only be refused there."""
    root = Path(package_dir)
    manifest = load_manifest(root, verify=True)
    names = [MANIFEST_NAME] + ([SIGNATURE_NAME] if (root / SIGNATURE_NAME).is_file() else []) + sorted(manifest.artifacts)
    kwargs = {"name": str(out)} if isinstance(out, (str, os.PathLike)) else {"fileobj": out}
    with tarfile.open(mode="w", format=tarfile.PAX_FORMAT, **kwargs) as tar:
        for rel in names:
            # dereference: an artifact may be a symlink in the build folder; the node must get its bytes.
            info = tar.gettarinfo(str(root / rel), arcname=rel)
            if info.issym() or info.islnk():
                info = tar.gettarinfo(str((root / rel).resolve()), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(root / rel, "rb") as f:
                tar.addfile(info, f)
    return names


@dataclass
class Staging:
    """A hidden folder in the model's folder holding one upload until it is admitted or thrown away."""

    path: Path

    @classmethod
    def create(cls, model_dir: str | os.PathLike) -> Staging:
        d = Path(model_dir)
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        path.mkdir()
        return cls(path)

    @property
    def tar_path(self) -> Path:
        return self.path / "upload.tar"

    @property
    def package_path(self) -> Path:
        return self.path / "package"

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


async def receive(chunks: AsyncIterator[bytes], staging: Staging, max_bytes: int = DEFAULT_MAX_BYTES,
                  expected_bytes: int | None = None) -> int:
    """Write the upload to disk chunk by chunk; -> bytes received. Refuses as soon as the stream passes
    `max_bytes`, and a stream shorter than its declared length (a dropped connection)."""
    if expected_bytes is not None and expected_bytes > max_bytes:
        raise UploadTooLarge(f"the upload declares {expected_bytes} bytes; this node accepts at most {max_bytes} "
                            "(start it with a larger --max-upload-mb)")
    n = 0
    with open(staging.tar_path, "wb") as f:
        async for chunk in chunks:
            n += len(chunk)
            if n > max_bytes:
                raise UploadTooLarge(f"upload passed {max_bytes} bytes, this node's limit (--max-upload-mb); refused")
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    if expected_bytes is not None and n != expected_bytes:
        raise TransferError(f"upload cut short: {n} of {expected_bytes} bytes arrived; push it again")
    return n


def unpack(staging: Staging, max_files: int = 10000) -> Path:
    """Unpack the received tar into `staging.package_path`, regular files and folders only, each within it."""
    dest = staging.package_path
    dest.mkdir()
    try:
        tar = tarfile.open(staging.tar_path, mode="r:")
    except tarfile.TarError as e:
        raise TransferError(f"the upload is not a tar archive ({e}); send packages with `lepton-hls push`") from None
    with tar:
        members = tar.getmembers()
        if len(members) > max_files:
            raise TransferError(f"the upload holds {len(members)} entries; a package has at most {max_files}")
        for m in members:
            rel = Path(m.name)
            if rel.is_absolute() or ".." in rel.parts or not m.name or m.name.startswith("/"):
                raise TransferError(f"the upload names {m.name!r}, outside the package; refused")
            if not (m.isfile() or m.isdir()):
                raise TransferError(f"the upload holds {m.name!r}, which is not a regular file; refused")
            target = dest / rel
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            with open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            os.chmod(target, 0o755 if m.mode & 0o111 else 0o644)
    staging.tar_path.unlink()
    if not (dest / MANIFEST_NAME).is_file():
        raise TransferError(f"the upload holds no {MANIFEST_NAME}: not a lepton-hls package")
    return dest
