// Tracking keys (SPEC §4): target normalization and the store key of a resource.
#include "proxy/resource_key.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

// Readable failures for the normalized targets.
namespace doctest {
template <>
struct StringMaker<std::optional<std::string>> {
    static String convert(const std::optional<std::string>& v) {
        return v ? String(("\"" + *v + "\"").c_str()) : String("nullopt");
    }
};
}  // namespace doctest

using namespace std::string_literals;
using ifm::config::query_mode;
using ifm::proxy::max_resource_key_bytes;
using ifm::proxy::normalize_target;
using ifm::proxy::resource_key;
using ifm::proxy::ambiguous_path;
using ifm::proxy::resource_scope;
using ifm::proxy::variant_id;
using vary_list = std::vector<std::pair<std::string, std::string>>;

namespace {

std::optional<std::string> keep(std::string_view t) { return normalize_target(t, query_mode::keep); }
std::optional<std::string> sorted(std::string_view t) {
    return normalize_target(t, query_mode::sorted);
}
std::optional<std::string> ignore(std::string_view t) {
    return normalize_target(t, query_mode::ignore);
}

// The characters a key may contain (the store wraps it in `{...}` for the Redis hash tag).
bool valid_key(const std::string& key) {
    if (key.empty() || key.size() > max_resource_key_bytes) return false;
    return std::all_of(key.begin(), key.end(), [](char ch) {
        const auto c = static_cast<unsigned char>(ch);
        return c > 0x20 && c < 0x7F && c != '{' && c != '}';
    });
}

bool is_hex_lower(const std::string& s) {
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Characters a normalized target may hold raw (RFC 3986 pchar, '/', '?', '%' of an escape).
bool valid_normalized(const std::string& t) {
    for (std::size_t i = 0; i < t.size(); ++i) {
        const auto c = static_cast<unsigned char>(t[i]);
        if (c == '%') {
            if (i + 2 >= t.size()) return false;
            for (int k = 1; k <= 2; ++k) {
                const char h = t[i + k];
                if (!((h >= '0' && h <= '9') || (h >= 'A' && h <= 'F'))) return false;
            }
            continue;
        }
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) continue;
        if (std::string_view("-._~!$&'()*+,;=:@/?").find(static_cast<char>(c)) ==
            std::string_view::npos)
            return false;
    }
    return true;
}

}  // namespace

// ---- percent-encoding -----------------------------------------------------------------------

TEST_CASE("normalize: unreserved escapes are decoded, in either hex case") {
    CHECK(keep("/a/%7euser") == "/a/~user");
    CHECK(keep("/a/%7Euser") == "/a/~user");
    CHECK(keep("/a/%7euser") == keep("/a/~user"));
    CHECK(keep("/%41%42c") == "/ABc");
    CHECK(keep("/%61%2D%2e%5F%30%39%7A") == "/a-._09z");
}

// Issue 11 item 9: "/x%21" and "/x!" are one file to nginx and Apache (they decode the path
// before mapping it), so they must be one resource: the old rule gave them two keys.
TEST_CASE("normalize: a path's sub-delims, ':' and '@' are decoded; '/' and '%' stay encoded, upper-case hex") {
    CHECK(keep("/a%2fb") == "/a%2Fb");
    CHECK(keep("/a%2Fb") == "/a%2Fb");
    CHECK(keep("/a%2fb") != keep("/a/b"));  // an encoded slash is data (and refused on writes)
    CHECK(keep("/a%3a") == "/a:");
    CHECK(keep("/%21") == "/!");
    CHECK(keep("/%21") == keep("/!"));
    CHECK(keep("/x%40y%3Bz%3D1") == "/x@y;z=1");
    CHECK(keep("/a?x=%21") == "/a?x=%21");   // in the query, reserved escapes are data
    CHECK(keep("/a?x=%26") != keep("/a?x=&"));
    CHECK(keep("/%25") == "/%25");        // an encoded '%' is not decoded (no double decoding)
    CHECK(keep("/%252F") == "/%252F");
    CHECK(keep("/a%c3%a9") == "/a%C3%A9");
    CHECK(keep("/%00") == "/%00");        // an encoded NUL is an escape, not a raw NUL
    CHECK(keep("/%20") == "/%20");
}

