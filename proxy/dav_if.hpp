// WebDAV's `If` request header (RFC 4918 §10.4) as pure functions: parse it, and split what the
// proxy must judge (entity-tag conditions on the request target, whose validator it tracks) from
// what only the origin can judge (state tokens: locks). No I/O, exhaustively unit-tested
// (tests/unit/dav_if_test.cpp), fuzzed (tests/fuzz/dav_if_fuzz.cpp).
//
// Why: on a `hash` route the origin never issued the tags clients send, so an `If` header carrying
// them must be evaluated here and forwarded without them, or the origin refuses every conditional
// write with a false 412 (issue 11, item 13).
#pragma once

#include "proxy/precondition.hpp"

#include <boost/system/result.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ifm::proxy {

// Condition = ["Not"] ( State-token | "[" entity-tag "]" )
struct dav_if_condition {
    enum class kind : std::uint8_t { state_token, entity_tag };
    kind type = kind::state_token;
    bool negated = false;
    std::string state_token;  // kind::state_token: the Coded-URL without its brackets ("urn:uuid:…", "DAV:no-lock")
    entity_tag tag;           // kind::entity_tag
    bool operator==(const dav_if_condition&) const = default;
};

// List = "(" 1*Condition ")": true iff every condition is (a conjunction).
struct dav_if_list {
    std::optional<std::string> resource;  // the Resource-Tag without brackets; nullopt in a No-tag-list
    std::vector<dav_if_condition> conditions;  // at least one
    bool operator==(const dav_if_list&) const = default;
};

// If = 1*No-tag-list | 1*Tagged-list: true iff some list is (a disjunction). Either every list
// has a resource or none has (the grammar does not mix the two forms).
struct dav_if {
    std::vector<dav_if_list> lists;  // at least one
    bool operator==(const dav_if&) const = default;
};

// Bounds on what a client can make us parse (the same as for If-Match lists).
inline constexpr std::size_t dav_if_max_bytes = 8 * 1024;
inline constexpr std::size_t dav_if_max_lists = 64;
inline constexpr std::size_t dav_if_max_conditions = 64;  // in all lists together

// The state token that no lock ever has (RFC 4918 §10.4.8): `Not <DAV:no-lock>` is always true,
// `<DAV:no-lock>` always false.
inline constexpr std::string_view dav_no_lock = "DAV:no-lock";

// Strict: anything outside the grammar, or over the bounds, is an error saying what and where
// (the caller answers 400, SPEC §3.5). "Not" is matched case-insensitively (ABNF literals are)
// and re-serialized as "Not", the only spelling Apache mod_dav accepts. Whitespace (SP, HTAB)
// may separate lists and conditions; none is allowed inside `<…>` or around the tag in `[…]`.
// An opaque-tag may hold SP and HTAB (RFC 4918 takes it from RFC 2616's quoted-string, and its
// own examples use spaces); such a tag never matches one of ours.
boost::system::result<dav_if, std::string> parse_dav_if(std::string_view value);

// Canonical text: `<res> (Not <tok> ["e"]) (…)`, the resource tag written once per run of lists
// that share it. parse_dav_if(to_string(h)) == h.
std::string to_string(const dav_if& h);

// Does a Resource-Tag (absolute-URI or path-absolute [ "?" query ], RFC 4918 §8.3) name the
// request target? Both sides are normalized as the tracking key is (percent-encoding, dot
// segments; query kept as is). An absolute URI must be http or https, without userinfo, and its
// authority must equal `request_host` (host case-insensitive, an absent port is the scheme's
// default). Errs towards "no": a list wrongly taken for the target's would be judged against the
// wrong validator, a list wrongly taken for another resource's is only forwarded as it is.
bool dav_if_names_target(std::string_view resource_tag, std::string_view request_target,
                         std::string_view request_host);

struct dav_if_rewrite {
    bool has_etags = false;      // a list that applies to the target has an entity-tag condition: judged here
    bool passes = true;          // false: the proxy answers 412 itself and forwards nothing
    std::string forwarded;       // header value to forward; empty: drop the header
    bool foreign_etags = false;  // a list tagged with another resource has entity-tags (forwarded untouched)
};

// Judges the entity-tag conditions of the lists that apply to the request target (untagged, or
// tagged with a URI that names it), against the validator the proxy tracks:
// - `["t"]` is true iff t strongly matches one of `current_tags` (the strong tags of the
//   resource's variants, with their quotes). RFC 4918 §10.4.4 lets a server use the weak or the
//   strong comparison; a write is judged strongly everywhere else (SPEC §3, RFC 9110 §13.1.1), so
//   here too: `[W/"t"]` never matches. A resource that does not exist matches no entity-tag
//   (§10.4.4, unmapped URLs), so `Not ["t"]` is true on it.
// - A list whose entity-tag conditions all hold is forwarded with its state-token conditions
//   only; with none left it becomes `(Not <DAV:no-lock>)` (always true, §10.4.8).
// - A list whose entity-tag conditions do not all hold is false whatever its locks say; it is
//   forwarded as its state tokens plus `<DAV:no-lock>`, false at the origin too but still
//   submitting its lock tokens (§10.4.1: a token anywhere in the header counts as submitted,
//   which is what `(<lock> ["e"]) (Not <DAV:no-lock>)` relies on). Where another list of the
//   target holds, a false list without state tokens is simply left out.
// - Lists tagged with another resource are forwarded untouched: this request does not track that
//   resource. Documented limit: their entity-tags reach the origin, which on a hash route never
//   issued them (`foreign_etags` says so, for a caller that prefers to refuse).
// `passes` is false iff the target's lists all fail and no other resource's list could still
// make the header true (RFC 4918 §10.4.2/10.4.1: then the origin must answer 412). The header is
// dropped when it would say nothing: every list forwarded is `(Not <DAV:no-lock>)`.
// Without entity-tags on the target (`has_etags` false) nothing is judged: `passes`, and
// `forwarded` is the canonical form of the header (the caller may as well forward it unchanged).
// The caller must know the resource's state: with an unknown validator, revalidate first.
dav_if_rewrite rewrite_dav_if(const dav_if& h, std::string_view request_target, std::string_view request_host,
                              const std::vector<std::string>& current_tags, bool resource_exists);

}  // namespace ifm::proxy
