"""The edge node's model repository: layout, version policy, and admission (signature, hashes, contract)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from lepton_host.model_repository import (RepositoryError, Trust, VersionPolicy, admit, read_model, same_contract,
                                          scan_repository, write_policy)
from lepton_host.signing import generate_key, sign_package


@pytest.fixture
def repo(jet_package, tmp_path):
    """REPO/jet/{1,2,3}: copies of one package (what differs between them does not matter to the layout)."""
    root = tmp_path / "repo"
    for v in (1, 2, 3):
        shutil.copytree(jet_package, root / "jet" / str(v))
    return root


@pytest.fixture
def signer(tmp_path):
    priv, pub = generate_key(tmp_path / "keys", "builder")
    return priv, Trust.from_options(tmp_path / "keys", allow_unsigned=False)


def test_layout_lists_versions_and_says_what_it_ignored(repo):
    (repo / "jet" / "07").mkdir()
    (repo / "jet" / "beta").mkdir()
    (repo / "jet" / "4").mkdir()  # no manifest yet
    (repo / "jet" / ".incoming-5").mkdir()  # an upload in progress is not a version
    (repo / "jet" / "notes.txt").write_text("x")
    entry = scan_repository(repo)["jet"]
    assert entry.versions == (1, 2, 3)
    assert entry.policy == VersionPolicy("latest")
    assert sorted(i.split(":")[0] for i in entry.ignored) == ["07", "4", "beta", "notes.txt"]


@pytest.mark.parametrize("config, expect", [
    ({"version_policy": "latest"}, VersionPolicy("latest")),
    ({"version_policy": {"pinned": 2}}, VersionPolicy("pinned", 2)),
    ({}, VersionPolicy("latest")),
])
def test_version_policy_is_read_from_the_models_config(repo, config, expect):
    (repo / "jet" / "config.json").write_text(json.dumps(config))
    assert read_model(repo / "jet").policy == expect


@pytest.mark.parametrize("config", [
    {"version_policy": {"pinned": 0}}, {"version_policy": {"pinned": "2"}}, {"version_policy": "newest"},
    {"version_policy": {"pinned": True}}, {"versions": 2}, [1],
])
def test_bad_version_policy_is_refused_naming_the_file(repo, config):
    (repo / "jet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(RepositoryError, match="config.json"):
        read_model(repo / "jet")


def test_policy_chooses_among_loadable_versions():
    assert VersionPolicy("latest").choose([1, 3, 2]) == 3
    assert VersionPolicy("latest").choose([]) is None
    assert VersionPolicy("pinned", 2).choose([1, 2, 3]) == 2
    assert VersionPolicy("pinned", 4).choose([1, 2, 3]) is None  # pinned to what cannot load: nothing, not another


def test_write_policy_round_trips(repo):
    write_policy(repo / "jet", VersionPolicy("pinned", 1))
    assert read_model(repo / "jet").policy == VersionPolicy("pinned", 1)


def test_signed_version_is_admitted_with_its_signer(repo, signer):
    priv, trust = signer
    sign_package(repo / "jet" / "2", priv)
    got = admit(read_model(repo / "jet"), 2, trust)
    assert got.version == 2 and got.signature.signer == "builder"
    assert got.manifest.model.name


def test_unsigned_version_is_refused_unless_allowed(repo, signer, tmp_path):
    entry = read_model(repo / "jet")
    with pytest.raises(RepositoryError, match="version 1 refused: .*not signed"):
        admit(entry, 1, signer[1])
    assert admit(entry, 1, Trust(allow_unsigned=True)).signer == "unsigned"


def test_a_wrong_signature_is_refused_even_where_unsigned_ones_are_allowed(repo, signer, tmp_path):
    other, _ = generate_key(tmp_path / "other", "stranger")
    sign_package(repo / "jet" / "3", other)
    lax = dataclasses.replace(signer[1], allow_unsigned=True)
    with pytest.raises(RepositoryError, match="does not trust"):
        admit(read_model(repo / "jet"), 3, lax)


def test_tampered_version_is_refused(repo, signer):
    priv, trust = signer
    sign_package(repo / "jet" / "2", priv)
    f = next(p for p in sorted((repo / "jet" / "2" / "engine").rglob("*")) if p.is_file())
    f.write_bytes(f.read_bytes() + b"\0")
    with pytest.raises(RepositoryError, match="version 2 refused"):
        admit(read_model(repo / "jet"), 2, trust)


def test_missing_version_and_missing_trust_are_errors(repo, tmp_path):
    with pytest.raises(RepositoryError, match="has no version 9"):
        admit(read_model(repo / "jet"), 9, Trust(allow_unsigned=True))
    with pytest.raises(RepositoryError, match="--trusted-keys"):
        Trust.from_options(None, allow_unsigned=False)
    with pytest.raises(RepositoryError, match="does not exist"):
        scan_repository(tmp_path / "nowhere")


def test_contract_change_between_versions_is_named(repo):
    old = admit(read_model(repo / "jet"), 1, Trust(allow_unsigned=True)).manifest
    assert same_contract(old, old) is None
    wider = dataclasses.replace(old, outputs=[dataclasses.replace(old.output, shape=(old.output.shape[0] + 1,))])
    assert "output" in same_contract(wider, old)
    renamed = dataclasses.replace(old, model=dataclasses.replace(old.model, classes=tuple(reversed(old.model.classes))))
    assert len(set(old.model.classes)) > 1  # the jet tagger names its five classes
    assert "classes" in same_contract(renamed, old)
