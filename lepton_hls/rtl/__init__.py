"""Open-source RTL for an overlay package: the package's fixed-point arithmetic replayed on da4ml's symbolic
arrays, emitted as a pipelined Verilog/VHDL core, and built into a Verilator emulator."""
