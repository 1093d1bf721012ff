"""The overlay package manifest: the one contract between the build side and the board side.

A package directory holds `manifest.json` plus the artifacts it lists. The manifest is typed and versioned;
`load_manifest` rejects a malformed, foreign, edited or tampered package with a message that names the field
or file. Only numpy and the standard library are used, so the board can read it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ChecksumError, FormatError, LeptonError, ManifestError
from .fixedpoint import FixedFormat

SCHEMA = "lepton-hls/manifest"
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
TASKS = ("classifier", "autoencoder", "regressor")

# What the emulators, the board and the gateway load from a package: the C simulation and the weight files it
# reads (it looks in emulation/weights first, then hls/firmware/weights), the fast engine, the bitstream and its
# .hwh, the routing policy and the golden vectors. Every file there must be listed in `artifacts` and match its
# sha256; a file there that the manifest does not list was put in after the build and would be loaded
# unchecked, so it is refused. A trailing "/" is a folder (all files below it); otherwise a glob.
LOADED = ("emulation/", "engine/", "hls/firmware/weights/", "overlay/*.bit", "overlay/*.hwh", "serving.json",
          "selftest/")
POLICY_NAME = "serving.json"
OVERLAY_REPORT = "overlay"  # the overlay section's place in manifest.json: reports.overlay


@dataclass(frozen=True)
class TensorSpec:
    """One input or output port of the accelerator: per-sample shape and the fixed-point format on the wire."""

    name: str
    shape: tuple[int, ...]
    format: FixedFormat

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "format": self.format.to_dict()}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> TensorSpec:
        _require(d, ("name", "shape", "format"), where)
        shape = d["shape"]
        if not isinstance(shape, list) or not all(isinstance(s, int) and s > 0 for s in shape):
            raise ManifestError(f"{where}.shape must be a list of positive integers, got {shape!r}")
        try:
            fmt = FixedFormat.from_dict(d["format"])
        except FormatError as e:
            raise ManifestError(f"{where}.format: {e}") from None
        return cls(name=str(d["name"]), shape=tuple(shape), format=fmt)


@dataclass(frozen=True)
class Preprocessing:
    """How raw features become the model's inputs: y = (x - mean) / scale, element-wise (broadcast)."""

    kind: str = "identity"  # identity | standard
    mean: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()
    note: str = ""

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.kind == "identity":
            return x
        mean = np.asarray(self.mean, dtype=np.float64)
        scale = np.asarray(self.scale, dtype=np.float64)
        return (x - mean) / scale

    def to_dict(self) -> dict:
        return {"kind": self.kind, "mean": list(self.mean), "scale": list(self.scale), "note": self.note}

    @classmethod
    def from_dict(cls, d: dict, where: str = "preprocessing") -> Preprocessing:
        kind = d.get("kind", "identity")
        if kind not in ("identity", "standard"):
            raise ManifestError(f"{where}.kind must be 'identity' or 'standard', got {kind!r}")
        mean, scale = tuple(float(v) for v in d.get("mean", ())), tuple(float(v) for v in d.get("scale", ()))
        if kind == "standard" and (not mean or len(mean) != len(scale) or any(s == 0 for s in scale)):
            raise ManifestError(f"{where}: a standard scaler needs equal-length mean and non-zero scale lists")
        return cls(kind=kind, mean=mean, scale=scale, note=str(d.get("note", "")))


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str  # "zoo:<name>" or the path the user gave
    sha256: str  # of the model's architecture + weights as packaged
    task: str = "classifier"
    classes: tuple[str, ...] = ()
    threshold: float | None = None  # autoencoder: reconstruction-error threshold for "anomalous"
    framework: str = "qkeras"

    @classmethod
    def from_dict(cls, d: dict) -> ModelInfo:
        _require(d, ("name", "source", "sha256"), "model")
        task = d.get("task", "classifier")
        if task not in TASKS:
            raise ManifestError(f"model.task must be one of {TASKS}, got {task!r}")
        thr = d.get("threshold")
        return cls(
            name=str(d["name"]),
            source=str(d["source"]),
            sha256=str(d["sha256"]),
            task=task,
            classes=tuple(str(c) for c in d.get("classes", ())),
            threshold=None if thr is None else float(thr),
            framework=str(d.get("framework", "qkeras")),
        )


