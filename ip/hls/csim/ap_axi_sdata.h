// C-simulation stand-in for Vitis HLS's ap_axi_sdata.h, for building the stream wrapper with plain g++
// against the ap_types/ headers that hls4ml ships. Only the side channels the wrapper drives exist here
// (TDATA, TKEEP, TSTRB, TLAST); synthesis always uses the tool's own header, which this directory must
// never shadow (it is added with -I only by the C++ testbench build).
#ifndef LEPTON_CSIM_AP_AXI_SDATA_H
#define LEPTON_CSIM_AP_AXI_SDATA_H

#include "ap_int.h"

template <int D, int U, int TI, int TD>
struct ap_axiu {
    ap_uint<D> data;
    ap_uint<(D + 7) / 8> keep;
    ap_uint<(D + 7) / 8> strb;
    ap_uint<1> last;
};

template <int D, int U, int TI, int TD>
struct ap_axis {
    ap_int<D> data;
    ap_uint<(D + 7) / 8> keep;
    ap_uint<(D + 7) / 8> strb;
    ap_uint<1> last;
};

#endif
