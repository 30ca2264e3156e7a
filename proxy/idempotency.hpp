// Idempotent retries (SPEC §9, README "Idempotent retries"): the `Idempotency-Key` request header
// of the IETF httpapi draft, its fingerprint, and the response a completed write stores for a
// retry to replay. The session part lives in proxy/idempotency_session.cpp.
#pragma once

#include "proxy/hasher.hpp"   // sha256_hex

#include <optional>
#include <string>
#include <string_view>

namespace ifm::proxy {

// The header a replayed response carries (common practice: Stripe, the draft's examples).
inline constexpr std::string_view replay_header = "Idempotency-Replayed";
// Keys longer than this are refused (the draft leaves the length to the resource; 255 is usual).
inline constexpr std::size_t max_idempotency_key = 255;

// A Structured Field string (RFC 8941 §3.3.3): DQUOTE *( unescaped / "\" ( DQUOTE / "\" ) ) DQUOTE,
// printable ASCII, surrounding blanks allowed. Returns the unescaped value; nullopt if malformed,
// empty or longer than max_idempotency_key.
std::optional<std::string> parse_idempotency_key(std::string_view field);

// What identifies the request a key was first used with: method, resource key (normalized
// target), SHA-256 of the body, and the precondition headers as sent.
struct fingerprint_input {
    std::string_view method;
    std::string_view resource;
    std::string_view body_sha256;
    std::string_view if_match, if_none_match, if_unmodified_since, if_modified_since;
};
std::string request_fingerprint(const fingerprint_input& in);

// The response of a completed write, as stored. `body_stored` false: the body was larger than
// max_response_bytes and a replay carries none.
struct stored_response {
    unsigned status = 0;
    std::string etag, location, content_type;
    bool body_stored = true;
    std::string body;
    bool operator==(const stored_response&) const = default;
};
std::string encode_response(const stored_response& r);
std::optional<stored_response> decode_response(std::string_view s);

}  // namespace ifm::proxy
