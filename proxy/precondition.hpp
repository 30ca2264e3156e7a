// RFC 9110 §8.8.3 entity-tags and §13 preconditions as pure functions: header text in, a
// decision out. No I/O, exhaustively unit-tested (tests/unit/precondition_test.cpp).
#pragma once

#include "cache/condition.hpp"

#include <boost/system/result.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ifm::proxy {

struct entity_tag {
    bool weak = false;
    std::string opaque;   // with its quotes: "\"abc\""
    std::string str() const { return weak ? "W/" + opaque : opaque; }
    bool operator==(const entity_tag&) const = default;
};

// One entity-tag, e.g. `"abc"` or `W/"abc"` (no surrounding whitespace allowed).
std::optional<entity_tag> parse_entity_tag(std::string_view text);

// The value of If-Match / If-None-Match: `*` or a comma-separated list of entity-tags
// (RFC 9110 §5.6.1: empty elements and optional whitespace allowed, at least one tag).
struct tag_list {
    bool any = false;                 // `*`
    std::vector<entity_tag> tags;
};
// Several header lines of the same field are joined by the caller with ", ".
std::optional<tag_list> parse_tag_list(std::string_view value);

// IMF-fixdate, and the obsolete RFC 850 and asctime forms (§5.6.7) -> seconds since the epoch.
std::optional<std::int64_t> parse_http_date(std::string_view text);
// The same, with the clock that resolves RFC 850's two-digit year (§5.6.7: a date more than 50
// years after `now_epoch_seconds` means the most recent past year with those two digits).
std::optional<std::int64_t> parse_http_date(std::string_view text, std::int64_t now_epoch_seconds);
std::string format_http_date(std::int64_t epoch_seconds);

// The conditional headers of a request, as received (nullopt: header absent).
struct conditional_headers {
    std::optional<std::string> if_match;
    std::optional<std::string> if_none_match;
    std::optional<std::string> if_unmodified_since;
    std::optional<std::string> if_modified_since;
};

// What the proxy makes of a write's preconditions (SPEC §3).
struct write_precondition {
    enum class kind : std::uint8_t {
        none,        // no precondition header at all (428 if the route requires one)
        condition,   // `cond` is what the store must check
        malformed,   // 400; `error` says which header and why
    };
    kind type = kind::none;
    cache::condition cond;
    std::string error;
};

// Builds the store condition from the headers (RFC 9110 §13.2.2): If-Match, else
// If-Unmodified-Since, and If-None-Match. An If-Unmodified-Since that is not a valid HTTP-date
// is ignored (§13.1.4), as is one sent together with If-Match; a malformed If-Match or
// If-None-Match is `malformed`. If-Modified-Since does not apply to writes and is ignored.
write_precondition parse_write_precondition(const conditional_headers& h);

// GET/HEAD on a hash-mode route (§13.1.2): does If-None-Match match `current_etag` (weak
// comparison)? Returns false when the header is absent or malformed (then it is ignored).
bool if_none_match_matches(std::string_view if_none_match, std::string_view current_etag);

// Reject outcomes reported in 409/412 bodies and access logs.
enum class outcome : std::uint8_t {
    not_judged,       // safe method, untracked route, or method not judged on this route
    passed,
    revalidated,      // passed after fetching the validator from the origin
    rejected_stale,
    rejected_busy,
    rejected_exists,  // If-None-Match: * on an existing resource
    missing,          // 428
    malformed,        // 400
    store_error,      // 503 (or forwarded unchecked under fail_open)
    aborted,          // judged, then neither forwarded nor rejected: revalidation failed (502/504), or
                      // the lease ran out before the write could be forwarded safely (503)
    // enforce: report (README "Report-only rollout"): judged as failing, forwarded all the same.
    would_reject_stale,
    would_reject_busy,
    would_reject_exists,
    would_reject_missing,
    // Idempotent retries (README "Idempotent retries"): the stored response replayed, not
    // forwarded; the key is in use by a write in flight (409); used with another request (422).
    replayed,
    idempotency_in_flight,
    idempotency_mismatch,
};
inline constexpr std::size_t outcome_count = static_cast<std::size_t>(outcome::idempotency_mismatch) + 1;
std::string_view to_string(outcome o);

}  // namespace ifm::proxy
