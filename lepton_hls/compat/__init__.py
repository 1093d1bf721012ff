"""Every use of a third-party library's private or internal API, one module per library.

Code elsewhere in the project uses these libraries only through their public API and the functions here, so an
upgrade of hls4ml, da4ml, QKeras or cocotb is checked against one file each. Each function names the version it
was written against and what it relies on. `tests/test_compat_hooks.py` fails when code outside these modules
reaches into a library's private names again. The board side keeps its own (`lepton_host.compat`), since it
never imports the build side.
"""
