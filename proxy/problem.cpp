#include "proxy/problem.hpp"

#include <boost/beast/http/field.hpp>

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace ifm::proxy {

std::size_t utf8_sequence_length(std::string_view s) {
    if (s.empty()) return 0;
    auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
    auto cont = [&](std::size_t i) { return i < s.size() && (b(i) & 0xc0) == 0x80; };
    unsigned char c = b(0);
    if (c < 0x80) return 1;
    // RFC 3629 §4: the second byte's range excludes overlongs (E0, F0), surrogates (ED) and
    // code points past U+10FFFF (F4).
    if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (!cont(1) || !cont(2)) return 0;
        if (c == 0xe0 && b(1) < 0xa0) return 0;
        if (c == 0xed && b(1) > 0x9f) return 0;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (!cont(1) || !cont(2) || !cont(3)) return 0;
        if (c == 0xf0 && b(1) < 0x90) return 0;
        if (c == 0xf4 && b(1) > 0x8f) return 0;
        return 4;
    }
    return 0;
}

namespace {

// Whether any of the 8 bytes of `x` needs an escape or a UTF-8 check: below 0x20, 0x7f and
// above, '"' or '\\' (the bit tricks of "Bit Twiddling Hacks": a zero byte, a byte less than n).
bool word_needs_care(std::uint64_t x) {
    constexpr std::uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    auto has_zero = [&](std::uint64_t v) { return (v - ones) & ~v & highs; };
    const std::uint64_t below_space = (x - ones * 0x20) & ~x & highs;
    return (x & highs) | below_space | has_zero(x ^ (ones * '"')) | has_zero(x ^ (ones * '\\')) |
           has_zero(x ^ (ones * 0x7f));
}

void append_json_chars(std::string& out, std::string_view s) {
    // Runs of bytes that need no escape (printable ASCII, well-formed UTF-8) are appended whole,
    // and looked at 8 bytes at a time: a byte at a time, a 409's problem body cost 3.3k
    // instructions of escaping (callgrind); one append per character had cost 7k.
    std::size_t run = 0;   // first byte not appended yet
    for (std::size_t i = 0; i < s.size();) {
        if (i + 8 <= s.size()) {
            std::uint64_t word;
            std::memcpy(&word, s.data() + i, 8);
            if (!word_needs_care(word)) {
                i += 8;
                continue;
            }
        }
        auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            ++i;
            continue;
        }
        if (c >= 0x80) {
            if (auto n = utf8_sequence_length(s.substr(i))) {
                i += n;   // well-formed: part of the run
                continue;
            }
        }
        out.append(s.data() + run, i - run);
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (c >= 0x80) {
                out += "\\ufffd";   // one replacement per stray byte
            } else {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", c);
                out += buf;
            }
        }
        run = ++i;
    }
    out.append(s.data() + run, s.size() - run);
}

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
    out.reserve(out.size() + s.size() + 2);
    out += '"';
    append_json_chars(out, s);
    out += '"';
}

response_message<http::string_body> make_problem_response(const problem& p, unsigned version,
                                                        bool keep_alive, bool head_request,
                                                        std::string_view request_id) {
    std::string body;
    body.reserve(160 + p.slug.size() + p.title.size() + p.detail.size() + p.instance.size() + request_id.size());
    body += "{\"type\":\"urn:ifmatch-proxy:problem:";
    append_json_chars(body, p.slug);
    body += "\",\"title\":";
    append_json_string(body, p.title);
    char status[16];
    body += ",\"status\":";
    body.append(status, std::to_chars(status, status + sizeof status, p.status).ptr);
    body += ",\"detail\":";
    append_json_string(body, p.detail);
    body += ",\"instance\":";
    append_json_string(body, p.instance);
    if (p.current_etag) {
        body += ",\"current_etag\":";
        append_json_string(body, *p.current_etag);
    }
    if (!request_id.empty()) {
        body += ",\"request_id\":";
        append_json_string(body, request_id);
    }
    body += "}\n";

    response_message<http::string_body> res{static_cast<http::status>(p.status), version};
    res.set(http::field::server, "ifmatch-proxy");
    res.set(http::field::content_type, "application/problem+json");
    res.set(http::field::cache_control, "no-store");
    if (p.current_etag && !p.current_etag->empty()) res.set(http::field::etag, *p.current_etag);
    if (p.retry_after) res.set(http::field::retry_after, std::to_string(p.retry_after));
    if (!request_id.empty()) res.set("X-Request-Id", request_id);
    res.keep_alive(keep_alive);
    res.content_length(body.size());
    if (!head_request) res.body() = std::move(body);
    return res;
}

}  // namespace ifm::proxy
