// RFC 9110 entity-tags, tag lists, HTTP-dates and the write-precondition builder (SPEC §3).
#include "proxy/precondition.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

using namespace std::string_literals;
using ifm::cache::condition;
using ifm::cache::resource_state;
using ifm::cache::verdict;
using ifm::proxy::conditional_headers;
using ifm::proxy::entity_tag;
using ifm::proxy::format_http_date;
using ifm::proxy::if_none_match_matches;
using ifm::proxy::outcome;
using ifm::proxy::parse_entity_tag;
using ifm::proxy::parse_http_date;
using ifm::proxy::parse_tag_list;
using ifm::proxy::parse_write_precondition;
using ifm::proxy::write_precondition;
using match = condition::match;
using kind = write_precondition::kind;

namespace {

std::vector<std::string> strs(const ifm::proxy::tag_list& l) {
    std::vector<std::string> out;
    for (const auto& t : l.tags) out.push_back(t.str());
    return out;
}

// Strong comparison as the proxy performs it: If-Match header -> condition -> store verdict.
bool strong_match(const std::string& header_tag, const std::string& stored) {
    conditional_headers h;
    h.if_match = header_tag;
    const auto p = parse_write_precondition(h);
    REQUIRE(p.type == kind::condition);
    return ifm::cache::evaluate(p.cond, resource_state::present(stored)) == verdict::pass;
}

// Weak comparison: If-None-Match as used for 304s on GET/HEAD.
bool weak_match(const std::string& a, const std::string& b) { return if_none_match_matches(a, b); }

constexpr std::int64_t rfc_example = 784111777;  // Sun, 06 Nov 1994 08:49:37 GMT

}  // namespace

// ---- entity-tag -----------------------------------------------------------------------------

TEST_CASE("entity-tag: valid strong and weak tags") {
    auto t = parse_entity_tag("\"xyzzy\"");
    REQUIRE(t);
    CHECK_FALSE(t->weak);
    CHECK(t->opaque == "\"xyzzy\"");
    CHECK(t->str() == "\"xyzzy\"");

    t = parse_entity_tag("W/\"xyzzy\"");
    REQUIRE(t);
    CHECK(t->weak);
    CHECK(t->opaque == "\"xyzzy\"");
    CHECK(t->str() == "W/\"xyzzy\"");

    t = parse_entity_tag("\"\"");
    REQUIRE(t);
    CHECK(t->opaque == "\"\"");
    t = parse_entity_tag("W/\"\"");
    REQUIRE(t);
    CHECK(t->weak);
    CHECK(t->opaque == "\"\"");
}

TEST_CASE("entity-tag: every etagc octet is accepted") {
    std::string all = "\"";
    all += '\x21';
    for (int c = 0x23; c <= 0x7E; ++c) all += static_cast<char>(c);
    for (int c = 0x80; c <= 0xFF; ++c) all += static_cast<char>(c);  // obs-text
    all += '"';
    const auto t = parse_entity_tag(all);
    REQUIRE(t);
    CHECK(t->opaque == all);
    // No escaping inside entity-tags: a backslash is an ordinary etagc.
    CHECK(parse_entity_tag("\"a\\\"") == entity_tag{false, "\"a\\\""});
    // Looks like a weak tag inside the quotes, but it is just opaque data.
    CHECK(parse_entity_tag("\"W/x\"") == entity_tag{false, "\"W/x\""});
}

TEST_CASE("entity-tag: every octet outside etagc is rejected inside the quotes") {
    for (int c = 0; c <= 0xFF; ++c) {
        const bool etagc = c == 0x21 || (c >= 0x23 && c <= 0x7E) || c >= 0x80;
        if (etagc) continue;
        std::string text = "\"a";
        text += static_cast<char>(c);
        text += "b\"";
        CAPTURE(c);
        CHECK_FALSE(parse_entity_tag(text));
    }
}