@dataclass(frozen=True)
class HlsInfo:
    backend: str
    board: str | None
    part: str
    clock_ns: float
    io_type: str
    strategy: str
    reuse_factor: int
    project_name: str = "myproject"
    hls4ml_version: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> HlsInfo:
        _require(d, ("backend", "part", "clock_ns", "io_type", "strategy", "reuse_factor"), "hls")
        return cls(
            backend=str(d["backend"]),
            board=d.get("board"),
            part=str(d["part"]),
            clock_ns=float(d["clock_ns"]),
            io_type=str(d["io_type"]),
            strategy=str(d["strategy"]),
            reuse_factor=int(d["reuse_factor"]),
            project_name=str(d.get("project_name", "myproject")),
            hls4ml_version=str(d.get("hls4ml_version", "")),
        )


@dataclass(frozen=True)
class Fidelity:
    """What the package promises about C simulation versus the model (checked by `lepton-hls verify`)."""

    identical_rows_min: float = 1.0  # before the final softmax, on inputs on the input grid
    argmax_agreement_min: float = 0.995  # after it
    note: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> Fidelity:
        return cls(
            identical_rows_min=float(d.get("identical_rows_min", 1.0)),
            argmax_agreement_min=float(d.get("argmax_agreement_min", 0.995)),
            note=str(d.get("note", "")),
        )


@dataclass(frozen=True)
class Verification:
    """The outcome of the package's last fidelity check (`lepton-hls verify`; `build` runs one): did its C
    simulation meet the declared fidelity? Absent in manifests written before this field: "not recorded"."""

    passed: bool | None = None  # None: not recorded
    report: str = ""  # the full report, relative to the package
    samples: int = 0  # per input set
    identical_rows: float | None = None  # on the input grid, before the final softmax
    argmax_agreement: float | None = None  # on the input grid, after it (classifiers)
    max_abs_diff: float | None = None
    identical_rows_min: float | None = None  # the fidelity it was checked against
    argmax_agreement_min: float | None = None
    first_difference: str = ""  # the first differing layer and its likely cause, when one was found
    verified: str = ""  # when (UTC, ISO 8601)

    @property
    def recorded(self) -> bool:
        return self.passed is not None

    @property
    def failed(self) -> bool:
        return self.passed is False

    def summary(self) -> str:
        """The fidelity numbers against their minimums, e.g. 'identical rows 0.9100 (needs >= 1.0)'."""
        parts = []
        if self.identical_rows is not None:
            parts.append(f"identical rows {self.identical_rows:.4f} (needs >= {self.identical_rows_min})")
        if self.argmax_agreement is not None:
            parts.append(f"argmax agreement {self.argmax_agreement:.4f} (needs >= {self.argmax_agreement_min})")
        if self.max_abs_diff is not None:
            parts.append(f"max|diff| {self.max_abs_diff:.3g}")
        if self.first_difference:
            parts.append(f"first differing layer {self.first_difference}")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> Verification:
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ManifestError("verification must be a JSON object")
        passed = d.get("passed")
        if not isinstance(passed, bool):
            raise ManifestError(f"verification.passed must be true or false, got {passed!r}")

        def num(key):
            v = d.get(key)
            return None if v is None else float(v)

        return cls(
            passed=passed,
            report=str(d.get("report", "")),
            samples=int(d.get("samples", 0)),
            identical_rows=num("identical_rows"),
            argmax_agreement=num("argmax_agreement"),
            max_abs_diff=num("max_abs_diff"),
            identical_rows_min=num("identical_rows_min"),
            argmax_agreement_min=num("argmax_agreement_min"),
            first_difference=str(d.get("first_difference", "")),
            verified=str(d.get("verified", "")),
        )

    @classmethod
    def from_report(cls, report: dict, report_path: str, verified: str = "") -> Verification:
        """From a `lepton-hls verify` report (lepton_hls.verify.VerifyReport.to_dict())."""
        fid = report.get("fidelity") or {}
        first = report.get("first_difference") or {}
        where = ""
        if first:
            where = f"{first.get('name')} [{first.get('layer_class')}] on {first.get('set')}: {first.get('cause', '')}"
        return cls(
            passed=bool(report["passed"]),
            report=report_path,
            samples=int(report.get("samples", 0)),
            identical_rows=report.get("identical_rows"),
            argmax_agreement=report.get("argmax_agreement"),
            max_abs_diff=report.get("max_abs_diff"),
            identical_rows_min=fid.get("identical_rows_min"),
            argmax_agreement_min=fid.get("argmax_agreement_min"),
            first_difference=where.rstrip(": "),
            verified=verified,
        )