TEST_CASE("normalize: bytes not allowed raw are encoded") {
    CHECK(keep("/a\xc3\xa9") == "/a%C3%A9");
    CHECK(keep("/a\xc3\xa9") == keep("/a%c3%a9"));
    CHECK(keep("/\"<>\\^`{|}[]") == "/%22%3C%3E%5C%5E%60%7B%7C%7D%5B%5D");
    CHECK(keep("/\x80\xff") == "/%80%FF");
    // What pchar allows stays raw.
    CHECK(keep("/a!$&'()*+,;=:@b") == "/a!$&'()*+,;=:@b");
    CHECK(keep("/-._~") == "/-._~");
}

// ---- dot-segments ---------------------------------------------------------------------------

TEST_CASE("normalize: dot-segments are removed (RFC 3986 §5.2.4)") {
    const std::vector<std::pair<std::string, std::string>> rows = {
        {"/a/../b", "/b"},
        {"/../../etc", "/etc"},
        {"/../../etc/passwd", "/etc/passwd"},
        {"/a/./b", "/a/b"},
        {"/a/b/..", "/a/"},
        {"/a/b/.", "/a/b/"},
        {"/a/b/../", "/a/"},
        {"/..", "/"},
        {"/.", "/"},
        {"/./", "/"},
        {"/../", "/"},
        {"/", "/"},
        {"/a/b/c/./../../g", "/a/g"},          // RFC 3986 §5.2.4 example
        {"/mid/content=5/../6", "/mid/6"},      // RFC 3986 §5.2.4 example
        {"/a/b/../../../../c", "/c"},
        {"/a//../b", "/a/b"},
        {"/a/%2e%2E/b", "/b"},                  // dots decoded first (§6.2.2)
        {"/a/%2E/b", "/a/b"},
        {"/a/.%2e", "/"},
        // Not dot-segments.
        {"/a/.../b", "/a/.../b"},
        {"/a/..b/c", "/a/..b/c"},
        {"/a/b../c", "/a/b../c"},
        {"/a/.b", "/a/.b"},
        {"/a%2F..%2Fb", "/a%2F..%2Fb"},         // an encoded slash does not delimit segments
        {"/a//b", "/a//b"},                     // empty segments are kept
        {"//", "//"},
    };
    for (const auto& [in, out] : rows) {
        CAPTURE(in);
        CHECK(keep(in) == out);
    }
}

TEST_CASE("normalize: dot-segments in the query are data") {
    CHECK(keep("/a/../b?x=../y/./z") == "/b?x=../y/./z");
    CHECK(keep("/a?/../b") == "/a?/../b");
}

// ---- query modes ----------------------------------------------------------------------------

TEST_CASE("normalize: query keep") {
    CHECK(keep("/p?b=2&a=1") == "/p?b=2&a=1");
    CHECK(keep("/p?a=%7e&b=%2f") == "/p?a=~&b=%2F");
    CHECK(keep("/p?a=?b/c") == "/p?a=?b/c");   // '?' and '/' are allowed raw in a query
    CHECK(keep("/p?a=%3F") == "/p?a=%3F");
    CHECK(keep("/p?a=[1]") == "/p?a=%5B1%5D");
    CHECK(keep("/p?a&&b") == "/p?a&&b");
    CHECK(keep("/p?") == "/p");                // an empty query is no query
    CHECK(keep("/p?b=2&a=1") != keep("/p?a=1&b=2"));
}