TEST_CASE("entity-tag: malformed") {
    const std::vector<std::string> bad = {
        "",            "abc",          "\"abc",        "abc\"",      "\"",
        "w/\"abc\"",   "W/abc",        "W\"abc\"",     "W/",         "W/\"abc",
        " \"abc\"",    "\"abc\" ",     "\"a\"b\"",     "\"a b\"",    "\"a\tb\"",
        "\"a\x01\"",   "\"a\x7f\"",    "W/W/\"a\"",    "\"a\"\"b\"", "*",
        "W/ \"a\"",    "\"a\",",       "'a'",          "\"a\"\r\n",  "\"a\0\""s,
    };
    for (const auto& b : bad) {
        CAPTURE(b);
        CHECK_FALSE(parse_entity_tag(b));
    }
}

// ---- RFC 9110 §8.8.3.2 comparison table -----------------------------------------------------

TEST_CASE("entity-tag comparison: the RFC 9110 §8.8.3.2 example table") {
    // | ETag 1 | ETag 2 | Strong Comparison | Weak Comparison |
    // | W/"1"  | W/"1"  | no match          | match           |
    CHECK_FALSE(strong_match("W/\"1\"", "W/\"1\""));
    CHECK(weak_match("W/\"1\"", "W/\"1\""));
    // | W/"1"  | W/"2"  | no match          | no match        |
    CHECK_FALSE(strong_match("W/\"1\"", "W/\"2\""));
    CHECK_FALSE(weak_match("W/\"1\"", "W/\"2\""));
    // | W/"1"  | "1"    | no match          | match           |
    CHECK_FALSE(strong_match("W/\"1\"", "\"1\""));
    CHECK(weak_match("W/\"1\"", "\"1\""));
    CHECK_FALSE(strong_match("\"1\"", "W/\"1\""));
    CHECK(weak_match("\"1\"", "W/\"1\""));
    // | "1"    | "1"    | match             | match           |
    CHECK(strong_match("\"1\"", "\"1\""));
    CHECK(weak_match("\"1\"", "\"1\""));
    // And different strong tags match neither way.
    CHECK_FALSE(strong_match("\"1\"", "\"2\""));
    CHECK_FALSE(weak_match("\"1\"", "\"2\""));
}

// ---- tag lists ------------------------------------------------------------------------------

TEST_CASE("tag list: * alone") {
    for (const std::string v : {"*", " *", "* ", "\t*\t", "  *  "}) {
        CAPTURE(v);
        const auto l = parse_tag_list(v);
        REQUIRE(l);
        CHECK(l->any);
        CHECK(l->tags.empty());
    }
}

TEST_CASE("tag list: elements with OWS and empty elements (RFC 9110 §5.6.1)") {
    struct row {
        std::string value;
        std::vector<std::string> tags;
    };
    const std::vector<row> rows = {
        {"\"a\"", {"\"a\""}},
        {"W/\"a\"", {"W/\"a\""}},
        {"\"a\",\"b\"", {"\"a\"", "\"b\""}},
        {"\"a\", \"b\"", {"\"a\"", "\"b\""}},
        {"\"a\" ,\t\"b\"", {"\"a\"", "\"b\""}},
        {", \"a\" ,, W/\"b\"", {"\"a\"", "W/\"b\""}},
        {",,,\"a\",,,", {"\"a\""}},
        {" , \"a\" , ", {"\"a\""}},
        {"\"xyzzy\", \"r2d2xxxx\", \"c3piozzzz\"", {"\"xyzzy\"", "\"r2d2xxxx\"", "\"c3piozzzz\""}},
        {"W/\"xyzzy\", W/\"r2d2xxxx\", W/\"c3piozzzz\"",
         {"W/\"xyzzy\"", "W/\"r2d2xxxx\"", "W/\"c3piozzzz\""}},
        {"\"\", W/\"\"", {"\"\"", "W/\"\""}},
        // Commas are etagc: inside quotes they do not split.
        {"\"a,b\", \"c\"", {"\"a,b\"", "\"c\""}},
        {"\"*\"", {"\"*\""}},
        // Duplicates are kept (harmless).
        {"\"a\", \"a\"", {"\"a\"", "\"a\""}},
    };
    for (const auto& r : rows) {
        CAPTURE(r.value);
        const auto l = parse_tag_list(r.value);
        REQUIRE(l);
        CHECK_FALSE(l->any);
        CHECK(strs(*l) == r.tags);
    }
}