@dataclass(frozen=True, kw_only=True)
class OverlaySection:
    """The overlay the package carries, as the board reads it: which board, which DMA and accelerator instance,
    the batch one transfer carries and, once the vendor tools built them, the bitstream and its .hwh.

    Written by `lepton-hls overlay` in manifest.json under `reports.overlay`, beside what only the build side
    reads there (scripts, lane widths, timing, utilization, the wrapper's C simulation); those stay in
    `Manifest.reports["overlay"]`. Absent in a package that has no overlay yet."""

    board: str
    dma: str  # the AXI DMA instance that feeds the accelerator, as the .hwh names it
    ip: str  # the stream accelerator instance
    max_batch: int  # the largest batch one DMA transfer carries
    dma_length_width: int  # bits of the DMA's buffer length register (c_sg_length_width)
    bitstream: str | None = None  # relative to the package; None until the vendor tools built it
    hwh: str | None = None
    bitstream_sha256: str | None = None
    built: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "reports.overlay") -> OverlaySection:
        """Parse and check the section; a ManifestError names the first field that is missing or malformed."""
        _require(d, ("board", "dma", "ip", "max_batch", "dma_length_width"), where)

        def text(key):
            v = d[key]
            if not isinstance(v, str) or not v:
                raise ManifestError(f"{where}.{key} must be a non-empty string, got {v!r}")
            return v

        def integer(key, lo, hi=None):
            v = d[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                rng = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"
                raise ManifestError(f"{where}.{key} must be an integer {rng}, got {v!r}")
            return v

        def package_path(key):
            v = d.get(key)
            if v is None:
                return None
            if not isinstance(v, str) or not v or os.path.isabs(v) or ".." in Path(v).parts:
                raise ManifestError(f"{where}.{key} must be a path inside the package or null, got {v!r}")
            return v

        sha = d.get("bitstream_sha256")
        if sha is not None and not (isinstance(sha, str) and len(sha) == 64
                                    and all(c in "0123456789abcdef" for c in sha)):  # fmt: skip
            raise ManifestError(f"{where}.bitstream_sha256 must be a sha256 hex digest or null, got {sha!r}")
        built = d.get("built", False)
        if not isinstance(built, bool):
            raise ManifestError(f"{where}.built must be true or false, got {built!r}")
        return cls(
            board=text("board"),
            dma=text("dma"),
            ip=text("ip"),
            max_batch=integer("max_batch", 1),
            dma_length_width=integer("dma_length_width", 8, 26),  # PG021's range for c_sg_length_width
            bitstream=package_path("bitstream"),
            hwh=package_path("hwh"),
            bitstream_sha256=sha,
            built=built,
        )


class UnverifiedPackageError(LeptonError):
    """The package failed its fidelity check: its C simulation does not compute what its model computes."""


def check_verified(manifest: Manifest, package_dir, allow_unverified: bool = False) -> str | None:
    """Refuse a package whose recorded verification failed, unless `allow_unverified`; then return the one-line
    warning to show. Packages without a recorded verification (built before it was recorded) pass silently."""
    v = manifest.verification
    if not v.failed:
        return None
    numbers = v.summary() or "no numbers recorded"
    report = f"; see {Path(package_dir) / v.report}" if v.report else ""
    if not allow_unverified:
        raise UnverifiedPackageError(
            f"package {package_dir} ({manifest.model.name}) failed its fidelity check: {numbers}{report}; rebuild it "
            "(e.g. wider layer_precision) or pass --allow-unverified to run it anyway"
        )
    return (f"package {package_dir} ({manifest.model.name}) failed its fidelity check ({numbers}); "
            "running it anyway (--allow-unverified)")


@dataclass
class Manifest:
    model: ModelInfo
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    hls: HlsInfo
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    fidelity: Fidelity = field(default_factory=Fidelity)
    artifacts: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    # Named tool reports added after the build (verification, rtl, overlay, synth): free-form JSON objects,
    # written with `set_report`. The board reads none of them by key: what it needs is typed (`overlay`).
    reports: dict[str, Any] = field(default_factory=dict)
    # Optional in schema version 1: older manifests lack it and load as "not recorded".
    verification: Verification = field(default_factory=Verification)
    # reports.overlay in the JSON, parsed; None: no overlay generated for the package.
    overlay: OverlaySection | None = None
    created: str = ""
    tool_version: str = ""

    # ---- serialisation --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        body = {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "created": self.created,
            "tool_version": self.tool_version,
            "model": asdict(self.model) | {"classes": list(self.model.classes)},
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "preprocessing": self.preprocessing.to_dict(),
            "hls": asdict(self.hls),
            "fidelity": asdict(self.fidelity),
            "artifacts": dict(sorted(self.artifacts.items())),
            "reports": self.reports,
        }
        if self.overlay is not None:  # the typed fields over what the build side recorded beside them
            body["reports"] = self.reports | {
                OVERLAY_REPORT: self.reports.get(OVERLAY_REPORT, {}) | self.overlay.to_dict()
            }
        if self.verification.recorded:
            body["verification"] = self.verification.to_dict()
        body["digest"] = _digest(body)
        return body

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        if not isinstance(d, dict):
            raise ManifestError("manifest.json must hold a JSON object")
        if d.get("schema") != SCHEMA:
            raise ManifestError(f"not a lepton-hls manifest (schema {d.get('schema')!r}, expected {SCHEMA!r})")
        if d.get("version") != SCHEMA_VERSION:
            raise ManifestError(
                f"manifest schema version {d.get('version')!r} is not supported by this runtime (supports "
                f"{SCHEMA_VERSION}); rebuild the package or upgrade lepton-hls"
            )
        _require(d, ("model", "inputs", "outputs", "hls", "artifacts", "digest"), "manifest")
        digest = d["digest"]
        if digest != _digest({k: v for k, v in d.items() if k != "digest"}):
            raise ManifestError("manifest.json was edited after it was written (its digest does not match)")
        if not d["inputs"] or not d["outputs"]:
            raise ManifestError("manifest declares no inputs or no outputs")
        artifacts = d["artifacts"]
        if not isinstance(artifacts, dict) or not all(
            isinstance(v, str) and len(v) == 64 for v in artifacts.values()
        ):
            raise ManifestError("manifest.artifacts must map relative paths to sha256 hex digests")
        for rel in artifacts:
            if os.path.isabs(rel) or ".." in Path(rel).parts:
                raise ManifestError(f"artifact path {rel!r} escapes the package directory")
        reports = d.get("reports", {})
        if not isinstance(reports, dict):
            raise ManifestError("manifest.reports must be a JSON object")
        overlay = OverlaySection.from_dict(reports[OVERLAY_REPORT]) if OVERLAY_REPORT in reports else None
        try:
            return cls(
                model=ModelInfo.from_dict(d["model"]),
                inputs=[TensorSpec.from_dict(t, f"inputs[{i}]") for i, t in enumerate(d["inputs"])],
                outputs=[TensorSpec.from_dict(t, f"outputs[{i}]") for i, t in enumerate(d["outputs"])],
                hls=HlsInfo.from_dict(d["hls"]),
                preprocessing=Preprocessing.from_dict(d.get("preprocessing", {})),
                fidelity=Fidelity.from_dict(d.get("fidelity", {})),
                artifacts=dict(artifacts),
                reports=dict(reports),
                verification=Verification.from_dict(d.get("verification")),
                overlay=overlay,
                created=str(d.get("created", "")),
                tool_version=str(d.get("tool_version", "")),
            )
        except (TypeError, ValueError, AttributeError) as e:
            raise ManifestError(f"malformed manifest: {e}") from None

    def set_report(self, name: str, summary: dict) -> None:
        """Record a tool's summary as `reports[name]`. The overlay's is parsed into `overlay` as a loaded
        manifest parses it, so a section the board would refuse is never written."""
        if not isinstance(summary, dict):
            raise ManifestError(f"reports.{name} must be a JSON object, got {type(summary).__name__}")
        if name == OVERLAY_REPORT:
            self.overlay = OverlaySection.from_dict(summary)
        self.reports[name] = summary

    # ---- files ----------------------------------------------------------------------------------------
    def save(self, package_dir: str | os.PathLike) -> Path:
        path = Path(package_dir) / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)  # a reader never sees a half-written manifest
        return path

    def add_artifacts(self, package_dir: str | os.PathLike, paths) -> None:
        """Record (or refresh) the sha256 of files inside the package."""
        root = Path(package_dir)
        for p in paths:
            p = Path(p)
            rel = p.relative_to(root) if p.is_absolute() else p
            self.artifacts[rel.as_posix()] = sha256_file(root / rel)

    def verify_artifacts(self, package_dir: str | os.PathLike, only=None) -> None:
        """Raise ChecksumError naming the first artifact that is missing or altered, or the first file in a
        loaded place (LOADED) that the manifest does not list. `only`: relative paths (a trailing "/" for a
        folder) to which both checks are limited."""
        root = Path(package_dir)
        unlisted = unlisted_files(self, root, only)
        if unlisted:
            rel = unlisted[0]
            raise ChecksumError(
                f"package {root}: {rel} is not listed in its manifest, so it was put there after the build and "
                f"would be loaded unchecked; {_fix(root, rel, unlisted=True)}"
            )
        for rel, expected in sorted(self.artifacts.items()):
            if only is not None and not _within(rel, only):
                continue
            path = root / rel
            if not path.is_file():
                raise ChecksumError(f"package {root}: artifact {rel} is missing; {_fix(root, rel)}")
            actual = sha256_file(path)
            if actual != expected:
                raise ChecksumError(
                    f"package {root}: sha256 mismatch for {rel} (manifest {expected[:12]}..., file {actual[:12]}...); "
                    f"the file was altered or corrupted: {_fix(root, rel)}"
                )

    @property
    def input(self) -> TensorSpec:
        return self.inputs[0]

    @property
    def output(self) -> TensorSpec:
        return self.outputs[0]