TEST_CASE("normalize: query sorted by name, then value") {
    CHECK(sorted("/p?b=2&a=1") == "/p?a=1&b=2");
    CHECK(sorted("/p?a=2&a=1") == "/p?a=1&a=2");
    CHECK(sorted("/p?b=1&a=2&c=0&a=1") == "/p?a=1&a=2&b=1&c=0");
    // By name first: `a` < `a.b` although "a.b=1" < "a=2" as whole strings.
    CHECK(sorted("/p?a.b=1&a=2") == "/p?a=2&a.b=1");
    CHECK(sorted("/p?ab=0&a=1") == "/p?a=1&ab=0");
    // Equal name and value order deterministically.
    CHECK(sorted("/p?a=&a&b") == "/p?a&a=&b");
    CHECK(sorted("/p?a&a=&b") == "/p?a&a=&b");
    // Empty parameters are dropped; an all-empty query is no query.
    CHECK(sorted("/p?&&b=1&&a=1&") == "/p?a=1&b=1");
    CHECK(sorted("/p?&") == "/p");
    CHECK(sorted("/p?") == "/p");
    // Normalized before sorting: %61 is `a`.
    CHECK(sorted("/p?b=1&%61=2") == "/p?a=2&b=1");
    CHECK(sorted("/p?b=%2f&a=%7e") == "/p?a=~&b=%2F");
    // Every permutation gives the same key.
    std::vector<std::string> params = {"x=1", "a=3", "a=1", "m", "z=0"};
    std::sort(params.begin(), params.end());
    std::set<std::string> seen;
    do {
        std::string t = "/p?";
        for (std::size_t i = 0; i < params.size(); ++i) t += (i ? "&" : "") + params[i];
        seen.insert(*sorted(t));
    } while (std::next_permutation(params.begin(), params.end()));
    CHECK(seen == std::set<std::string>{"/p?a=1&a=3&m&x=1&z=0"});
}

TEST_CASE("normalize: query ignore") {
    CHECK(ignore("/p?b=2&a=1") == "/p");
    CHECK(ignore("/p?") == "/p");
    CHECK(ignore("/a/../p?x") == "/p");
    CHECK(ignore("/p%7e?x") == "/p~");
    // Still validated.
    CHECK_FALSE(ignore("/p?a\x01"));
    CHECK_FALSE(ignore("/p?a=%zz"));
}

TEST_CASE("normalize: the fragment is dropped") {
    CHECK(keep("/p#frag") == "/p");
    CHECK(keep("/p?a=1#f") == "/p?a=1");
    CHECK(keep("/p#f?a=1") == "/p");
    CHECK(sorted("/p?b&a#x") == "/p?a&b");
    CHECK(keep("/p#") == "/p");
}

// ---- rejection ------------------------------------------------------------------------------

TEST_CASE("normalize: rejected targets") {
    const std::vector<std::string> bad = {
        "",
        "p",
        "a/b",
        "http://example.com/p",   // absolute-form
        "example.com:443",        // authority-form
        "*",                      // asterisk-form
        "?a=1",
        "/a b",
        "/a\r\nX-Injected: 1",
        "/a\r",
        "/a\n",
        "/a\0b"s,
        "\0/a"s,
        "/a\t",
        "/a\x7f",
        "/a\x1b[31m",
        "/p?a= b",
        "/p?a=\x01",
        "/p#\x01",
        "/a%",
        "/a%2",
        "/a%zz",
        "/a%g1",
        "/a%1g",
        "/a%%41",
        "/p?a=%",
        "/p?a=%2",
        "/p#%zz",
    };
    for (const auto& b : bad) {
        CAPTURE(b);
        for (auto q : {query_mode::keep, query_mode::sorted, query_mode::ignore})
            CHECK_FALSE(normalize_target(b, q));
    }
}

TEST_CASE("normalize: outputs are canonical and idempotent (randomized)") {
    std::mt19937 rng(20240611);
    const std::string alphabet = "/./../%2e%2E%2f%7e%41?&=#abcAB~-_!$'()*+,;:@[]{}|\\^`\"<> \x01\x7f\xc3\xa9";
    std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
    std::uniform_int_distribution<int> len(0, 40);
    int accepted = 0;
    for (int i = 0; i < 20000; ++i) {
        std::string t = "/";
        for (int n = len(rng); n > 0; --n) t += alphabet[pick(rng)];
        for (auto q : {query_mode::keep, query_mode::sorted, query_mode::ignore}) {
            const auto n = normalize_target(t, q);
            if (!n) continue;
            ++accepted;
            CAPTURE(t);
            CAPTURE(*n);
            REQUIRE(n->front() == '/');
            CHECK(valid_normalized(*n));
            CHECK(normalize_target(*n, q) == n);
            // A normalized path never has a dot-segment left.
            const std::string path = n->substr(0, n->find('?'));
            CHECK(path.find("/./") == std::string::npos);
            CHECK(path.find("/../") == std::string::npos);
            CHECK_FALSE(path.ends_with("/."));
            CHECK_FALSE(path.ends_with("/.."));
            CHECK(valid_key(resource_key("r", *n, {})));
        }
    }
    CHECK(accepted > 1000);  // the generator does produce valid targets
}