TEST_CASE("tag list: malformed") {
    const std::vector<std::string> bad = {
        "",                 // at least one tag
        " ",       ",",        ", ,",     "\t,\t",
        "*, \"a\"",         // * mixed with tags
        "\"a\", *", "*,",  ",*",   "**",  "* *",     "W/*",   "\"*",
        "\"a\" \"b\"",      // no comma between tags
        "\"a\"\"b\"", "\"a\";\"b\"", "\"a\" x", "\"a\", b", "a",   "\"a",
        "w/\"a\"",          // W is case-sensitive
        "\"a\", w/\"b\"",   "W/ \"a\"",
        "\"a\"\r\n",        "\"a\",\r\n\"b\"", "\"a\x01\"", "\"a\" ,\x0b\"b\"",
        "\"a\"\0"s,         "\"a\", \"b",      "\"a\", \"b\" garbage",
        "\"a\" , \"b\" ;",
    };
    for (const auto& b : bad) {
        CAPTURE(b);
        CHECK_FALSE(parse_tag_list(b));
    }
}

TEST_CASE("tag list: at most 64 tags") {
    std::string v;
    for (int i = 0; i < 64; ++i) v += (i ? ", \"" : "\"") + std::to_string(i) + "\"";
    const auto l = parse_tag_list(v);
    REQUIRE(l);
    CHECK(l->tags.size() == 64);
    CHECK(l->tags.back().opaque == "\"63\"");
    CHECK_FALSE(parse_tag_list(v + ", \"64\""));
    // Empty elements do not count.
    CHECK(parse_tag_list(v + ",,,"));
}

TEST_CASE("tag list: at most 8 KiB") {
    const std::string tag_8192 = "\"" + std::string(8190, 'x') + "\"";
    REQUIRE(tag_8192.size() == 8192);
    const auto l = parse_tag_list(tag_8192);
    REQUIRE(l);
    CHECK(l->tags.at(0).opaque == tag_8192);
    CHECK_FALSE(parse_tag_list("\"" + std::string(8191, 'x') + "\""));
    // The bound is on the whole value, whitespace included.
    CHECK_FALSE(parse_tag_list(" " + tag_8192));
}

// ---- HTTP-date ------------------------------------------------------------------------------

TEST_CASE("http-date: the three RFC 9110 §5.6.7 examples") {
    CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == rfc_example);
    CHECK(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == rfc_example);
    CHECK(parse_http_date("Sun Nov  6 08:49:37 1994") == rfc_example);
}