def load_manifest(package_dir: str | os.PathLike, verify: bool = True, only=None) -> Manifest:
    """Read and validate `package_dir/manifest.json`; with `verify`, check every artifact's sha256
    (or only those under the relative paths in `only`)."""
    root = Path(package_dir)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise ManifestError(f"{root} is not a package directory (run `lepton-hls build ... --out {root}` first)")
    if not path.is_file():
        raise ManifestError(f"{root} has no {MANIFEST_NAME}: not a lepton-hls package")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path} is not valid JSON: {e}") from None
    manifest = Manifest.from_dict(data)
    if verify:
        manifest.verify_artifacts(root, only=only)
    return manifest


def unlisted_files(manifest: Manifest, package_dir: str | os.PathLike, only=None) -> list[str]:
    """Files in the package's loaded places (LOADED) that its manifest does not list, as sorted relative paths;
    with `only`, just those under the given relative paths."""
    root = Path(package_dir)
    found = set()
    for place in LOADED:
        if place.endswith("/"):
            folder = root / place
            paths = folder.rglob("*") if folder.is_dir() else ()
        else:
            paths = root.glob(place)
        for p in paths:
            if p.is_file() or p.is_symlink():
                rel = p.relative_to(root).as_posix()
                if rel not in manifest.artifacts and (only is None or _within(rel, only)):
                    found.add(rel)
    return sorted(found)


def _within(rel: str, only) -> bool:
    return any(rel == o or rel.startswith(o.rstrip("/") + "/") for o in only)


def _fix(root: Path, rel: str, unlisted: bool = False) -> str:
    """What to do about an unlisted, missing or altered file."""
    if rel == POLICY_NAME:
        return (f"install the routing policy with `lepton-hls serving-policy {root} POLICY.json`, which records it"
                + (", or remove it" if unlisted else ""))
    return ("remove it, or rebuild the package with `lepton-hls build`" if unlisted
            else "rebuild the package with `lepton-hls build`")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _require(d: Any, keys, where: str) -> None:
    if not isinstance(d, dict):
        raise ManifestError(f"{where} must be a JSON object")
    missing = [k for k in keys if k not in d]
    if missing:
        raise ManifestError(f"{where} is missing {', '.join(missing)}")
