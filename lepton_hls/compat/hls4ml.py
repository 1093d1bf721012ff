"""hls4ml internals the build relies on. Written against hls4ml 1.3.0."""

from __future__ import annotations


def link_written_project(hls_model) -> None:
    """Compile and load the C simulation of a project that is already written (and whose firmware was patched
    after writing), without writing it again.

    hls4ml 1.3.0: `ModelGraph.compile()` is `write()` then `_compile()`; `write()` would regenerate the firmware
    and drop the patches, so this calls `_compile()` alone (the backend's `compile(model)` builds the library,
    then the graph dlcloses any previous one and loads the new one into `_top_function_lib`, which
    `predict`/`trace` call)."""
    hls_model._compile()


def keep_linked_library(hls_model) -> None:
    """Make later `compile()` calls on `hls_model` do nothing, so the library linked by `link_written_project`
    is the one `trace()` runs.

    hls4ml 1.3.0: `ModelGraph.trace()` calls `self.compile()` (write + build) on every call, which would rewrite
    the project and lose the firmware patches; the instance attribute shadows the method for this object only."""
    hls_model.compile = lambda: None


def render_softmax_config(layer) -> str:
    """The C++ config struct of a Softmax `layer`, rendered from its current attributes.

    hls4ml 1.3.0 renders each layer's struct once, during conversion (a template pass sets the `config_cpp`
    attribute, which `write()` copies out), with the types of that moment inlined; after types are changed on
    the layer, the struct is rendered again with the backend's template class, `SoftmaxConfigTemplate` in
    `hls4ml.backends.vivado.passes.core_templates` (an internal module; Vitis and VivadoAccelerator use the
    Vivado templates)."""
    from hls4ml.backends.vivado.passes.core_templates import SoftmaxConfigTemplate

    return SoftmaxConfigTemplate().format(layer)
