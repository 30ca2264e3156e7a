// What the validator store knows of a resource, and the precondition it checks atomically.
// `evaluate` is the single C++ statement of the rules; cache/lua/acquire.lua mirrors it and the
// store suite runs both against the same cases.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ifm::cache {

struct resource_state {
    enum class kind : std::uint8_t {
        unknown,  // never seen, or the outcome of a write is unknown: revalidate at the origin
        absent,   // the origin said 404/410 (or a DELETE succeeded)
        present,  // exists; `etag` is its current strong validator (may be empty: exists, tag unknown)
    };
    kind state = kind::unknown;
    std::string etag;                      // full entity-tag with quotes, e.g. "\"abc\""; never weak
    std::optional<std::int64_t> last_modified;  // seconds since the epoch, when the origin sent it

    static resource_state unknown() { return {}; }
    static resource_state absent() { return {kind::absent, {}, {}}; }
    static resource_state present(std::string etag, std::optional<std::int64_t> lm = {}) {
        return {kind::present, std::move(etag), lm};
    }
    bool known() const { return state != kind::unknown; }
    bool operator==(const resource_state&) const = default;
};

// A request's preconditions reduced to what the store must check (SPEC §3, RFC 9110 §13.2.2).
// The proxy builds it from the request headers: weak tags are already dropped from the If-Match
// list (they never match strongly), and `W/` is already stripped from the If-None-Match list
// (weak comparison), so the store compares strings only.
struct condition {
    enum class match : std::uint8_t { none, any, list };

    match if_match = match::none;         // any: passes iff present; list: iff etag in the list
    std::vector<std::string> if_match_tags;
    // Checked only when if_match == none: passes iff last_modified <= date; ignored (passes)
    // when the state has no last_modified.
    std::optional<std::int64_t> if_unmodified_since;
    match if_none_match = match::none;    // any: passes iff not present; list: fails iff etag in it
    std::vector<std::string> if_none_match_tags;

    // No precondition at all: an unconditional write (passes, still takes the lease).
    bool unconditional() const {
        return if_match == match::none && !if_unmodified_since && if_none_match == match::none;
    }
    bool operator==(const condition&) const = default;
};

enum class verdict : std::uint8_t {
    pass,
    stale,    // If-Match / If-Unmodified-Since / If-None-Match list failed
    exists,   // If-None-Match: * on a present resource ("already exists")
};
// Evaluates `c` against a *known* state in RFC 9110 §13.2.2 order. (Callers revalidate an unknown
// state first; an unknown state here is treated like absent.)
verdict evaluate(const condition& c, const resource_state& s);

// The same against a resource whose current representations (variants: SPEC §4, one per content
// coding or `vary` value) have the strong validators `tags`: a tag is current if it is current for
// some variant, since all of them were recorded at the same generation. `tags` empty with `kind`
// present: exists, no validator known (matches no list).
verdict evaluate(const condition& c, resource_state::kind kind, std::optional<std::int64_t> last_modified,
                 const std::vector<std::string>& tags);

// The opaque part of an entity-tag: `W/"x"` -> `"x"`, `"x"` -> `"x"`.
std::string_view opaque_tag(std::string_view tag);

}  // namespace ifm::cache