// ---- resource keys --------------------------------------------------------------------------

TEST_CASE("key: layout is route|target|name=value...") {
    CHECK(resource_key("api", "/a", {}) == "api|/a");
    CHECK(resource_key("api", "/a?x=1&y=%2F", {}) == "api|/a?x=1&y=%2F");
    CHECK(resource_key("api", "/a", {{"accept", "text/html"}}) == "api|/a|accept=text/html");
    CHECK(resource_key("api", "/a", {{"accept", "text/html"}, {"accept-language", "de"}}) ==
          "api|/a|accept=text/html|accept-language=de");
    CHECK(resource_key("routes[0]", "/", {}) == "routes[0]|/");
}

TEST_CASE("key: vary values distinguish resources, a missing header is empty") {
    const auto html = resource_key("api", "/a", {{"accept", "text/html"}});
    const auto json = resource_key("api", "/a", {{"accept", "application/json"}});
    const auto missing = resource_key("api", "/a", {{"accept", ""}});
    CHECK(html != json);
    CHECK(html != missing);
    CHECK(missing == "api|/a|accept=");
    CHECK(missing != resource_key("api", "/a", {}));
    // Order is the route's order.
    CHECK(resource_key("api", "/a", {{"a", "1"}, {"b", "2"}}) !=
          resource_key("api", "/a", {{"b", "2"}, {"a", "1"}}));
}

TEST_CASE("key: vary values are escaped and cannot forge other fields") {
    const auto k = resource_key("api", "/a", {{"accept", "a b{c}|d=e%f#g\"h\\i\x01\xff"}});
    CHECK(k == "api|/a|accept=a%20b%7Bc%7D%7Cd%3De%25f%23g%22h%5Ci%01%FF");
    CHECK(valid_key(k));
    // One header whose value looks like two headers.
    CHECK(resource_key("api", "/a", {{"a", "1|b=2"}}) !=
          resource_key("api", "/a", {{"a", "1"}, {"b", "2"}}));
    CHECK(resource_key("api", "/a", {{"a", "1=2"}}) != resource_key("api", "/a", {{"a=1", "2"}}));
    // A value that spells an escape differs from the escaped character.
    CHECK(resource_key("api", "/a", {{"a", "%7C"}}) != resource_key("api", "/a", {{"a", "|"}}));
}

TEST_CASE("key: targets that were not normalized still give valid keys") {
    const auto k = resource_key("api", "/a b{c}|d#e\x01\x7f\xc3", {});
    CHECK(k == "api|/a%20b%7Bc%7D%7Cd%23e%01%7F%C3");
    CHECK(valid_key(k));
}

TEST_CASE("key: route names are escaped") {
    CHECK(resource_key("my route{1}", "/", {}) == "my%20route%7B1%7D|/");
    CHECK(resource_key("a|b", "/", {}) == "a%7Cb|/");
    CHECK(resource_key("a#b", "/", {}) == "a%23b|/");
    CHECK(resource_key("a%7Cb", "/", {}) == "a%257Cb|/");
    CHECK(resource_key("", "/", {}) == "|/");
}

