// RESP reply parser fuzzer (the proxy's own Redis transport reads replies with parse_reply): no
// crash; a reply that parses re-serializes to bytes that parse to the same reply; its every
// proper prefix is `incomplete` (never `bad`, never a shorter reply), and bytes after it change
// nothing.
#include "cache/resp.hpp"
#include "tests/fuzz/fuzz_check.hpp"

#include <cstdint>
#include <string>
#include <string_view>

using namespace ifm::cache;

namespace {

void serialize(const redis_reply& r, std::string& out) {
    switch (r.kind) {
    case redis_reply::type::nil: out += "$-1\r\n"; break;
    case redis_reply::type::status: out += "+" + r.str + "\r\n"; break;
    case redis_reply::type::error: out += "-" + r.str + "\r\n"; break;
    case redis_reply::type::integer: out += ":" + std::to_string(r.integer) + "\r\n"; break;
    case redis_reply::type::string: out += "$" + std::to_string(r.str.size()) + "\r\n" + r.str + "\r\n"; break;
    case redis_reply::type::array:
        out += "*" + std::to_string(r.elements.size()) + "\r\n";
        for (const auto& e : r.elements) serialize(e, out);
        break;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    redis_reply reply;
    auto r = parse_reply(text, reply);
    if (r.status != resp_status::done) {
        FUZZ_CHECK(r.used == 0);
        return 0;
    }
    FUZZ_CHECK(r.used > 0 && r.used <= size);
    std::string again;
    serialize(reply, again);
    redis_reply reparsed;
    auto r2 = parse_reply(again, reparsed);
    FUZZ_CHECK(r2.status == resp_status::done && r2.used == again.size());
    FUZZ_CHECK(reparsed == reply);
    // Proper prefixes: incomplete (a few of them for long inputs, to stay fast).
    const std::size_t step = r.used > 256 ? r.used / 64 : 1;
    for (std::size_t k = 0; k < r.used; k += step) {
        redis_reply partial;
        FUZZ_CHECK(parse_reply(text.substr(0, k), partial).status == resp_status::incomplete);
    }
    // Bytes after the reply are not read.
    std::string longer(text.substr(0, r.used));
    longer += "*3\r\n-junk";
    redis_reply same;
    auto r3 = parse_reply(longer, same);
    FUZZ_CHECK(r3.status == resp_status::done && r3.used == r.used && same == reply);
    return 0;
}
