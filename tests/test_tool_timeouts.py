"""Time limits on the tools the build runs: a tool that runs past its limit is stopped with every process it
started, and the error is one line naming the tool, the limit and where to raise it.

The tools are the boundary: the stand-in `vivado` here is a shell script on PATH that starts a child and
waits, as Vivado's launcher does; what runs is our code (run_tool, the deadline and the group kill)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from lepton_hls import bounded_run
from lepton_hls.vendor import tools

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find processes")


def live_processes() -> list[tuple[int, int, bytes]]:
    """(pid, process group, command line) of every process not yet dead (zombies waiting to be reaped are)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (d / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            found.append((int(d.name), int(fields[2]), cmdline))
    return found


def hanging_vivado(bin_dir: Path) -> Path:
    """A `vivado` that records its pid and its child's, says one line and waits for a child that never ends."""
    bin_dir.mkdir(parents=True)
    exe = bin_dir / "vivado"
    exe.write_text(
        "#!/bin/sh\n"
        'echo $$ > "$1"\n'
        f"\"{sys.executable}\" -c 'import time; time.sleep(3600)' \"$0\" &\n"
        'echo $! >> "$1"\n'
        "echo 'Starting synth_design'\n"
        "wait\n"
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_a_vendor_tool_past_its_time_limit_is_stopped_with_its_children(tmp_path, monkeypatch):
    hanging_vivado(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(tools.TIMEOUT_ENV, "1")
    vivado = tools.find_tool(["vivado"], "build the bitstream")
    pids, log = tmp_path / "pids", tmp_path / "vivado.log"
    with pytest.raises(tools.ToolTimeoutError) as e:
        tools.run_tool([vivado.path, str(pids)], cwd=tmp_path, log=log)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("vivado ran past its time limit of 1 s") and f"full log: {log}" in msg
    assert tools.TIMEOUT_ENV in msg
    assert isinstance(e.value, tools.ToolFailedError)  # callers that catch a failed run catch this too
    assert "stopped after 1 s" in log.read_text()
    # Nothing of the tool is left: not the script, not the child it started, nothing in its process group.
    marker = str(vivado.path).encode()
    assert [p for p in live_processes() if marker in p[2]] == []
    started = [int(x) for x in pids.read_text().split()] if pids.exists() else []
    if started:
        assert [p for p in live_processes() if p[1] == started[0] or p[0] in started] == []


def test_the_timeout_argument_overrides_the_environment(tmp_path, monkeypatch):
    hanging_vivado(tmp_path / "bin")
    monkeypatch.setenv(tools.TIMEOUT_ENV, "86400")
    with pytest.raises(tools.ToolTimeoutError, match="time limit of 1.5 s"):
        tools.run_tool([str(tmp_path / "bin" / "vivado"), str(tmp_path / "pids")], cwd=tmp_path,
                       log=tmp_path / "v.log", timeout_s=1.5)


def test_a_tool_that_finishes_in_time_is_not_stopped(tmp_path):
    run = tools.run_tool([sys.executable, "-c", "print('done')"], cwd=tmp_path, log=tmp_path / "ok.log",
                         timeout_s=600)
    assert run.returncode == 0 and run.tail == ["done"]


@pytest.mark.parametrize("value", ["abc", "0", "-5", "inf"])
def test_a_bad_time_limit_in_the_environment_is_refused_in_one_line(tmp_path, monkeypatch, value):
    monkeypatch.setenv(tools.TIMEOUT_ENV, value)
    with pytest.raises(bounded_run.TimeoutSettingError) as e:
        tools.run_tool([sys.executable, "-c", "pass"], cwd=tmp_path, log=tmp_path / "x.log")
    assert str(e.value) == f"{tools.TIMEOUT_ENV}={value!r} is not a time limit: give a number of seconds > 0"


def test_run_bounded_stops_the_group_and_says_so(tmp_path):
    exe = hanging_vivado(tmp_path / "bin")
    with open(tmp_path / "out.log", "w") as out:
        run = bounded_run.run_bounded([str(exe), str(tmp_path / "pids")], cwd=tmp_path, timeout_s=1, stdout=out)
    assert run.expired and run.returncode != 0
    assert [p for p in live_processes() if str(exe).encode() in p[2]] == []
    fast = bounded_run.run_bounded([sys.executable, "-c", "raise SystemExit(4)"], cwd=tmp_path, timeout_s=600)
    assert (fast.expired, fast.returncode) == (False, 4)


# ---- the RTL flow: da4ml's makefile (make -> verilator -> g++) and cocotb's commands -----------------------
def test_rtl_time_limit_scales_with_the_design_unless_set(monkeypatch):
    from lepton_hls.rtl import toolchain

    monkeypatch.delenv(toolchain.TIMEOUT_ENV, raising=False)
    small, large = toolchain.verilator_timeout_s(300), toolchain.verilator_timeout_s(150_000)
    assert small >= toolchain.BASE_TIMEOUT_S and large > small
    monkeypatch.setenv(toolchain.TIMEOUT_ENV, "90")
    assert toolchain.verilator_timeout_s(150_000) == 90


def test_a_verilator_build_past_its_limit_is_stopped_and_named(tmp_path, monkeypatch):
    """da4ml's makefile run through build_emulator, with a `make` on PATH that starts a child and hangs."""
    from lepton_hls.rtl import toolchain
    from lepton_hls.rtl.errors import RtlTimeoutError, RtlToolError

    bin_dir = tmp_path / "bin"
    hanging_vivado(bin_dir).rename(bin_dir / "make")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    verilog = tmp_path / "verilog"
    (verilog / "sim").mkdir(parents=True)
    with pytest.raises(RtlTimeoutError) as e:
        toolchain.build_emulator(verilog, "lepton_core_wrapper", jobs=1, timeout_s=1)
    msg, log = str(e.value), verilog / "sim" / "verilator_build.log"
    assert "\n" not in msg and isinstance(e.value, RtlToolError)
    assert msg.startswith(f"Verilator build of {verilog} ran past its time limit of 1 s and was stopped")
    assert f"(log: {log})" in msg and f"set {toolchain.TIMEOUT_ENV} to more seconds" in msg
    assert [p for p in live_processes() if str(bin_dir / "make").encode() in p[2]] == []


def test_cocotb_commands_run_under_the_limit(tmp_path):
    from lepton_hls.rtl import toolchain
    from lepton_hls.rtl.errors import RtlTimeoutError

    exe = hanging_vivado(tmp_path / "bin")
    runner = toolchain.bounded_verilator_runner(1, "cocotb co-simulation of pkg")
    runner.env, runner.log_file = dict(os.environ), None  # what build() and test() set before their commands
    with pytest.raises(RtlTimeoutError, match=r"^cocotb co-simulation of pkg \(vivado\) ran past its time limit"):
        runner._execute([[str(exe), str(tmp_path / "pids")]], cwd=tmp_path)
    assert [p for p in live_processes() if str(exe).encode() in p[2]] == []
