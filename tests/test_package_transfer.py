"""Packing a package for an edge node, and receiving one there without trusting it."""

from __future__ import annotations

import asyncio
import io
import shutil
import tarfile

import pytest

from lepton_host.manifest import load_manifest
from lepton_host.model_repository import add_version
from lepton_host.package_transfer import Staging, TransferError, pack_package, receive, unpack


async def _chunks(data: bytes, size: int = 7000):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def _receive(data: bytes, staging: Staging, **kw) -> int:
    return asyncio.run(receive(_chunks(data), staging, **kw))


def test_round_trip_gives_the_same_verified_package_and_only_its_listed_files(jet_package, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(jet_package, src)
    (src / "scratch.log").write_text("not part of the package")
    buf = io.BytesIO()
    names = pack_package(src, buf)
    assert "scratch.log" not in names and "manifest.json" in names
    staging = Staging.create(tmp_path / "repo" / "jet")
    assert _receive(buf.getvalue(), staging) == len(buf.getvalue())
    pkg = unpack(staging)
    m = load_manifest(pkg, verify=True)
    assert m.artifacts == load_manifest(src).artifacts
    assert not (pkg / "scratch.log").exists()
    assert add_version(tmp_path / "repo" / "jet", pkg) == 1
    assert load_manifest(tmp_path / "repo" / "jet" / "1", verify=True)
    staging.discard()
    assert not staging.path.exists()


def test_versions_are_numbered_after_the_highest(tmp_path):
    model = tmp_path / "m"
    (model / "3").mkdir(parents=True)
    for want in (4, 5):
        p = tmp_path / f"p{want}"
        p.mkdir()
        (p / "f").write_text("x")
        assert add_version(model, p) == want
        assert (model / str(want) / "f").is_file()


def test_upload_over_the_limit_is_refused_while_streaming(tmp_path):
    staging = Staging.create(tmp_path / "m")
    with pytest.raises(TransferError, match="limit"):
        _receive(b"x" * 50_000, staging, max_bytes=20_000)
    assert staging.tar_path.stat().st_size <= 20_000  # it stopped writing at the limit
    with pytest.raises(TransferError, match="declares"):
        _receive(b"x", Staging.create(tmp_path / "m"), max_bytes=10, expected_bytes=11)


def test_short_upload_is_refused(tmp_path):
    with pytest.raises(TransferError, match="cut short"):
        _receive(b"x" * 100, Staging.create(tmp_path / "m"), expected_bytes=200)


def _tar(**members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, spec in members.items():
            info = tarfile.TarInfo(spec.get("name", name))
            if spec.get("link"):
                info.type, info.linkname = tarfile.SYMTYPE, spec["link"]
                tar.addfile(info)
            else:
                data = spec.get("data", b"x")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("members, why", [
    ({"a": {"name": "../evil"}}, "outside the package"),
    ({"a": {"name": "/etc/evil"}}, "outside the package"),
    ({"manifest.json": {}, "l": {"name": "engine/x", "link": "/etc/passwd"}}, "not a regular file"),
    ({"readme": {}}, "no manifest.json"),
])
def test_hostile_archives_are_refused(tmp_path, members, why):
    staging = Staging.create(tmp_path / "m")
    _receive(_tar(**members), staging)
    with pytest.raises(TransferError, match=why):
        unpack(staging)
    assert not (tmp_path / "evil").exists()


def test_garbage_is_not_a_package(tmp_path):
    staging = Staging.create(tmp_path / "m")
    _receive(b"\x00garbage" * 10, staging)
    with pytest.raises(TransferError, match="not a tar archive"):
        unpack(staging)
