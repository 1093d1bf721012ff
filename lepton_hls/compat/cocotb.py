"""cocotb internals the RTL flow relies on. Written against cocotb 2.1.0."""

from __future__ import annotations

from collections.abc import Callable
from typing import IO


class HookMissing(RuntimeError):
    """The installed cocotb lacks a hook this module relies on."""


def verilator_runner(execute: Callable[[list[str], str, dict | None, IO | None], None]):
    """cocotb's Verilator runner with each of its commands (verilator, make, the simulation) run by
    `execute(argv, cwd, env, stdout)` instead of cocotb's own subprocess call.

    cocotb 2.1.0: `cocotb_tools.runner.Runner` runs every command of `build()` and `test()` through
    `_execute_cmds(cmds, cwd, stdout=None)` (a plain `subprocess.run` with `self.env`, no time limit), so
    overriding that one method reroutes them all. Raises `HookMissing` when the method is gone."""
    from cocotb_tools.runner import Verilator

    if not callable(getattr(Verilator, "_execute_cmds", None)):
        raise HookMissing("cocotb's runner has no _execute_cmds")

    class RoutedVerilator(Verilator):
        def _execute_cmds(self, cmds, cwd, stdout=None) -> None:
            for cmd in cmds:
                self.log.info("Running command %s in directory %s", " ".join(map(str, cmd)), cwd)
                execute([str(c) for c in cmd], cwd, self.env, stdout)

    return RoutedVerilator()
