// lepton_axis: AXI4-Stream wrapper around a da4ml pipelined core (`lepton_core_wrapper`), speaking the
// packed-word format of docs/package-layout.md ("Numbers on the wire"), the same as the HLS wrapper:
// 32-bit words of IN_LANE-bit input lanes / OUT_LANE-bit output lanes, little-endian, sample-major and
// continuous across samples. The input word carrying TLAST ends the batch (its unused lanes are padding; a
// sample cut short by it is finished on zeros). The output packet is the batch's data words, then one check
// word carrying TLAST: the CRC-32 of the data words (IEEE 802.3, as zlib.crc32 over their little-endian bytes),
// computed here as they leave, so the host can tell bits flipped on the way from results.
//
// The core is a free-running pipeline (II = 1, no enable). Samples enter it only when the output FIFO has
// room for every sample in flight, so downstream backpressure (m_axis_tready low) never loses a result.
// Lanes are moved one per clock on each side, so a sample costs max(N_IN, N_OUT) cycles of stream time.
`timescale 1ns / 1ps
/* verilator lint_off WIDTHEXPAND */
/* verilator lint_off WIDTHTRUNC */
/* verilator lint_off UNUSEDSIGNAL */

module lepton_axis #(
    parameter integer N_IN = 16,         // values per input sample
    parameter integer IN_WIDTH = 16,     // bits of the input format
    parameter integer IN_SIGNED = 1,
    parameter integer IN_LANE = 16,      // lane width on the wire (8, 16 or 32)
    parameter integer IN_BW = 16,        // bits per value on the core's input port
    parameter integer IN_SHIFT = 0,      // core fraction bits minus input-format fraction bits (>= 0)
    parameter integer N_OUT = 5,
    parameter integer OUT_WIDTH = 16,
    parameter integer OUT_SIGNED = 1,
    parameter integer OUT_LANE = 16,
    parameter integer OUT_BW = 16,       // bits per value on the core's output port
    parameter integer CORE_OUT_SIGNED = 1,
    parameter integer OUT_SHIFT = 0,     // output-format fraction bits minus the core's (>= 0)
    parameter integer CORE_DELAY = 4,    // clock edges from a registered core input to its output
    parameter integer FIFO_LOG2 = 4,     // output FIFO of 2**FIFO_LOG2 samples (> CORE_DELAY)
    // the check word's CRC (lepton_host/packing.py passes its constants; these are the same)
    parameter [31:0] CRC_POLY = 32'hEDB88320,  // reflected: words are fed least significant bit first
    parameter [31:0] CRC_INIT = 32'hFFFFFFFF,
    parameter [31:0] CRC_XOROUT = 32'hFFFFFFFF
) (
    input  wire        clk,
    input  wire        aresetn,
    input  wire [31:0] s_axis_tdata,
    input  wire        s_axis_tvalid,
    output wire        s_axis_tready,
    input  wire        s_axis_tlast,
    output reg  [31:0] m_axis_tdata,
    output reg         m_axis_tvalid,
    input  wire        m_axis_tready,
    output reg         m_axis_tlast
);
    localparam integer IN_PER_WORD = 32 / IN_LANE;
    localparam integer OUT_PER_WORD = 32 / OUT_LANE;
    localparam integer DEPTH = 1 << FIFO_LOG2;
    localparam integer OUT_BITS = N_OUT * OUT_LANE;

    // ---- input: words -> lanes -> one sample register ------------------------------------------------
    reg [31:0] in_word;
    reg [7:0]  in_left;     // lanes of in_word not yet consumed
    reg        in_last;     // the batch's TLAST word has been fetched
    reg [N_IN*IN_BW-1:0] sbuf;
    reg [15:0] sidx;        // next lane slot of the sample being gathered
    reg [N_IN*IN_BW-1:0] core_in;
    reg        issue;       // core_in took a new sample on this edge
    reg        issue_last;

    wire [N_OUT*OUT_BW-1:0] core_out;
    lepton_core_wrapper core (.clk(clk), .model_inp(core_in), .model_out(core_out));

    reg [15:0] pending;     // samples issued into the core and not yet popped from the FIFO
    wire credit = pending < DEPTH;
    wire have_lane = (in_left != 0) || (in_last && sidx != 0);
    wire completes = (sidx == N_IN - 1);
    wire step_in = have_lane && (!completes || credit);
    assign s_axis_tready = aresetn && (in_left == 0) && !in_last;

    wire [IN_LANE-1:0] lane_in = (in_left != 0) ? in_word[IN_LANE-1:0] : {IN_LANE{1'b0}};
    wire [63:0] lane_ext = IN_SIGNED ? {{(64 - IN_WIDTH){lane_in[IN_WIDTH-1]}}, lane_in[IN_WIDTH-1:0]}
                                     : {{(64 - IN_WIDTH){1'b0}}, lane_in[IN_WIDTH-1:0]};
    wire [63:0] lane_core = lane_ext << IN_SHIFT;

    reg [N_IN*IN_BW-1:0] sample_next;
    always @(*) begin
        sample_next = sbuf;
        sample_next[sidx*IN_BW +: IN_BW] = lane_core[IN_BW-1:0];
    end

    always @(posedge clk) begin
        issue <= 1'b0;
        if (!aresetn) begin
            in_left <= 0;
            in_last <= 1'b0;
            sidx <= 0;
            issue_last <= 1'b0;
        end else begin
            if (s_axis_tvalid && s_axis_tready) begin
                in_word <= s_axis_tdata;
                in_left <= IN_PER_WORD;
                in_last <= s_axis_tlast;
            end else if (step_in) begin
                sbuf <= sample_next;
                if (in_left != 0) begin
                    in_word <= in_word >> IN_LANE;
                    in_left <= in_left - 1;
                end
                if (completes) begin
                    core_in <= sample_next;
                    issue <= 1'b1;
                    issue_last <= in_last;
                    sidx <= 0;
                    if (in_last) begin
                        // whatever is left of the TLAST word is padding
                        in_left <= 0;
                        in_last <= 1'b0;
                    end
                end else begin
                    sidx <= sidx + 1;
                end
            end
        end
    end

    // ---- the core's latency, tracked beside it ---------------------------------------------------------
    reg [CORE_DELAY-1:0] vpipe;
    reg [CORE_DELAY-1:0] lpipe;
    always @(posedge clk) begin
        if (!aresetn) begin
            vpipe <= 0;
            lpipe <= 0;
        end else begin
            vpipe <= {vpipe[CORE_DELAY-2:0], issue};
            lpipe <= {lpipe[CORE_DELAY-2:0], issue_last};
        end
    end
    wire result_valid = vpipe[CORE_DELAY-1];
    wire result_last = lpipe[CORE_DELAY-1];

    // core values -> output-format lanes
    reg [OUT_BITS-1:0] result_lanes;
    integer j;
    reg [63:0] v;
    always @(*) begin
        for (j = 0; j < N_OUT; j = j + 1) begin
            v = CORE_OUT_SIGNED ? {{(64 - OUT_BW){core_out[j*OUT_BW + OUT_BW - 1]}}, core_out[j*OUT_BW +: OUT_BW]}
                                : {{(64 - OUT_BW){1'b0}}, core_out[j*OUT_BW +: OUT_BW]};
            v = v << OUT_SHIFT;
            result_lanes[j*OUT_LANE +: OUT_LANE] = OUT_SIGNED ? {{(64 - OUT_WIDTH){v[OUT_WIDTH-1]}}, v[OUT_WIDTH-1:0]}
                                                              : {{(64 - OUT_WIDTH){1'b0}}, v[OUT_WIDTH-1:0]};
        end
    end

    // ---- output FIFO of whole samples ----------------------------------------------------------------------
    reg [OUT_BITS:0] fifo [0:DEPTH-1];
    reg [FIFO_LOG2:0] wr_ptr, rd_ptr;
    wire fifo_empty = (wr_ptr == rd_ptr);
    wire [OUT_BITS:0] head = fifo[rd_ptr[FIFO_LOG2-1:0]];
    reg pop;

    always @(posedge clk) begin
        if (!aresetn) begin
            wr_ptr <= 0;
        end else if (result_valid) begin
            fifo[wr_ptr[FIFO_LOG2-1:0]] <= {result_last, result_lanes};
            wr_ptr <= wr_ptr + 1;
        end
    end

    wire issue_now = step_in && completes;
    always @(posedge clk) begin
        if (!aresetn) pending <= 0;
        else pending <= pending + (issue_now ? 16'd1 : 16'd0) - (pop ? 16'd1 : 16'd0);
    end

    // ---- lanes -> output words, then the check word ----------------------------------------------------------
    // One data word into the running CRC, least significant bit first: 32 unrolled shift/XOR steps.
    function [31:0] crc32_word(input [31:0] crc_in, input [31:0] word);
        integer b;
        reg [31:0] c;
        begin
            c = crc_in;
            for (b = 0; b < 32; b = b + 1)
                c = (c[0] ^ word[b]) ? ((c >> 1) ^ CRC_POLY) : (c >> 1);
            crc32_word = c;
        end
    endfunction

    reg [15:0] oidx;        // lane of the head sample to send next
    reg [7:0]  out_used;
    reg [31:0] out_word;
    reg [31:0] crc;         // CRC of the data words sent so far in this packet
    reg        check_due;   // the batch's data words are out: its check word goes next
    wire out_free = !m_axis_tvalid || m_axis_tready;
    wire step_out = !fifo_empty && !check_due && out_free;
    wire final_lane = head[OUT_BITS] && (oidx == N_OUT - 1);
    wire [31:0] lane_word = {{(32 - OUT_LANE){1'b0}}, head[oidx*OUT_LANE +: OUT_LANE]} << (out_used * OUT_LANE);

    always @(*) pop = step_out && (oidx == N_OUT - 1);

    always @(posedge clk) begin
        if (!aresetn) begin
            rd_ptr <= 0;
            oidx <= 0;
            out_used <= 0;
            out_word <= 0;
            crc <= CRC_INIT;
            check_due <= 1'b0;
            m_axis_tvalid <= 1'b0;
            m_axis_tlast <= 1'b0;
        end else begin
            if (m_axis_tvalid && m_axis_tready) m_axis_tvalid <= 1'b0;
            if (check_due && out_free) begin
                m_axis_tdata <= crc ^ CRC_XOROUT;
                m_axis_tvalid <= 1'b1;
                m_axis_tlast <= 1'b1;
                crc <= CRC_INIT;
                check_due <= 1'b0;
            end else if (step_out) begin
                if (out_used == OUT_PER_WORD - 1 || final_lane) begin
                    m_axis_tdata <= out_word | lane_word;
                    m_axis_tvalid <= 1'b1;
                    m_axis_tlast <= 1'b0;
                    crc <= crc32_word(crc, out_word | lane_word);
                    check_due <= final_lane;
                    out_word <= 0;
                    out_used <= 0;
                end else begin
                    out_word <= out_word | lane_word;
                    out_used <= out_used + 1;
                end
                if (oidx == N_OUT - 1) begin
                    oidx <= 0;
                    rd_ptr <= rd_ptr + 1;
                end else begin
                    oidx <= oidx + 1;
                end
            end
        end
    end
endmodule
/* verilator lint_on WIDTHEXPAND */
/* verilator lint_on WIDTHTRUNC */
/* verilator lint_on UNUSEDSIGNAL */
