// C simulation testbench for the generated AXI4-Stream wrapper (ip/hls/lepton_accel.cpp.tmpl).
//
//   tb_lepton_accel IN_WORDS OUT_WORDS
//
// IN_WORDS holds batches as the DMA would send them: "batch W" then W hexadecimal 32-bit words; the
// testbench raises TLAST on each batch's last word. Every batch goes through the wrapper once; the words
// it returns are written to OUT_WORDS as "batch W" then "word last" lines, for the caller to compare with
// the model. The testbench itself checks, per batch, that:
//   - the output's data words equal the core (lepton_core) run sample by sample on the same lanes and packed
//     by the wire rules, bit for bit;
//   - one check word follows them: the CRC-32 (zlib.crc32) of the data words as little-endian bytes, computed
//     here independently of the wrapper (byte-wise, from a table);
//   - TLAST is set on the last output word (the check word) and on no other;
//   - the wrapper consumed exactly the batch's words and left nothing behind in either stream.
// Exit status 0 when every check holds, 1 otherwise (each failure is printed).
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "lepton_accel.h"

namespace {

int failures = 0;

void fail(int batch, const std::string &what) {
    std::cerr << "batch " << batch << ": " << what << "\n";
    failures++;
}

// Lane k of a word sequence, read by the spec: word k / lanes_per_word, bit (k % lanes_per_word) * L.
unsigned long lane_of(const std::vector<unsigned long> &words, unsigned long k, int lane_bits) {
    int per_word = 32 / lane_bits;
    if (k / per_word >= words.size()) return 0;
    unsigned long word = words[k / per_word];
    unsigned long shifted = word >> ((k % per_word) * lane_bits);
    return lane_bits == 32 ? (shifted & 0xffffffffUL) : (shifted & ((1UL << lane_bits) - 1));
}

// zlib.crc32 of the words' little-endian bytes, the textbook byte-at-a-time way.
unsigned long crc32_of(const std::vector<unsigned long> &words, size_t count) {
    static unsigned long table[256];
    static bool ready = false;
    if (!ready) {
        for (unsigned long n = 0; n < 256; n++) {
            unsigned long c = n;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320UL ^ (c >> 1) : c >> 1;
            table[n] = c;
        }
        ready = true;
    }
    unsigned long crc = 0xffffffffUL;
    for (size_t i = 0; i < count; i++)
        for (int byte = 0; byte < 4; byte++)
            crc = table[(crc ^ (words[i] >> (8 * byte))) & 0xff] ^ (crc >> 8);
    return crc ^ 0xffffffffUL;
}

std::vector<unsigned long> expected_words(const std::vector<unsigned long> &in_words, unsigned long samples) {
    std::vector<unsigned long> out((samples * LEPTON_N_OUT + LEPTON_OUT_LANES_PER_WORD - 1) /
                                   LEPTON_OUT_LANES_PER_WORD, 0UL);
    for (unsigned long s = 0; s < samples; s++) {
        lepton_in_t x[LEPTON_N_IN];
        lepton_out_t y[LEPTON_N_OUT];
        for (int i = 0; i < LEPTON_N_IN; i++) {
            unsigned long bits = lane_of(in_words, s * LEPTON_N_IN + i, LEPTON_IN_LANE);
            ap_uint<LEPTON_IN_LANE> lane = bits;
            x[i].range(LEPTON_IN_WIDTH - 1, 0) = lane.range(LEPTON_IN_WIDTH - 1, 0);
        }
        lepton_core(x, y);
        for (int j = 0; j < LEPTON_N_OUT; j++) {
            long long raw = 0;
            ap_uint<LEPTON_OUT_WIDTH> bits;
            bits.range(LEPTON_OUT_WIDTH - 1, 0) = y[j].range(LEPTON_OUT_WIDTH - 1, 0);
            raw = (long long)bits.to_uint64();
            if (LEPTON_OUT_SIGNED && LEPTON_OUT_WIDTH < 64 && (raw >> (LEPTON_OUT_WIDTH - 1)) & 1)
                raw -= (1LL << LEPTON_OUT_WIDTH);  // two's complement value of the raw bits
            unsigned long lane_mask = LEPTON_OUT_LANE == 32 ? 0xffffffffUL : ((1UL << LEPTON_OUT_LANE) - 1);
            unsigned long lane = (unsigned long)raw & lane_mask;  // sign/zero extension to the lane
            unsigned long k = s * LEPTON_N_OUT + j;
            out[k / LEPTON_OUT_LANES_PER_WORD] |= lane << ((k % LEPTON_OUT_LANES_PER_WORD) * LEPTON_OUT_LANE);
        }
    }
    for (auto &w : out) w &= 0xffffffffUL;
    return out;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 3) {
        std::cerr << "usage: " << argv[0] << " IN_WORDS OUT_WORDS\n";
        return 2;
    }
    std::ifstream in(argv[1]);
    std::ofstream out(argv[2]);
    if (!in || !out) {
        std::cerr << "cannot open " << argv[1] << " or " << argv[2] << "\n";
        return 2;
    }
    std::string tag;
    unsigned long n_words;
    int batch = 0;
    unsigned long total_samples = 0;
    while (in >> tag >> n_words) {
        if (tag != "batch" || n_words == 0) {
            std::cerr << "malformed input: expected 'batch W' with W > 0\n";
            return 2;
        }
        std::vector<unsigned long> words(n_words);
        hls::stream<axis_word_t> s_in("in_stream"), s_out("out_stream");
        for (unsigned long i = 0; i < n_words; i++) {
            in >> std::hex >> words[i] >> std::dec;
            axis_word_t w;
            w.data = words[i];
            w.keep = -1;
            w.strb = -1;
            w.last = (i == n_words - 1) ? 1 : 0;
            s_in.write(w);
        }
        // The sample holding the first lane of the TLAST word is the batch's last one. A batch cut inside a
        // sample ends there too: the wrapper completes that sample with zero lanes (lane_of gives 0 past
        // the end), so the output packet still closes.
        unsigned long samples = (n_words - 1) * LEPTON_IN_LANES_PER_WORD / LEPTON_N_IN + 1;
        if ((samples * LEPTON_N_IN + LEPTON_IN_LANES_PER_WORD - 1) / LEPTON_IN_LANES_PER_WORD != n_words)
            std::cout << "batch " << batch << ": " << n_words << " words end inside sample " << samples - 1 << "\n";

        lepton_accel(s_in, s_out);

        std::vector<unsigned long> got;
        std::vector<int> last;
        while (!s_out.empty()) {
            axis_word_t w = s_out.read();
            got.push_back((unsigned long)w.data.to_uint64());
            last.push_back((int)w.last);
        }
        if (!s_in.empty()) fail(batch, "the wrapper left input words unread");
        std::vector<unsigned long> want = expected_words(words, samples);
        if (got.size() != want.size() + LEPTON_CHECK_WORDS) {
            std::ostringstream m;
            m << "expected " << want.size() << " data words and " << LEPTON_CHECK_WORDS << " check word, got "
              << got.size() << " words";
            fail(batch, m.str());
        } else if (got.back() != crc32_of(got, want.size())) {
            std::ostringstream m;
            m << "check word is 0x" << std::hex << got.back() << ", the CRC-32 of the data words is 0x"
              << crc32_of(got, want.size());
            fail(batch, m.str());
        }
        for (size_t i = 0; i < got.size() && i < want.size(); i++) {
            if (got[i] != want[i]) {
                std::ostringstream m;
                m << "output word " << i << " is 0x" << std::hex << got[i] << ", the core gives 0x" << want[i];
                fail(batch, m.str());
                break;
            }
        }
        for (size_t i = 0; i < last.size(); i++) {
            bool should = (i == last.size() - 1);
            if ((last[i] == 1) != should) {
                std::ostringstream m;
                m << "TLAST is " << last[i] << " on output word " << i << " of " << last.size();
                fail(batch, m.str());
            }
        }
        out << "batch " << got.size() << "\n";
        for (size_t i = 0; i < got.size(); i++) out << std::hex << got[i] << std::dec << " " << last[i] << "\n";
        total_samples += samples;
        batch++;
    }
    std::cout << "checked " << batch << " batches, " << total_samples << " samples: "
              << (failures ? "FAILED" : "wrapper == core, check word == CRC-32, TLAST on the last word") << std::endl;
    return failures ? 1 : 0;
}