TEST_CASE("http-date: IMF-fixdate values") {
    CHECK(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT") == 0);
    CHECK(parse_http_date("Wed, 31 Dec 1969 23:59:59 GMT") == -1);
    CHECK(parse_http_date("Tue, 29 Feb 2000 00:00:00 GMT") == 951782400);  // 400-year leap
    CHECK(parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT") == 1709164800);
    CHECK(parse_http_date("Tue, 19 Jan 2038 03:14:08 GMT") == 2147483648);  // past 32 bits
    CHECK(parse_http_date("Fri, 31 Dec 9999 23:59:59 GMT") == 253402300799);
    CHECK(parse_http_date("Sat, 01 Jan 0000 00:00:00 GMT") == -62167219200);
    // Leap second: 23:59:60 is one second after 23:59:59.
    CHECK(parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT") == 1483228800);
    // Every month name.
    const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::int64_t prev = 0;
    for (int m = 0; m < 12; ++m) {
        const auto t = parse_http_date("Mon, 01 "s + months[m] + " 2001 00:00:00 GMT");
        REQUIRE(t);
        CHECK(format_http_date(*t).substr(8, 3) == months[m]);
        CHECK(*t > prev);
        prev = *t;
    }
}

TEST_CASE("http-date: the weekday name is not checked against the date") {
    // Robustness (§5.6.7): the day-name is redundant, a wrong one does not void the date.
    CHECK(parse_http_date("Mon, 06 Nov 1994 08:49:37 GMT") == rfc_example);
    CHECK(parse_http_date("Friday, 06-Nov-94 08:49:37 GMT") == rfc_example);
    CHECK(parse_http_date("Tue Nov  6 08:49:37 1994") == rfc_example);
}

TEST_CASE("http-date: surrounding OWS is not part of the value") {
    CHECK(parse_http_date("  Sun, 06 Nov 1994 08:49:37 GMT\t") == rfc_example);
}

TEST_CASE("http-date: asctime day forms") {
    CHECK(parse_http_date("Sun Nov 06 08:49:37 1994") == rfc_example);  // 2DIGIT
    CHECK(parse_http_date("Thu Jan  1 00:00:00 1970") == 0);
    CHECK(parse_http_date("Sat Dec 31 23:59:59 1994") == parse_http_date("Sat, 31 Dec 1994 23:59:59 GMT"));
    CHECK_FALSE(parse_http_date("Sun Nov 6 08:49:37 1994"));    // one space, one digit
    CHECK_FALSE(parse_http_date("Sun Nov  06 08:49:37 1994"));  // space and two digits
    CHECK_FALSE(parse_http_date("Sun Nov  6 08:49:37 94"));
    CHECK_FALSE(parse_http_date("Sun Nov  6 08:49:37 1994 GMT"));
    CHECK_FALSE(parse_http_date("Sun  Nov  6 08:49:37 1994"));
}

TEST_CASE("http-date: malformed or out of range") {
    const std::vector<std::string> bad = {
        "",
        "Sun, 06 Nov 1994 08:49:37",          // no zone
        "Sun, 06 Nov 1994 08:49:37 UTC",      // only GMT
        "Sun, 06 Nov 1994 08:49:37 +0000",
        "Sun, 06 Nov 1994 08:49:37 gmt",
        "Sun, 06 Nov 1994 08:49:37 GMTX",
        "Sun, 06 Nov 1994 08:49:37 GMT ,",
        "sun, 06 Nov 1994 08:49:37 GMT",      // case-sensitive
        "Sun, 06 nov 1994 08:49:37 GMT",
        "SUN, 06 NOV 1994 08:49:37 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun,06 Nov 1994 08:49:37 GMT",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun, 06 Nov 01994 08:49:37 GMT",
        "Sun, 06  Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Sun, 06 Nov 1994 08:49 GMT",
        "Sun, 06 Nov 1994 08.49.37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",      // hour 00-23
        "Sun, 06 Nov 1994 08:60:00 GMT",      // minute 00-59
        "Sun, 06 Nov 1994 08:49:61 GMT",      // second 00-60
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 32 Jan 1994 08:49:37 GMT",
        "Sun, 31 Apr 1994 08:49:37 GMT",
        "Sun, 29 Feb 1994 08:49:37 GMT",      // not a leap year
        "Sun, 29 Feb 1900 08:49:37 GMT",      // century, not a leap year
        "Sun, +6 Nov 1994 08:49:37 GMT",
        "Sun, 0\xd9\xa6 Nov 1994 08:49:37 GMT",  // non-ASCII digit
        "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",  // a list (§13.1.4)
        "Sunday, 06-Nov-1994 08:49:37 GMT",   // RFC 850 has a two-digit year
        "Sunday, 6-Nov-94 08:49:37 GMT",
        "Sun, 06-Nov-94 08:49:37 GMT",        // RFC 850 needs the long day name
        "Sunday, 06 Nov 1994 08:49:37 GMT",   // IMF-fixdate needs the short one
        "Sunday, 06-Nov-94 08:49:37",
        "Sunday, 31-Apr-94 08:49:37 GMT",
        "784111777",
        "1994-11-06T08:49:37Z",
        "Sun, 06 Nov 1994 08:49:37 GMT\0"s,
    };
    for (const auto& b : bad) {
        CAPTURE(b);
        CHECK_FALSE(parse_http_date(b));
    }
}

TEST_CASE("http-date: RFC 850 two-digit years, at most 50 years ahead (§5.6.7)") {
    const std::int64_t now = *parse_http_date("Sun, 15 Jun 2025 00:00:00 GMT");
    auto year_of = [&](const std::string& date) -> int {
        const auto t = parse_http_date(date, now);
        REQUIRE(t);
        return std::stoi(format_http_date(*t).substr(12, 4));
    };
    CHECK(year_of("Sunday, 06-Nov-94 08:49:37 GMT") == 1994);
    CHECK(year_of("Sunday, 15-Jun-25 00:00:00 GMT") == 2025);
    CHECK(year_of("Sunday, 01-Jan-00 00:00:00 GMT") == 2000);
    CHECK(year_of("Sunday, 01-Jan-70 00:00:00 GMT") == 2070);
    CHECK(year_of("Sunday, 01-Jan-76 00:00:00 GMT") == 1976);
    CHECK(year_of("Sunday, 31-Dec-99 23:59:59 GMT") == 1999);
    // The boundary is exact: 50 years ahead to the second is still the future.
    CHECK(year_of("Sunday, 15-Jun-75 00:00:00 GMT") == 2075);
    CHECK(year_of("Sunday, 15-Jun-75 00:00:01 GMT") == 1975);
    CHECK(year_of("Sunday, 14-Jun-75 23:59:59 GMT") == 2075);
    CHECK(year_of("Sunday, 16-Jun-75 00:00:00 GMT") == 1975);
    CHECK(parse_http_date("Sunday, 15-Jun-75 00:00:00 GMT", now) == 3327782400);

    // Late in a century the window reaches into the next one.
    const std::int64_t late = *parse_http_date("Mon, 01 Jan 2090 00:00:00 GMT");
    CHECK(parse_http_date("Sunday, 01-Jan-10 00:00:00 GMT", late) ==
          parse_http_date("Fri, 01 Jan 2110 00:00:00 GMT"));
    CHECK(parse_http_date("Sunday, 01-Jan-60 00:00:00 GMT", late) ==
          parse_http_date("Sat, 01 Jan 2060 00:00:00 GMT"));
    // Resolving the century decides leap years: 29-Feb-00 is valid in 2000, not in 2100.
    CHECK(parse_http_date("Tuesday, 29-Feb-00 00:00:00 GMT", now) == 951782400);
    const std::int64_t in_2070 = *parse_http_date("Wed, 01 Jan 2070 00:00:00 GMT");
    CHECK_FALSE(parse_http_date("Monday, 29-Feb-00 00:00:00 GMT", in_2070 + 40LL * 365 * 86400));

    // Without an explicit clock, today's date is used: 94 is never in this century's future
    // by more than 50 years until 2044.
    CHECK(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == rfc_example);
}

TEST_CASE("http-date: format_http_date writes IMF-fixdate") {
    CHECK(format_http_date(rfc_example) == "Sun, 06 Nov 1994 08:49:37 GMT");
    CHECK(format_http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT");
    CHECK(format_http_date(-1) == "Wed, 31 Dec 1969 23:59:59 GMT");
    CHECK(format_http_date(951782400) == "Tue, 29 Feb 2000 00:00:00 GMT");
    CHECK(format_http_date(2147483648) == "Tue, 19 Jan 2038 03:14:08 GMT");
    CHECK(format_http_date(253402300799) == "Fri, 31 Dec 9999 23:59:59 GMT");
    // Outside four-digit years: clamped, never a malformed date.
    CHECK(format_http_date(253402300800) == "Fri, 31 Dec 9999 23:59:59 GMT");
    CHECK(format_http_date(std::numeric_limits<std::int64_t>::max()) ==
          "Fri, 31 Dec 9999 23:59:59 GMT");
    CHECK(format_http_date(std::numeric_limits<std::int64_t>::min()) ==
          "Sat, 01 Jan 0000 00:00:00 GMT");
}

TEST_CASE("http-date: format and parse round-trip, every weekday") {
    std::set<std::string> weekdays;
    // Steps of a prime number of seconds cover all fields, days and weekdays, before and after 1970.
    for (std::int64_t t = -2208988800; t < 4102444800; t += 8640007) {
        const std::string s = format_http_date(t);
        CAPTURE(s);
        CHECK(s.size() == 29);
        CHECK(parse_http_date(s) == t);
        weekdays.insert(s.substr(0, 3));
    }
    CHECK(weekdays.size() == 7);
}

// ---- write preconditions --------------------------------------------------------------------

TEST_CASE("write precondition: none") {
    CHECK(parse_write_precondition({}).type == kind::none);
    conditional_headers h;
    h.if_modified_since = "Sun, 06 Nov 1994 08:49:37 GMT";  // does not apply to writes
    auto p = parse_write_precondition(h);
    CHECK(p.type == kind::none);
    CHECK(p.cond.unconditional());
    // An invalid If-Unmodified-Since is ignored, leaving no precondition at all (-> 428).
    h.if_unmodified_since = "yesterday";
    p = parse_write_precondition(h);
    CHECK(p.type == kind::none);
    CHECK(p.cond == condition{});
    CHECK(p.error.empty());
}

TEST_CASE("write precondition: If-Match * and lists") {
    conditional_headers h;
    h.if_match = "*";
    auto p = parse_write_precondition(h);
    CHECK(p.type == kind::condition);
    CHECK(p.cond.if_match == match::any);
    CHECK(p.cond.if_match_tags.empty());
    CHECK(p.cond.if_none_match == match::none);

    h.if_match = ", \"a\" ,, W/\"b\", \"c\"";
    p = parse_write_precondition(h);
    CHECK(p.type == kind::condition);
    CHECK(p.cond.if_match == match::list);
    // Weak tags are dropped: they never match strongly.
    CHECK(p.cond.if_match_tags == std::vector<std::string>{"\"a\"", "\"c\""});
}

TEST_CASE("write precondition: If-Match of only weak tags never matches") {
    conditional_headers h;
    h.if_match = "W/\"a\", W/\"b\"";
    const auto p = parse_write_precondition(h);
    CHECK(p.type == kind::condition);  // still a precondition: not "none", not 428
    CHECK(p.cond.if_match == match::list);
    CHECK(p.cond.if_match_tags.empty());
    CHECK(ifm::cache::evaluate(p.cond, resource_state::present("\"a\"")) == verdict::stale);
    CHECK(ifm::cache::evaluate(p.cond, resource_state::present("\"b\"")) == verdict::stale);
}

TEST_CASE("write precondition: If-None-Match * and lists are stripped of W/") {
    conditional_headers h;
    h.if_none_match = "*";
    auto p = parse_write_precondition(h);
    CHECK(p.type == kind::condition);
    CHECK(p.cond.if_none_match == match::any);
    CHECK(p.cond.if_match == match::none);

    h.if_none_match = "W/\"a\", \"b\"";
    p = parse_write_precondition(h);
    CHECK(p.cond.if_none_match == match::list);
    CHECK(p.cond.if_none_match_tags == std::vector<std::string>{"\"a\"", "\"b\""});
}

TEST_CASE("write precondition: If-Unmodified-Since") {
    conditional_headers h;
    h.if_unmodified_since = "Sun, 06 Nov 1994 08:49:37 GMT";
    auto p = parse_write_precondition(h);
    CHECK(p.type == kind::condition);
    CHECK(p.cond.if_unmodified_since == rfc_example);
    h.if_unmodified_since = "Sun Nov  6 08:49:37 1994";
    CHECK(parse_write_precondition(h).cond.if_unmodified_since == rfc_example);

    // Ignored together with If-Match (§13.1.4).
    h.if_match = "\"a\"";
    p = parse_write_precondition(h);
    CHECK(p.type == kind::condition);
    CHECK_FALSE(p.cond.if_unmodified_since);
    CHECK(p.cond.if_match_tags == std::vector<std::string>{"\"a\""});

    // Kept together with If-None-Match; an invalid one is dropped but If-None-Match stays.
    h.if_match.reset();
    h.if_none_match = "*";
    p = parse_write_precondition(h);
    CHECK(p.cond.if_unmodified_since == rfc_example);
    h.if_unmodified_since = "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT";
    p = parse_write_precondition(h);
    CHECK(p.type == kind::condition);
    CHECK_FALSE(p.cond.if_unmodified_since);
    CHECK(p.cond.if_none_match == match::any);
}

TEST_CASE("write precondition: malformed headers name the header") {
    conditional_headers h;
    h.if_match = "abc";
    auto p = parse_write_precondition(h);
    CHECK(p.type == kind::malformed);
    CHECK(p.error == "If-Match: expected an entity-tag list or *");
    CHECK(p.cond == condition{});

    h = {};
    h.if_none_match = "*, \"a\"";
    p = parse_write_precondition(h);
    CHECK(p.type == kind::malformed);
    CHECK(p.error == "If-None-Match: expected an entity-tag list or *");

    // Both malformed: If-Match is reported (evaluated first).
    h.if_match = "w/\"a\"";
    p = parse_write_precondition(h);
    CHECK(p.error.starts_with("If-Match:"));

    // A valid If-Match does not excuse a malformed If-None-Match.
    h.if_match = "\"a\"";
    p = parse_write_precondition(h);
    CHECK(p.type == kind::malformed);
    CHECK(p.error.starts_with("If-None-Match:"));

    // An empty header is present and malformed, not absent.
    h = {};
    h.if_match = "";
    CHECK(parse_write_precondition(h).type == kind::malformed);

    // A malformed If-Unmodified-Since is never "malformed": it is ignored.
    h = {};
    h.if_unmodified_since = "\"a\"";
    h.if_none_match = "\"b\"";
    CHECK(parse_write_precondition(h).type == kind::condition);
}

TEST_CASE("write precondition: oversized lists are malformed, with the reason") {
    std::string many;
    for (int i = 0; i < 65; ++i) many += "\"" + std::to_string(i) + "\",";
    conditional_headers h;
    h.if_match = many;
    auto p = parse_write_precondition(h);
    CHECK(p.type == kind::malformed);
    CHECK(p.error == "If-Match: more than 64 entity-tags");

    h = {};
    h.if_none_match = "\"" + std::string(9000, 'x') + "\"";
    p = parse_write_precondition(h);
    CHECK(p.type == kind::malformed);
    CHECK(p.error == "If-None-Match: longer than 8192 bytes");
}

TEST_CASE("write precondition: end to end with the store's evaluation (§13.2.2 order)") {
    struct row {
        const char* name;
        std::optional<std::string> if_match, if_none_match, if_unmodified_since;
        resource_state state;
        verdict expected;
    };
    const auto a = resource_state::present("\"a\"", rfc_example);
    const std::string before = "Sat, 05 Nov 1994 08:49:37 GMT";
    const std::string at = "Sun, 06 Nov 1994 08:49:37 GMT";
    const std::vector<row> rows = {
        {"If-Match current", "\"a\"", {}, {}, a, verdict::pass},
        {"If-Match old", "\"b\"", {}, {}, a, verdict::stale},
        {"If-Match weak current", "W/\"a\"", {}, {}, a, verdict::stale},
        {"If-Match list with current", "\"b\", W/\"a\", \"a\"", {}, {}, a, verdict::pass},
        {"If-Match * exists", "*", {}, {}, a, verdict::pass},
        {"If-Match * absent", "*", {}, {}, resource_state::absent(), verdict::stale},
        {"If-Match wins over stale date", "\"a\"", {}, before, a, verdict::pass},
        {"If-Match fails despite date", "\"b\"", {}, at, a, verdict::stale},
        {"date not modified", {}, {}, at, a, verdict::pass},
        {"date modified since", {}, {}, before, a, verdict::stale},
        {"date invalid: ignored", {}, {}, "Sun, 06 Nov 1994", a, verdict::pass},
        {"date, unknown Last-Modified", {}, {}, before, resource_state::present("\"a\""),
         verdict::pass},
        {"create-only, absent", {}, "*", {}, resource_state::absent(), verdict::pass},
        {"create-only, exists", {}, "*", {}, a, verdict::exists},
        {"If-None-Match weak current", {}, "W/\"a\"", {}, a, verdict::stale},
        {"If-None-Match other", {}, "\"b\", W/\"c\"", {}, a, verdict::pass},
        {"If-Match ok, If-None-Match fails", "\"a\"", "W/\"a\"", {}, a, verdict::stale},
        {"If-Match ok, If-None-Match ok", "\"a\"", "\"b\"", {}, a, verdict::pass},
        {"If-Match * and If-None-Match *", "*", "*", {}, a, verdict::exists},
        {"If-Match fails before If-None-Match *", "\"b\"", "*", {}, a, verdict::stale},
        {"date fails before If-None-Match *", {}, "*", before, a, verdict::stale},
    };
    for (const auto& r : rows) {
        CAPTURE(r.name);
        conditional_headers h;
        h.if_match = r.if_match;
        h.if_none_match = r.if_none_match;
        h.if_unmodified_since = r.if_unmodified_since;
        const auto p = parse_write_precondition(h);
        REQUIRE(p.type != kind::malformed);
        CHECK(ifm::cache::evaluate(p.cond, r.state) == r.expected);
    }
}

// ---- GET/HEAD If-None-Match -----------------------------------------------------------------

TEST_CASE("if_none_match_matches: weak comparison, * matches any present tag") {
    CHECK(if_none_match_matches("*", "\"a\""));
    CHECK(if_none_match_matches("*", "W/\"a\""));
    CHECK_FALSE(if_none_match_matches("*", ""));  // no current tag: nothing to match
    CHECK(if_none_match_matches("\"a\"", "\"a\""));
    CHECK(if_none_match_matches("W/\"a\"", "\"a\""));
    CHECK(if_none_match_matches("\"x\", W/\"a\"", "\"a\""));
    CHECK(if_none_match_matches(", \"x\" ,, \"a\"", "\"a\""));
    CHECK_FALSE(if_none_match_matches("\"b\"", "\"a\""));
    CHECK_FALSE(if_none_match_matches("\"A\"", "\"a\""));
    CHECK_FALSE(if_none_match_matches("\"x\", \"y\"", "\"a\""));
    // Malformed header or current tag: the header is ignored (no 304).
    CHECK_FALSE(if_none_match_matches("\"a", "\"a\""));
    CHECK_FALSE(if_none_match_matches("a", "a"));
    CHECK_FALSE(if_none_match_matches("\"a\", *", "\"a\""));
    CHECK_FALSE(if_none_match_matches("", "\"a\""));
    CHECK_FALSE(if_none_match_matches("\"a\"", "a"));
    CHECK_FALSE(if_none_match_matches("*", "a"));
}

// ---- outcome names --------------------------------------------------------------------------

TEST_CASE("outcome: snake_case names") {
    using ifm::proxy::to_string;
    CHECK(to_string(outcome::not_judged) == "not_judged");
    CHECK(to_string(outcome::passed) == "passed");
    CHECK(to_string(outcome::revalidated) == "revalidated");
    CHECK(to_string(outcome::rejected_stale) == "rejected_stale");
    CHECK(to_string(outcome::rejected_busy) == "rejected_busy");
    CHECK(to_string(outcome::rejected_exists) == "rejected_exists");
    CHECK(to_string(outcome::missing) == "missing");
    CHECK(to_string(outcome::malformed) == "malformed");
    CHECK(to_string(outcome::store_error) == "store_error");
    CHECK(to_string(outcome::aborted) == "aborted");
    CHECK(to_string(outcome::would_reject_stale) == "would_reject_stale");
    CHECK(to_string(outcome::would_reject_busy) == "would_reject_busy");
    CHECK(to_string(outcome::would_reject_exists) == "would_reject_exists");
    CHECK(to_string(outcome::would_reject_missing) == "would_reject_missing");
}
