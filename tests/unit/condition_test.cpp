// cache::evaluate, the single C++ statement of SPEC §3 / RFC 9110 §13.2.2 that the store's Lua
// script mirrors. Every case names the rule it pins down.
#include "cache/condition.hpp"

#include <doctest/doctest.h>

#include <ostream>
#include <string>
#include <vector>

namespace ifm::cache {
// Readable failures.
inline std::ostream& operator<<(std::ostream& os, verdict v) {
    switch (v) {
    case verdict::pass: return os << "pass";
    case verdict::stale: return os << "stale";
    case verdict::exists: return os << "exists";
    }
    return os << "verdict(" << static_cast<int>(v) << ")";
}
}  // namespace ifm::cache

using ifm::cache::condition;
using ifm::cache::evaluate;
using ifm::cache::opaque_tag;
using ifm::cache::resource_state;
using ifm::cache::verdict;
using match = condition::match;

namespace {

condition if_match_any() {
    condition c;
    c.if_match = match::any;
    return c;
}
condition if_match(std::vector<std::string> tags) {
    condition c;
    c.if_match = match::list;
    c.if_match_tags = std::move(tags);
    return c;
}
condition if_none_match_any() {
    condition c;
    c.if_none_match = match::any;
    return c;
}
condition if_none_match(std::vector<std::string> tags) {
    condition c;
    c.if_none_match = match::list;
    c.if_none_match_tags = std::move(tags);
    return c;
}
condition if_unmodified_since(std::int64_t t) {
    condition c;
    c.if_unmodified_since = t;
    return c;
}

const resource_state absent = resource_state::absent();
const resource_state unknown = resource_state::unknown();

}  // namespace

TEST_CASE("condition: no precondition passes on every state") {
    const condition c;
    CHECK(c.unconditional());
    CHECK(evaluate(c, resource_state::present("\"a\"")) == verdict::pass);
    CHECK(evaluate(c, resource_state::present("")) == verdict::pass);
    CHECK(evaluate(c, absent) == verdict::pass);
    CHECK(evaluate(c, unknown) == verdict::pass);
}

TEST_CASE("condition: unconditional() is false as soon as one precondition is set") {
    CHECK_FALSE(if_match_any().unconditional());
    CHECK_FALSE(if_match({}).unconditional());
    CHECK_FALSE(if_none_match_any().unconditional());
    CHECK_FALSE(if_none_match({}).unconditional());
    CHECK_FALSE(if_unmodified_since(0).unconditional());
}

TEST_CASE("condition: If-Match * passes iff the resource exists") {
    const auto c = if_match_any();
    CHECK(evaluate(c, resource_state::present("\"a\"")) == verdict::pass);
    // Exists with an unknown tag still exists.
    CHECK(evaluate(c, resource_state::present("")) == verdict::pass);
    CHECK(evaluate(c, absent) == verdict::stale);
    // Unknown is treated as absent: nothing is known to exist.
    CHECK(evaluate(c, unknown) == verdict::stale);
}

TEST_CASE("condition: If-Match list uses strong, exact string comparison") {
    const auto present_a = resource_state::present("\"a\"");
    CHECK(evaluate(if_match({"\"a\""}), present_a) == verdict::pass);
    CHECK(evaluate(if_match({"\"x\"", "\"y\"", "\"a\""}), present_a) == verdict::pass);
    CHECK(evaluate(if_match({"\"b\""}), present_a) == verdict::stale);
    CHECK(evaluate(if_match({"\"x\"", "\"y\""}), present_a) == verdict::stale);
    // Opaque tags are case-sensitive and compared octet by octet.
    CHECK(evaluate(if_match({"\"A\""}), present_a) == verdict::stale);
    CHECK(evaluate(if_match({"\"a \""}), present_a) == verdict::stale);
    CHECK(evaluate(if_match({"\"a"}), present_a) == verdict::stale);
    CHECK(evaluate(if_match({"a"}), present_a) == verdict::stale);
    // The empty opaque-tag "" is a tag like any other.
    CHECK(evaluate(if_match({"\"\""}), resource_state::present("\"\"")) == verdict::pass);
    CHECK(evaluate(if_match({"\"\""}), present_a) == verdict::stale);
}

