#include "proxy/request_id.hpp"

#include <array>
#include <cstdint>
#include <random>

namespace ifm::proxy {

bool valid_request_id(std::string_view id) {
    if (id.empty() || id.size() > 128) return false;
    for (unsigned char c : id)
        if (c < 0x21 || c > 0x7e) return false;
    return true;
}

std::string generate_request_id() {
    // Seeded once per thread from the OS; ids need to be unique, not unpredictable.
    thread_local std::mt19937_64 rng([] {
        std::random_device rd;
        std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
        return std::mt19937_64(seq);
    }());
    static constexpr char hex[] = "0123456789abcdef";
    std::string out(32, '0');
    for (std::size_t half = 0; half < 2; ++half) {
        std::uint64_t v = rng();
        for (std::size_t i = 0; i < 16; ++i, v >>= 4) out[half * 16 + i] = hex[v & 0xf];
    }
    return out;
}

std::string_view trace_id_of(std::string_view tp) {
    // 00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>
    auto lower_hex = [](std::string_view s) {
        for (char c : s)
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
        return true;
    };
    if (tp.size() != 55 || !tp.starts_with("00-") || tp[35] != '-' || tp[52] != '-') return {};
    auto id = tp.substr(3, 32);
    if (!lower_hex(id) || !lower_hex(tp.substr(36, 16)) || !lower_hex(tp.substr(53, 2))) return {};
    if (id.find_first_not_of('0') == std::string_view::npos) return {};
    return id;
}

}  // namespace ifm::proxy
