"""The application: `OipIngress` in front of `OnnxModel`, both configured from AppOptions. `build(args)` is the
import path a `serve deploy` config names (`lepton_cloud_ray.app:build`, its `args` being the options); the
launcher calls `build_app`. The ONNX file is read here, where the application is built, and travels to the
replicas with the deployment (Ray's object store), so GPU nodes need no shared file system for it."""

from __future__ import annotations

import json
from pathlib import Path

from lepton_cloud.onnx_contract import OnnxContract, OnnxContractError, read_contract
from lepton_host.errors import LeptonError, ManifestError
from lepton_host.manifest import MANIFEST_NAME, Manifest

from .options import AppOptions


class OnnxFileError(LeptonError):
    """The ONNX file cannot be read or is not a model onnxruntime can load."""


def build(args: dict):
    """Ray Serve application builder: the config's `args` -> the application."""
    return build_app(AppOptions.from_dict(dict(args)))


def build_app(options: AppOptions):
    from .ingress import OipIngress
    from .model import OnnxModel

    data, contract = load_model(options.onnx, options.manifest)
    model = OnnxModel.options(**options.model_deployment()).bind(
        data, contract.input_name, contract.output_name, options.num_gpus > 0, options.onnx_threads,
        options.max_batch_size, options.batch_wait_timeout_s,
    )
    return OipIngress.options(**options.ingress_deployment()).bind(model, contract, options)


def load_model(onnx_path: str, manifest_path: str | None = None) -> tuple[bytes, OnnxContract]:
    """The file's bytes and the contract it states, checked against a package's manifest when one is given."""
    import onnxruntime as ort

    path = Path(onnx_path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OnnxFileError(f"cannot read the ONNX model {path}: {e.strerror or e}") from None
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        raise OnnxFileError(f"{path} is not an ONNX model onnxruntime can load: {str(e).splitlines()[0]}") from None
    contract = read_contract(session, str(path))
    if manifest_path is not None:
        manifest = read_manifest(manifest_path)
        differences = contract.differences(manifest)
        if differences:
            raise OnnxContractError(f"{path} does not fit the package of {manifest_path}: {'; '.join(differences)}; "
                                    "export it for that package (lepton-hls export-onnx DIR --out FILE.onnx)")
    return data, contract


def read_manifest(path: str) -> Manifest:
    """A package's manifest.json, or the one in a package directory (its other files are not needed here)."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    try:
        return Manifest.from_dict(json.loads(p.read_text()))
    except OSError as e:
        raise ManifestError(f"cannot read the manifest {p}: {e.strerror or e}") from None
    except ValueError as e:
        raise ManifestError(f"{p} is not a package manifest: {e}") from None
