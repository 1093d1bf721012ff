"""Private hooks into third-party libraries live in the compat modules only (`lepton_hls/compat/`,
`host/lepton_host/compat/`), one per library, so an upgrade of hls4ml, da4ml, QKeras, pynq, cocotb, TensorFlow or
Keras is checked against one file each.

An AST scan of every module of the build side, the board side and the cloud tier flags, outside those modules:
a private name imported from one of the libraries; a private attribute reached through a name bound to one of
them; the hooks known to be private whatever object they are reached through (`._compile(`, `_HWHZynq`,
`SoftmaxConfigTemplate`, ...); an assignment into a library module's attributes (`quantizers.K = ...`,
`setattr(module, ...)`); and a method replaced on an object (`obj.method = lambda ...`).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = [ROOT / "lepton_hls", ROOT / "host", ROOT / "cloud"]
COMPAT = [ROOT / "lepton_hls" / "compat", ROOT / "host" / "lepton_host" / "compat"]
LIBRARIES = {"hls4ml", "da4ml", "qkeras", "pynq", "tensorflow", "keras", "cocotb", "cocotb_tools"}

# Private (or internal) hooks by name, flagged on any object: the object they are reached through is rarely
# visible to a scan (an hls4ml model comes back from our own `convert`).
KNOWN_HOOKS = {
    "_compile": "hls4ml ModelGraph._compile / da4ml VerilogModel._compile",
    "_top_function_lib": "hls4ml ModelGraph's loaded C simulation",
    "SoftmaxConfigTemplate": "hls4ml's internal Vivado template class",
    "_HWHZynq": "pynq's Zynq .hwh parser",
    "_devices": "pynq DeviceMeta's probe cache",
    "_active_device": "pynq DeviceMeta's active-device cache",
    "_pipe": "da4ml VerilogModel's pipeline",
    "_vars": "da4ml FixedVariableArray's variables",
    "_add_supported_quantized_objects": "qkeras.utils' custom-object table",
    "_execute_cmds": "cocotb runner's command execution",
}

# Call sites outside the files this change could touch, to be switched to the compat functions separately:
# {path: names of the findings there}. Each has its own strict xfail below, which fails once the site is switched,
# so the entry is then removed.
PENDING: dict[str, set[str]] = {}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    name: str  # the private name, or the attribute assigned
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.name}: {self.why}"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _root(node: ast.AST) -> ast.Name | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node if isinstance(node, ast.Name) else None


def _third_party_names(tree: ast.AST) -> dict[str, bool]:
    """Names bound by imports from the libraries anywhere in the module -> whether the name is a module."""
    bound: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in LIBRARIES:
                    bound[a.asname or a.name.split(".")[0]] = True
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.split(".")[0] in LIBRARIES:
                for a in node.names:
                    # `from qkeras import quantizers` binds a module; `from pynq... import Device`, a class
                    bound[a.asname or a.name] = a.name.islower()
    return bound


def scan_source(source: str, path: str = "<string>") -> list[Finding]:
    tree = ast.parse(source)
    third = _third_party_names(tree)
    found: list[Finding] = []

    def flag(node: ast.AST, name: str, why: str) -> None:
        found.append(Finding(path, getattr(node, "lineno", 0), name, why))

    def is_third(node: ast.AST, module: bool = False) -> bool:
        root = _root(node)
        return root is not None and root.id in third and (third[root.id] or not module)

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.split(".")[0] not in LIBRARIES:
                continue
            if any(_private(part) for part in node.module.split(".")):
                flag(node, node.module, "imports from a private module of a third-party library")
            for a in node.names:
                if _private(a.name) or a.name in KNOWN_HOOKS:
                    flag(node, a.name, f"imports a private name from {node.module}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] in LIBRARIES and any(_private(p) for p in parts):
                    flag(node, a.name, "imports a private module of a third-party library")
        elif isinstance(node, ast.Attribute):
            if node.attr in KNOWN_HOOKS:
                flag(node, node.attr, f"private hook: {KNOWN_HOOKS[node.attr]}")
            elif _private(node.attr) and is_third(node.value):
                flag(node, node.attr, "private attribute of a third-party library")
        elif isinstance(node, ast.Name) and node.id in KNOWN_HOOKS:
            flag(node, node.id, f"private hook: {KNOWN_HOOKS[node.id]}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in KNOWN_HOOKS:
            flag(node, node.value, f"private hook by name: {KNOWN_HOOKS[node.value]}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            fn, obj = node.func.id, node.args[0]
            attr = node.args[1].value if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) else None
            if fn in ("setattr", "delattr") and is_third(obj, module=True):
                flag(node, str(attr), f"{fn} on a third-party module")
            elif fn in ("getattr", "setattr", "delattr", "hasattr") and isinstance(attr, str) and _private(attr) \
                    and is_third(obj):
                flag(node, attr, f"{fn} of a private attribute of a third-party library")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            value = getattr(node, "value", None)
            for t in targets:
                if not isinstance(t, ast.Attribute):
                    continue
                if is_third(t.value, module=True) or (_private(t.attr) and is_third(t.value)):
                    flag(t, t.attr, "assigns into a third-party library")
                elif isinstance(value, ast.Lambda) and not (isinstance(t.value, ast.Name) and t.value.id in ("self", "cls")):
                    flag(t, t.attr, "replaces a method on an object (a library's behaviour changed in place)")
    return found


def _scanned_files() -> list[Path]:
    files = []
    for top in SCANNED:
        for f in sorted(top.rglob("*.py")):
            if not any(f.is_relative_to(c) for c in COMPAT):
                files.append(f)
    return files


def _findings() -> list[Finding]:
    out = []
    for f in _scanned_files():
        out += scan_source(f.read_text(), f.relative_to(ROOT).as_posix())
    return out


def _pending(finding: Finding) -> bool:
    return finding.name in PENDING.get(finding.path, ())


def test_the_scan_covers_the_three_sides():
    files = {f.relative_to(ROOT).as_posix() for f in _scanned_files()}
    assert {"lepton_hls/convert.py", "host/lepton_host/board/device.py", "cloud/lepton_cloud/server.py"} <= files
    assert not any("/compat/" in f for f in files)
    for c in COMPAT:
        assert any(c.glob("*.py")), f"{c} holds no compat modules"


def test_private_hooks_only_in_compat_modules():
    found = [str(f) for f in _findings() if not _pending(f)]
    assert found == [], (
        "private third-party API used outside lepton_hls/compat/ and lepton_host/compat/; add a documented "
        "function to the library's compat module and call that:\n  " + "\n  ".join(found)
    )


@pytest.mark.parametrize("path", sorted(PENDING))
@pytest.mark.xfail(strict=True, reason="call sites switched separately")
def test_pending_call_sites_are_switched(path):
    found = [str(f) for f in _findings() if f.path == path and _pending(f)]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("source,name", [
    ("from pynq.pl_server.hwh_parser import _HWHZynq\n", "_HWHZynq"),
    ("from qkeras.utils import _add_supported_quantized_objects as add\n", "_add_supported_quantized_objects"),
    ("from hls4ml.backends.vivado.passes.core_templates import SoftmaxConfigTemplate\n", "SoftmaxConfigTemplate"),
    ("from keras.src import _private_thing\n", "_private_thing"),
    ("import tensorflow._api.v2 as api\n", "tensorflow._api.v2"),
    ("def f(hls_model):\n    hls_model._compile()\n", "_compile"),
    ("def f(model):\n    return model._pipe.solutions\n", "_pipe"),
    ("def f(x):\n    return x._vars.ravel()\n", "_vars"),
    ("import pynq\np = pynq.pl_server.hwh_parser._HWHZynq(hwh_name='a.hwh')\n", "_HWHZynq"),
    ("from pynq.pl_server.device import Device\nDevice._hidden = 1\n", "_hidden"),
    ("import tensorflow as tf\ndef f():\n    return tf._internal\n", "_internal"),
    ("from qkeras import quantizers\nquantizers.K = object()\n", "K"),
    ("import qkeras.quantizers as q\nq.tf = None\n", "tf"),
    ("import hls4ml\nsetattr(hls4ml, 'convert', None)\n", "convert"),
    ("from pynq.pl_server.device import Device\ndelattr(Device, '_devices')\n", "_devices"),
    ("from cocotb_tools.runner import Verilator\nhasattr(Verilator, '_secret')\n", "_secret"),
    ("def forget(cls):\n    for a in ('_devices', '_active_device'):\n        delattr(cls, a)\n", "_devices"),
    ("def f(hls_model):\n    hls_model.compile = lambda: None\n", "compile"),
])
def test_the_scan_flags(source, name):
    assert name in {f.name for f in scan_source(source)}, f"not flagged: {source!r}"


@pytest.mark.parametrize("source", [
    "from pynq.pl_server.device import Device\nDevice.active_device = object()\n",  # pynq's public setter
    "from hls4ml.model.types import RoundingMode\nRoundingMode.from_string('RND')\n",
    "from .convert import _exact_types\n",  # the project's own private names
    "class A:\n    def f(self):\n        self._compiled = 1\n        self.method = lambda: 2\n",
    "import numpy as np\nnp._private = 1\n",  # not one of the libraries
    "import tensorflow as tf\nmodel = tf.keras.Model()\nmodel.trainable = False\n",
])
def test_the_scan_passes(source):
    assert scan_source(source) == []
