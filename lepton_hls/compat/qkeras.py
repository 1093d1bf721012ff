"""QKeras internals the build relies on. Written against QKeras 0.9.0 (with TensorFlow 2.15 / Keras 2.15)."""

from __future__ import annotations

import functools
import threading

_state = threading.local()
_installed = False


def _float64_mode() -> bool:
    return getattr(_state, "depth", 0) > 0


def install_float64_quantizers() -> None:
    """Make QKeras quantizers compute in float64 when they are called on a float64 tensor (`lepton_hls.float64`
    says why); idempotent, and float32 calls are not affected.

    QKeras 0.9.0 (with TensorFlow 2.15): `qkeras.quantizers` reaches TensorFlow through its module globals `K`
    (`tensorflow.keras.backend`) and `tf` (`tensorflow.compat.v2`), and each quantizer class defines
    `__call__`. Those two globals are replaced by forwarding proxies that, while a quantizer is called on a
    float64 tensor (a thread-local flag each wrapped `__call__` sets), turn requests for float32 into float64
    (`K.cast`, `K.cast_to_floatx`, `K.floatx`, `tf.float32`, `tf.cast`, `tf.constant`), give `K.pow`'s scalar base
    and `tf.where`'s scalar operands the other operand's dtype. Every subclass of `BaseQuantizer` defined when
    this runs gets its `__call__` wrapped."""
    global _installed
    if _installed:
        return
    import tensorflow as tf
    from qkeras import quantizers

    quantizers.K = _BackendProxy(quantizers.K, tf)
    quantizers.tf = _TfProxy(quantizers.tf)
    for cls in _subclasses(quantizers.BaseQuantizer):
        if "__call__" in vars(cls):
            cls.__call__ = _follow_input_dtype(vars(cls)["__call__"], tf)
    _installed = True


def _subclasses(cls):
    seen = []
    stack = [cls]
    while stack:
        c = stack.pop()
        for s in c.__subclasses__():
            if s not in seen:
                seen.append(s)
                stack.append(s)
    return seen


def _follow_input_dtype(call, tf):
    @functools.wraps(call)
    def wrapper(self, x, *args, **kwargs):
        if getattr(x, "dtype", None) != tf.float64:
            return call(self, x, *args, **kwargs)
        _state.depth = getattr(_state, "depth", 0) + 1
        try:
            return call(self, x, *args, **kwargs)
        finally:
            _state.depth -= 1

    wrapper.__lepton_float64__ = True
    return wrapper


def _is_float32(dtype) -> bool:
    return dtype in ("float32",) or getattr(dtype, "name", None) == "float32"


class _Proxy:
    def __init__(self, real):
        object.__setattr__(self, "_real", real)

    def __getattr__(self, name):
        return getattr(self._real, name)


class _BackendProxy(_Proxy):
    """Stands in for `tensorflow.keras.backend` inside qkeras.quantizers."""

    def __init__(self, real, tf):
        super().__init__(real)
        object.__setattr__(self, "_tf", tf)

    def cast(self, x, dtype):
        if _float64_mode() and _is_float32(dtype):
            dtype = "float64"
        return self._real.cast(x, dtype)

    def cast_to_floatx(self, x):
        if _float64_mode():
            return self._tf.cast(x, self._tf.float64)
        return self._real.cast_to_floatx(x)

    def floatx(self):
        return "float64" if _float64_mode() else self._real.floatx()

    def pow(self, x, a):
        # quantized_bits' auto_po2 alpha: K.pow(2.0, <float64 tensor>) would make 2.0 a float32 constant
        if _float64_mode() and isinstance(x, (int, float)) and getattr(a, "dtype", None) is not None:
            x = self._tf.constant(x, dtype=a.dtype)
        return self._real.pow(x, a)


class _TfProxy(_Proxy):
    """Stands in for `tensorflow` inside qkeras.quantizers."""

    @property
    def float32(self):
        return self._real.float64 if _float64_mode() else self._real.float32

    def cast(self, x, dtype, name=None):
        if _float64_mode() and _is_float32(dtype):
            dtype = self._real.float64
        return self._real.cast(x, dtype, name=name)

    def constant(self, value, dtype=None, *args, **kwargs):
        if _float64_mode() and dtype is not None and _is_float32(dtype):
            dtype = self._real.float64
        return self._real.constant(value, dtype, *args, **kwargs)

    def where(self, condition, x=None, y=None, name=None):
        if _float64_mode() and x is not None and y is not None:
            x, y = self._align(x, y), self._align(y, x)
        return self._real.where(condition, x, y, name=name)

    def _align(self, a, other):
        if isinstance(a, (int, float)) and hasattr(other, "dtype"):
            return self._real.constant(a, dtype=other.dtype)
        return a


def supported_quantized_objects() -> dict:
    """Every QKeras layer, quantizer and constraint by the name a saved model's JSON uses, for Keras'
    `custom_objects`.

    QKeras 0.9.0: `qkeras.utils._add_supported_quantized_objects(d)` fills `d` with them; the public
    `quantized_model_from_json` / `load_qmodel` use it but also build the model, which the loader does itself."""
    from qkeras.utils import _add_supported_quantized_objects

    objs: dict = {}
    _add_supported_quantized_objects(objs)
    return objs