TEST_CASE("condition: If-Match list of only weak tags became an empty list, which never matches") {
    const auto c = if_match({});
    CHECK(evaluate(c, resource_state::present("\"a\"")) == verdict::stale);
    CHECK(evaluate(c, resource_state::present("")) == verdict::stale);
    CHECK(evaluate(c, absent) == verdict::stale);
    CHECK(evaluate(c, unknown) == verdict::stale);
}

TEST_CASE("condition: If-Match list never matches an absent, unknown or tag-less resource") {
    CHECK(evaluate(if_match({"\"a\""}), absent) == verdict::stale);
    // Unknown with a leftover etag is still treated as absent.
    resource_state stale_unknown = resource_state::present("\"a\"");
    stale_unknown.state = resource_state::kind::unknown;
    CHECK(evaluate(if_match({"\"a\""}), stale_unknown) == verdict::stale);
    // A present state with an empty etag matches no list, not even one holding "".
    CHECK(evaluate(if_match({""}), resource_state::present("")) == verdict::stale);
    CHECK(evaluate(if_match({"\"\""}), resource_state::present("")) == verdict::stale);
}

TEST_CASE("condition: If-Match never strongly matches a weak stored tag (RFC 9110 §8.8.3.2)") {
    // The store never holds weak tags; if it did, strong comparison would still fail.
    CHECK(evaluate(if_match({"W/\"a\""}), resource_state::present("W/\"a\"")) == verdict::stale);
    CHECK(evaluate(if_match({"\"a\""}), resource_state::present("W/\"a\"")) == verdict::stale);
}

TEST_CASE("condition: If-Unmodified-Since passes iff last_modified <= date") {
    const auto at_100 = resource_state::present("\"a\"", 100);
    CHECK(evaluate(if_unmodified_since(100), at_100) == verdict::pass);   // equal: not modified
    CHECK(evaluate(if_unmodified_since(101), at_100) == verdict::pass);
    CHECK(evaluate(if_unmodified_since(99), at_100) == verdict::stale);
    CHECK(evaluate(if_unmodified_since(-1), resource_state::present("\"a\"", 0)) == verdict::stale);
    CHECK(evaluate(if_unmodified_since(0), resource_state::present("\"a\"", -5)) == verdict::pass);
}

TEST_CASE("condition: If-Unmodified-Since is ignored without a known modification date") {
    CHECK(evaluate(if_unmodified_since(0), resource_state::present("\"a\"")) == verdict::pass);
    CHECK(evaluate(if_unmodified_since(0), absent) == verdict::pass);
    CHECK(evaluate(if_unmodified_since(0), unknown) == verdict::pass);
    // Only a present representation has a modification date (unknown is treated as absent).
    resource_state not_present = resource_state::present("\"a\"", 100);
    not_present.state = resource_state::kind::unknown;
    CHECK(evaluate(if_unmodified_since(0), not_present) == verdict::pass);
    not_present.state = resource_state::kind::absent;
    CHECK(evaluate(if_unmodified_since(0), not_present) == verdict::pass);
}

TEST_CASE("condition: If-Unmodified-Since is not evaluated when If-Match is present (§13.2.2)") {
    const auto old = resource_state::present("\"a\"", 100);
    auto c = if_match({"\"a\""});
    c.if_unmodified_since = 50;  // would fail on its own
    CHECK(evaluate(c, old) == verdict::pass);
    c = if_match_any();
    c.if_unmodified_since = 50;
    CHECK(evaluate(c, old) == verdict::pass);
    // And a failing If-Match is not rescued by a passing date.
    c = if_match({"\"b\""});
    c.if_unmodified_since = 500;
    CHECK(evaluate(c, old) == verdict::stale);
}

