"""The edge node's model repository, in Triton's layout: `REPO/<model>/<version>/`, each version an overlay package.

    REPO/
      jet_tagger/
        config.json        {"version_policy": "latest"}  or  {"version_policy": {"pinned": 2}}   (optional)
        1/  manifest.json signature.json engine/ ...
        2/  ...

Versions are positive integers, as in Triton. Folders whose names start with "." are work in progress (an upload
being written, a version being removed) and are not versions. This module reads the layout and decides what should
serve; loading, self-testing and switching are the gateway's.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LeptonError
from .manifest import MANIFEST_NAME, Manifest, load_manifest
from .signing import SIGNATURE_NAME, Signature, TrustedKey, load_trusted_keys, verify_package

CONFIG_NAME = "config.json"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class RepositoryError(LeptonError):
    """The repository's layout or a model's config is wrong, or a version cannot be admitted."""


@dataclass(frozen=True)
class VersionPolicy:
    """`latest`: the highest version that loads; `pinned`: exactly that version (nothing else serves)."""

    kind: str = "latest"
    version: int | None = None

    @classmethod
    def from_config(cls, value, where: str) -> VersionPolicy:
        if value in (None, "latest"):
            return cls()
        if isinstance(value, dict) and set(value) == {"pinned"}:
            v = value["pinned"]
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return cls("pinned", v)
        raise RepositoryError(f"{where}: version_policy must be \"latest\" or {{\"pinned\": N}} with N a positive "
                              f"integer, not {json.dumps(value)}")

    def to_config(self):
        return "latest" if self.kind == "latest" else {"pinned": self.version}

    def choose(self, loadable: list[int]) -> int | None:
        """The version that should own the accelerator, among those that can be loaded."""
        if self.kind == "pinned":
            return self.version if self.version in loadable else None
        return max(loadable, default=None)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    versions: tuple[int, ...]  # ascending
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    ignored: tuple[str, ...] = ()  # entries that are not versions, with why, for `info` and the log

    def version_dir(self, version: int) -> Path:
        return self.path / str(version)


def check_model_name(name: str) -> str:
    if not _MODEL_NAME.match(name):
        raise RepositoryError(f"model name {name!r}: model names are letters, digits, '_', '-' and '.' (at most 128), "
                              "starting with a letter or digit")
    return name


def read_model(path: str | os.PathLike) -> ModelEntry:
    root = Path(path)
    check_model_name(root.name)
    policy = VersionPolicy()
    cfg = root / CONFIG_NAME
    if cfg.is_file():
        try:
            data = json.loads(cfg.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RepositoryError(f"{cfg} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise RepositoryError(f"{cfg} must hold a JSON object")
        unknown = set(data) - {"version_policy"}
        if unknown:
            raise RepositoryError(f"{cfg}: unknown keys {', '.join(sorted(unknown))} (known: version_policy)")
        policy = VersionPolicy.from_config(data.get("version_policy"), str(cfg))
    versions, ignored = [], []
    for child in sorted(root.iterdir()):
        if child.name == CONFIG_NAME or child.name.startswith("."):
            continue
        if not child.is_dir():
            ignored.append(f"{child.name}: not a folder")
        elif not child.name.isdigit() or int(child.name) == 0 or child.name != str(int(child.name)):
            ignored.append(f"{child.name}: version folders are named 1, 2, 3, ...")
        elif not (child / MANIFEST_NAME).is_file():
            ignored.append(f"{child.name}: no {MANIFEST_NAME}")
        else:
            versions.append(int(child.name))
    return ModelEntry(root.name, root, tuple(sorted(versions)), policy, tuple(ignored))


def scan_repository(repo: str | os.PathLike) -> dict[str, ModelEntry]:
    root = Path(repo)
    if not root.is_dir():
        raise RepositoryError(f"model repository {root} does not exist (lay it out as REPO/<model>/<version>/)")
    models = {p.name: read_model(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    if not models:
        raise RepositoryError(f"model repository {root} holds no model folders (REPO/<model>/<version>/)")
    return models


def write_policy(model_dir: str | os.PathLike, policy: VersionPolicy) -> None:
    path = Path(model_dir) / CONFIG_NAME
    tmp = path.with_name("." + CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps({"version_policy": policy.to_config()}, indent=2) + "\n")
    os.replace(tmp, path)


@dataclass(frozen=True)
class Trust:
    """Which packages a node admits: those signed by one of `keys`, or, with `allow_unsigned`, any whose files
    match its manifest (development only; the node says so at start)."""

    keys: dict[str, TrustedKey] = field(default_factory=dict)
    allow_unsigned: bool = False

    @classmethod
    def from_options(cls, trusted_keys: str | os.PathLike | None, allow_unsigned: bool) -> Trust:
        if trusted_keys is None and not allow_unsigned:
            raise RepositoryError("a model repository needs --trusted-keys DIR (the signers' .pub files), or "
                                  "--allow-unsigned for development")
        return cls(load_trusted_keys(trusted_keys) if trusted_keys is not None else {}, allow_unsigned)

    def describe(self) -> str:
        signers = ", ".join(f"{k.name} ({k.key_id})" for k in self.keys.values())
        if self.allow_unsigned:
            return "UNSIGNED PACKAGES ALLOWED (development)" + (f"; signed ones checked against {signers}" if signers else "")
        return f"packages must be signed by: {signers}"


@dataclass(frozen=True)
class AdmittedVersion:
    """A version whose signature and files were checked; what the gateway then loads and self-tests."""

    model: str
    version: int
    path: Path
    manifest: Manifest
    signature: Signature | None  # None: unsigned, admitted by allow_unsigned

    @property
    def signer(self) -> str:
        return "unsigned" if self.signature is None else f"{self.signature.signer} ({self.signature.key_id})"


def same_contract(new: Manifest, old: Manifest) -> str | None:
    """Why clients of `old` would break on `new` (another input or output name, shape or class order), or None.
    Versions of one model answer the same requests; a different contract is a different model."""
    for what, a, b in (("input", new.input, old.input), ("output", new.output, old.output)):
        if (a.name, tuple(a.shape)) != (b.name, tuple(b.shape)):
            return f"its {what} is {a.name} {list(a.shape)}, the serving version's {b.name} {list(b.shape)}"
    if tuple(new.model.classes) != tuple(old.model.classes):
        return f"its classes are {list(new.model.classes)}, the serving version's {list(old.model.classes)}"
    return None


def admit(entry: ModelEntry, version: int, trust: Trust) -> AdmittedVersion:
    """Check `version` of `entry` against `trust` and its own manifest; RepositoryError says why not."""
    if version not in entry.versions:
        raise RepositoryError(f"{entry.name} has no version {version} (has {', '.join(map(str, entry.versions)) or 'none'})")
    manifest, signature = check_package(entry.version_dir(version), trust, f"{entry.name} version {version}")
    return AdmittedVersion(entry.name, version, entry.version_dir(version), manifest, signature)


def check_package(path: Path, trust: Trust, what: str) -> tuple[Manifest, Signature | None]:
    """`path`'s signature against `trust` and its files against its manifest; RepositoryError names `what`."""
    signature = None
    try:
        signed = (path / SIGNATURE_NAME).is_file()
        # Even where unsigned packages are allowed, a signature that is there must be right.
        if not trust.allow_unsigned or (signed and trust.keys):
            signature = verify_package(path, trust.keys)
        manifest = load_manifest(path, verify=True)
    except LeptonError as e:
        raise RepositoryError(f"{what} refused: {e}") from None
    return manifest, signature


def add_version(model_dir: str | os.PathLike, package_path: str | os.PathLike) -> int:
    """Move an admitted upload into `model_dir` as its next version; -> the version number. The move is one rename
    on one file system, so the version appears whole or not at all."""
    root = Path(model_dir)
    taken = [int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []
    version = max(taken, default=0) + 1
    while True:
        try:
            os.mkdir(root / str(version))  # claims the number even against a concurrent upload
            break
        except FileExistsError:
            version += 1
    os.replace(package_path, root / str(version))  # onto the empty folder just claimed: atomic
    return version