TEST_CASE("key: no target or vary value makes a key of one route equal one of another") {
    // Adversarial route names against adversarial (normalized and raw) targets and vary values.
    const std::vector<std::string> routes = {
        "a", "a/x", "a|/x", "a|", "a%7C", "a%7C/x", "a#", "ab", "", "a=", "a|/x|v=1", "A",
        std::string(300, 'r'), std::string(300, 'r') + "2", std::string(134, 'r') + "#",
    };
    const std::vector<std::string> targets = {
        "/", "/x", "/x|/y", "/x%7C/y", "/x/y", "/|", "", "x", "/x#y", "/x=1", "/x?a=1|v=1",
        "/" + std::string(250, 'x'), "/" + std::string(250, 'x') + "|",
    };
    const std::vector<vary_list> varies = {{}, {{"v", "1"}}, {{"v", "1|a/x"}}, {{"v", ""}}};
    std::map<std::string, std::string> owner;  // key -> route
    int keys = 0;
    for (const auto& r : routes)
        for (const auto& t : targets)
            for (const auto& v : varies) {
                const auto k = resource_key(r, t, v);
                CAPTURE(r);
                CAPTURE(t);
                CHECK(valid_key(k));
                const auto [it, inserted] = owner.emplace(k, r);
                if (!inserted) CHECK(it->second == r);
                ++keys;
            }
    CHECK(keys == static_cast<int>(routes.size() * targets.size() * varies.size()));
    // Specific attempts.
    CHECK(resource_key("a", "/x/y", {}) != resource_key("a/x", "/y", {}));
    CHECK(resource_key("a", "/x|/y", {}) != resource_key("a|/x", "/y", {}));
    CHECK(resource_key("a", "|/x", {}) != resource_key("a|", "/x", {}));
    CHECK(resource_key("a", "/x", {{"v", "1"}}) != resource_key("a", "/x|v=1", {}));
}

TEST_CASE("key: the route is a fixed prefix followed by '|' or '#'") {
    for (const std::string r : {"api", "a|b", "x y", "a#"}) {
        std::string escaped = resource_key(r, "", {});
        escaped.pop_back();  // the '|' before the empty target
        CHECK(resource_key(r, "/t", {}).starts_with(escaped + "|"));
        CHECK(resource_key(r, "/" + std::string(300, 't'), {}).starts_with(escaped + "#"));
    }
}

TEST_CASE("key: at most 200 bytes, longer keys are hashed") {
    // "api|" + 196 bytes = 200: still readable.
    const std::string t196 = "/" + std::string(195, 'x');
    const auto k200 = resource_key("api", t196, {});
    CHECK(k200.size() == 200);
    CHECK(k200 == "api|" + t196);
    // One byte more is hashed.
    const auto k201 = resource_key("api", t196 + "y", {});
    CHECK(k201.size() == 3 + 1 + 64);
    CHECK(k201.starts_with("api#"));
    CHECK(is_hex_lower(k201.substr(4)));

    // SHA-256 of the full key, lower-case hex.
    CHECK(resource_key("api", "/" + std::string(300, 'a'), {}) ==
          "api#9290686c34d8d873374f3ec23c8a8248986d7308e57d27f0950a45f42d195148");
    CHECK(resource_key("api", "/x", {{"accept", std::string(300, 'b')}}) ==
          "api#90bb74340fe247f3b9d29c667da74447d6a80f061ed70ee83cc1a946e5a91a36");

    // Different long targets, different keys; same target, same key.
    const std::string long_t = "/" + std::string(8000, 'z');
    CHECK(resource_key("api", long_t, {}) == resource_key("api", long_t, {}));
    CHECK(resource_key("api", long_t, {}) != resource_key("api", long_t + "z", {}));
    CHECK(resource_key("api", long_t, {}) != resource_key("api", long_t, {{"v", ""}}));
    // A long key never equals the readable key of a short target.
    CHECK(resource_key("api", long_t, {}).find('|') == std::string::npos);
}

TEST_CASE("key: very long route names stay bounded and distinct") {
    const std::string r1 = std::string(300, 'r') + "1";
    const std::string r2 = std::string(300, 'r') + "2";
    const auto k1 = resource_key(r1, "/", {});
    const auto k2 = resource_key(r2, "/", {});
    CHECK(valid_key(k1));
    CHECK(valid_key(k2));
    CHECK(k1.size() == max_resource_key_bytes);
    CHECK(k1 != k2);
    CHECK(k1.starts_with(std::string(135, 'r') + "#"));
    // Escaped route names are bounded after escaping.
    const auto k3 = resource_key(std::string(150, '{'), "/", {});
    CHECK(valid_key(k3));
}