TEST_CASE("condition: If-None-Match * passes iff the resource does not exist") {
    const auto c = if_none_match_any();
    CHECK(evaluate(c, absent) == verdict::pass);
    CHECK(evaluate(c, unknown) == verdict::pass);
    CHECK(evaluate(c, resource_state::present("\"a\"")) == verdict::exists);
    CHECK(evaluate(c, resource_state::present("")) == verdict::exists);
}

TEST_CASE("condition: If-None-Match list fails iff a member weakly matches") {
    const auto present_a = resource_state::present("\"a\"");
    CHECK(evaluate(if_none_match({"\"a\""}), present_a) == verdict::stale);
    CHECK(evaluate(if_none_match({"\"x\"", "\"a\""}), present_a) == verdict::stale);
    CHECK(evaluate(if_none_match({"\"b\""}), present_a) == verdict::pass);
    CHECK(evaluate(if_none_match({"\"A\""}), present_a) == verdict::pass);
    CHECK(evaluate(if_none_match({}), present_a) == verdict::pass);
    // A list failing is "stale", never "exists" (that is reserved for *).
    CHECK(evaluate(if_none_match({"\"a\""}), present_a) != verdict::exists);
    // Weak comparison: the stored tag is compared by its opaque part.
    CHECK(evaluate(if_none_match({"\"a\""}), resource_state::present("W/\"a\"")) == verdict::stale);
    // Nothing to match against.
    CHECK(evaluate(if_none_match({"\"a\""}), absent) == verdict::pass);
    CHECK(evaluate(if_none_match({"\"a\""}), unknown) == verdict::pass);
    CHECK(evaluate(if_none_match({""}), resource_state::present("")) == verdict::pass);
    CHECK(evaluate(if_none_match({"\"\""}), resource_state::present("")) == verdict::pass);
}

TEST_CASE("condition: If-Match and If-None-Match together are both evaluated, If-Match first") {
    const auto present_a = resource_state::present("\"a\"");

    auto c = if_match({"\"a\""});
    c.if_none_match = match::list;
    c.if_none_match_tags = {"\"a\""};
    CHECK(evaluate(c, present_a) == verdict::stale);  // If-Match passes, If-None-Match fails
    c.if_none_match_tags = {"\"b\""};
    CHECK(evaluate(c, present_a) == verdict::pass);

    // If-Match passes, If-None-Match * fails: "exists".
    c = if_match_any();
    c.if_none_match = match::any;
    CHECK(evaluate(c, present_a) == verdict::exists);
    // If-Match fails first: "stale", not "exists", and not "pass" from If-None-Match *.
    CHECK(evaluate(c, absent) == verdict::stale);

    c = if_match({"\"b\""});
    c.if_none_match = match::any;
    CHECK(evaluate(c, present_a) == verdict::stale);
}

TEST_CASE("condition: If-Unmodified-Since is evaluated before If-None-Match") {
    auto c = if_unmodified_since(50);
    c.if_none_match = match::any;
    CHECK(evaluate(c, resource_state::present("\"a\"", 100)) == verdict::stale);
    CHECK(evaluate(c, resource_state::present("\"a\"", 10)) == verdict::exists);
    CHECK(evaluate(c, absent) == verdict::pass);
}

TEST_CASE("condition: opaque_tag strips only an upper-case W/ prefix") {
    CHECK(opaque_tag("W/\"x\"") == "\"x\"");
    CHECK(opaque_tag("\"x\"") == "\"x\"");
    CHECK(opaque_tag("W/\"\"") == "\"\"");
    CHECK(opaque_tag("\"\"") == "\"\"");
    CHECK(opaque_tag("") == "");
    CHECK(opaque_tag("W/") == "");
    CHECK(opaque_tag("w/\"x\"") == "w/\"x\"");
    CHECK(opaque_tag("\"W/x\"") == "\"W/x\"");
    // Only one prefix is a weakness indicator.
    CHECK(opaque_tag("W/W/\"x\"") == "W/\"x\"");
}
