// Request path fuzzer: raw client bytes through gate_request(), the same screen, parser
// settings, checks, rewrite and body relay as client_session. Crash-only fuzzing misses
// desyncs (HARDENING.md), so every outcome is also checked against an independent strict parser:
// - what is forwarded re-parses as exactly one request, nothing left over, with the method,
//   target and body the proxy understood, and framing headers only of our own making;
// - anything forwarded was a valid request for the strict parser too, and both agree on where
//   it ends and on its body; neither waits for bytes the other considers the next request;
// - a refused request never reaches the origin whole;
// - the store key of any accepted target stays bounded and inside its route's namespace.
#include "proxy/request_gate.hpp"
#include "proxy/resource_key.hpp"
#include "tests/fuzz/fuzz_check.hpp"
#include "tests/fuzz/strict_http.hpp"

#include <cstdint>
#include <string_view>

using ifm::fuzz::strict_parse;
using ifm::fuzz::strict_request;
using kind = ifm::proxy::gate_result::kind;

namespace {

ifm::config::limits_config fuzz_limits() {
    ifm::config::limits_config l;
    l.max_header_bytes = 4096;
    l.max_body_bytes = 64 * 1024;
    l.max_target_bytes = 1024;
    l.max_header_fields = 32;
    return l;
}

bool printable_key(std::string_view k) {
    for (unsigned char c : k)
        if (c <= 0x20 || c >= 0x7f || c == '{' || c == '}') return false;
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const auto limits = fuzz_limits();
    std::string_view input(reinterpret_cast<const char*>(data), size);
    auto r = ifm::proxy::gate_request(input, limits);
    auto client = strict_parse(input);

    switch (r.outcome) {
    case kind::forwarded: {
        auto out = strict_parse(r.forwarded);
        FUZZ_CHECK(out.status == strict_request::kind::complete);
        FUZZ_CHECK(out.consumed == r.forwarded.size());
        FUZZ_CHECK(out.method == r.method);
        FUZZ_CHECK(out.target == r.target);
        FUZZ_CHECK(out.body == r.body);
        FUZZ_CHECK(out.version == 11);
        FUZZ_CHECK(!(out.count("content-length") && out.count("transfer-encoding")));
        for (auto name : {"connection", "keep-alive", "upgrade", "te", "trailer", "proxy-authorization"})
            FUZZ_CHECK(out.count(name) == 0);
        FUZZ_CHECK(r.consumed > 0 && r.consumed <= input.size());
        FUZZ_CHECK(r.body.size() <= limits.max_body_bytes);
        // Origin-form, or the asterisk-form of OPTIONS (RFC 9112 §3.2.4).
        FUZZ_CHECK(r.target.size() <= limits.max_target_bytes && !r.target.empty() &&
                   (r.target[0] == '/' || (r.target == "*" && r.method == "OPTIONS")));
        // Whatever is forwarded was a valid request to begin with, ending where ours ended.
        FUZZ_CHECK(client.status == strict_request::kind::complete);
        FUZZ_CHECK(client.consumed == r.consumed);
        FUZZ_CHECK(client.body == r.body);
        FUZZ_CHECK(client.method == r.method);
        auto key = ifm::proxy::resource_key("r", r.normalized, {});
        FUZZ_CHECK(key.size() <= ifm::proxy::max_resource_key_bytes);
        FUZZ_CHECK(key.starts_with("r|") || key.starts_with("r#"));
        FUZZ_CHECK(printable_key(key));
        break;
    }
    case kind::refused: {
        FUZZ_CHECK(r.refusal.has_value());
        auto s = r.refusal->status;
        FUZZ_CHECK(s == 400 || s == 413 || s == 414 || s == 431);
        if (!r.forwarded.empty())
            FUZZ_CHECK(strict_parse(r.forwarded).status != strict_request::kind::complete);
        break;
    }
    case kind::incomplete:
        FUZZ_CHECK(client.status != strict_request::kind::complete);
        if (!r.forwarded.empty())
            FUZZ_CHECK(strict_parse(r.forwarded).status != strict_request::kind::complete);
        break;
    }
    return 0;
}
