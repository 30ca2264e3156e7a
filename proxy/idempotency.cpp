#include "proxy/idempotency.hpp"

#include "proxy/hasher.hpp"

#include <charconv>

namespace ifm::proxy {

namespace {

std::string_view trim_blanks(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// One header line of the stored form: no CR/LF can occur in a field value Beast accepted.
bool one_line(std::string_view s) { return s.find_first_of("\r\n") == std::string_view::npos; }

}  // namespace

std::optional<std::string> parse_idempotency_key(std::string_view field) {
    auto s = trim_blanks(field);
    if (s.size() < 2 || s.front() != '"' || s.back() != '"') return std::nullopt;
    s = s.substr(1, s.size() - 2);
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        if (c < 0x20 || c > 0x7e) return std::nullopt;
        if (c == '"') return std::nullopt;   // an unescaped quote ends the string early
        if (c == '\\') {
            if (++i == s.size() || (s[i] != '"' && s[i] != '\\')) return std::nullopt;
            c = s[i];
        }
        out += c;
    }
    if (out.empty() || out.size() > max_idempotency_key) return std::nullopt;
    return out;
}

std::string request_fingerprint(const fingerprint_input& in) {
    // Length-prefixed fields: no two different inputs give one string.
    std::string s;
    for (auto part : {in.method, in.resource, in.body_sha256, in.if_match, in.if_none_match,
                      in.if_unmodified_since, in.if_modified_since}) {
        s += std::to_string(part.size());
        s += ':';
        s += part;
    }
    return sha256_hex(s);
}

// "v1\n<status>\n<etag>\n<location>\n<content-type>\n<b|->\n<body>"
std::string encode_response(const stored_response& r) {
    std::string s = "v1\n" + std::to_string(r.status) + "\n";
    for (const auto* f : {&r.etag, &r.location, &r.content_type}) s += (one_line(*f) ? *f : std::string{}) + "\n";
    s += r.body_stored ? "b\n" : "-\n";
    s += r.body;
    return s;
}

std::optional<stored_response> decode_response(std::string_view s) {
    std::string_view line[6];
    for (auto& l : line) {
        auto nl = s.find('\n');
        if (nl == std::string_view::npos) return std::nullopt;
        l = s.substr(0, nl);
        s.remove_prefix(nl + 1);
    }
    stored_response r;
    if (line[0] != "v1") return std::nullopt;
    auto [p, ec] = std::from_chars(line[1].data(), line[1].data() + line[1].size(), r.status);
    if (ec != std::errc{} || p != line[1].data() + line[1].size() || r.status < 100 || r.status > 599) return std::nullopt;
    r.etag = line[2];
    r.location = line[3];
    r.content_type = line[4];
    if (line[5] != "b" && line[5] != "-") return std::nullopt;
    r.body_stored = line[5] == "b";
    r.body = s;
    return r;
}

}  // namespace ifm::proxy