TEST_CASE("key: end to end from request targets") {
    auto key = [](std::string_view target, query_mode q = query_mode::keep) {
        const auto n = normalize_target(target, q);
        REQUIRE(n);
        return resource_key("api", *n, {});
    };
    CHECK(key("/a/%7euser") == key("/a/~user"));
    CHECK(key("/x/../a/./b") == key("/a/b"));
    CHECK(key("/a%2fb") != key("/a/b"));
    CHECK(key("/p?b=1&a=2", query_mode::sorted) == key("/p?a=2&b=1", query_mode::sorted));
    CHECK(key("/p?b=1&a=2", query_mode::ignore) == key("/p", query_mode::ignore));
    // Very long targets are hashed and bounded.
    const auto k = key("/" + std::string(8000, 'q'));
    CHECK(valid_key(k));
    CHECK(k.starts_with("api#"));
}

TEST_CASE("ambiguous paths: encoded slashes, empty segments and dot-segments are named") {
    CHECK(ambiguous_path("/api/doc.txt").empty());
    CHECK(ambiguous_path("/api/doc.txt?a=//b&c=%2F").empty());   // the query is not the path
    CHECK(ambiguous_path("/a.b/..c/d.").empty());
    CHECK_FALSE(ambiguous_path("//api/doc.txt").empty());
    CHECK_FALSE(ambiguous_path("/api//doc.txt").empty());
    CHECK_FALSE(ambiguous_path("/api%2Fdoc.txt").empty());
    CHECK_FALSE(ambiguous_path("/api%2fdoc.txt").empty());
    CHECK_FALSE(ambiguous_path("/api%5Cdoc.txt").empty());
    CHECK_FALSE(ambiguous_path("/api\\doc.txt").empty());
    CHECK_FALSE(ambiguous_path("/api/./doc.txt").empty());
    CHECK_FALSE(ambiguous_path("/x/../api/doc.txt").empty());
    CHECK_FALSE(ambiguous_path("/x/%2E%2E/api/doc.txt").empty());
    CHECK_FALSE(ambiguous_path("/x/%2e./api").empty());
    CHECK_FALSE(ambiguous_path("/api/..").empty());
    CHECK_FALSE(ambiguous_path("/a%00b").empty());
}

TEST_CASE("resource scope: the origin and the host, case and port folded") {
    CHECK(resource_scope("127.0.0.1:3000", "Example.COM") == resource_scope("127.0.0.1:3000", "example.com"));
    CHECK(resource_scope("127.0.0.1:3000", "example.com:80") == resource_scope("127.0.0.1:3000", "example.com"));
    // Two proxies of a fleet listen on different ports: one resource.
    CHECK(resource_scope("127.0.0.1:3000", "127.0.0.1:8081") == resource_scope("127.0.0.1:3000", "127.0.0.1:8082"));
    CHECK(resource_scope("o:1", "[::1]:8081") == resource_scope("o:1", "[::1]"));
    CHECK(resource_scope("127.0.0.1:3000", "example.com.") == resource_scope("127.0.0.1:3000", "example.com"));
    CHECK(resource_scope("127.0.0.1:3000", "a.example") != resource_scope("127.0.0.1:3000", "b.example"));
    CHECK(resource_scope("127.0.0.1:3000", "a.example") != resource_scope("127.0.0.1:3001", "a.example"));
    // Two virtual hosts are two resources (issue 11 item 12).
    CHECK(resource_key(resource_scope("o:1", "a.example"), "/doc", {}) !=
          resource_key(resource_scope("o:1", "b.example"), "/doc", {}));
}

TEST_CASE("variants: vary values and content coding, empty for the default representation") {
    CHECK(variant_id({}, "").empty());
    CHECK(variant_id({}, "identity").empty());
    CHECK(variant_id({{"accept", ""}}, "").empty());
    CHECK_FALSE(variant_id({}, "gzip").empty());
    CHECK(variant_id({}, "gzip") == variant_id({}, "GZIP"));
    CHECK(variant_id({}, "gzip") != variant_id({}, "br"));
    CHECK(variant_id({{"accept", "application/json"}}, "") != variant_id({{"accept", "text/html"}}, ""));
    CHECK(variant_id({{"accept", "application/json"}}, "") != variant_id({{"accept", "application/json"}}, "gzip"));
    CHECK(variant_id({{"accept", "a"}}, "").size() == 16);
}
