// WebDAV `If` headers (RFC 4918 §10.4) against a real Apache httpd with mod_dav: first Apache on
// its own (the harness, and the behaviour the proxy's rewrite must reproduce), then a WebDAV
// client through the real proxy binary (`etag: hash`, Redis store) in front of it (issue 11,
// item 13: on a hash route Apache never issued the tags clients send, so the proxy must judge
// them and forward only the lock tokens).
#include "proxy/dav_if.hpp"
#include "tests/support/apache.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_process.hpp"
#include "tests/support/workload.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

using header_list = std::vector<std::pair<std::string, std::string>>;

// LOCK (exclusive write, 10 minutes) -> the Lock-Token header, "<opaquelocktoken:…>".
std::string lock(http_client& c, const std::string& target) {
    auto r = c.request("LOCK", target, {{"Content-Type", "application/xml; charset=utf-8"}, {"Timeout", "Second-600"}},
                       exclusive_lock_body());
    REQUIRE_MESSAGE(r.status == 200, r.status << " " << r.body);
    auto token = r.header("Lock-Token");
    REQUIRE_MESSAGE(token.starts_with("<opaquelocktoken:"), token);
    REQUIRE(token.ends_with(">"));
    return token;
}

std::size_t count_lines(const std::string& log, const std::string& prefix) {
    std::istringstream lines(log);
    std::size_t n = 0;
    for (std::string line; std::getline(lines, line);) n += line.starts_with(prefix);
    return n;
}

// How many requests of `method` on `path` reached Apache. Apache logs a request after answering
// it, so a marker request is sent on `c` and waited for: every request sent on that connection
// before it is logged by then (one connection is served by one thread, in order). Requests on
// other connections (the proxy's) may still be logging: callers expecting one wait for it.
std::size_t apache_saw(const apache_webdav& a, http_client& c, const std::string& method, const std::string& path) {
    static int marker = 0;
    const std::string target = "/.settled-" + std::to_string(++marker);
    c.request("GET", target);
    REQUIRE(eventually([&] { return count_lines(a.access_log(), "GET " + target + " ") == 1; }, 5s));
    return count_lines(a.access_log(), method + " " + path + " ");
}

bool apache_saw_eventually(const apache_webdav& a, const std::string& method, const std::string& path, std::size_t n) {
    return eventually([&] { return count_lines(a.access_log(), method + " " + path + " ") == n; }, 5s);
}

// Apache's ETag is weak while the file's mtime is within a second of the request; a fixed mtime
// in the past makes it strong and the same for the same content.
void age(const apache_webdav& a, const std::string& path) {
    const timespec t[2] = {{1577836800, 0}, {1577836800, 0}};  // 2020-01-01
    REQUIRE(::utimensat(AT_FDCWD, (a.root() + path).c_str(), t, 0) == 0);
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
    for (auto at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
    return s;
}

bool verbose() { return std::getenv("IFM_DAV_VERBOSE") != nullptr; }

}  // namespace

TEST_SUITE("apache") {

TEST_CASE("apache webdav: PUT, LOCK, If with the lock token; a wrong entity-tag gets 412 from Apache itself") {
    apache_webdav apache;
    http_client c(apache.port());
    CHECK(c.request("GET", "/a.txt").status == 404);
    CHECK(c.request("PUT", "/a.txt", {{"Content-Type", "text/plain"}}, "v1").status == 201);
    CHECK(c.request("PUT", "/a.txt", {}, "v2").status == 204);
    auto g = c.request("GET", "/a.txt");
    CHECK(g.status == 200);
    CHECK(g.body == "v2");
    CHECK(!g.header("ETag").empty());

    const auto token = lock(c, "/a.txt");
    // Locked: a write without the token is refused, with it accepted.
    CHECK(c.request("PUT", "/a.txt", {}, "v3").status == 423);
    CHECK(c.request("PUT", "/a.txt", {{"If", "(" + token + ")"}}, "v3").status == 204);
    CHECK(c.request("GET", "/a.txt").body == "v3");
    // An entity-tag Apache never issued: 412 from Apache, nothing written.
    CHECK(c.request("PUT", "/a.txt", {{"If", "(" + token + " [\"stale\"])"}}, "v4").status == 412);
    CHECK(c.request("GET", "/a.txt").body == "v3");
    // Its own tag (Apache compares weakly, so a fresh W/ tag does too).
    age(apache, "/a.txt");
    const auto etag = c.request("HEAD", "/a.txt").header("ETag");
    REQUIRE_MESSAGE(etag.starts_with("\""), etag);  // strong once the mtime is old
    CHECK(c.request("PUT", "/a.txt", {{"If", "(" + token + " [" + etag + "])"}}, "v5").status == 204);
    CHECK(c.request("GET", "/a.txt").body == "v5");
    CHECK(c.request("PUT", "/a.txt", {{"If", "(" + token + " [" + etag + "])"}}, "v6").status == 412);  // v5 has another tag
    // Malformed If: 400.
    CHECK(c.request("PUT", "/a.txt", {{"If", "(" + token}}, "v7").status == 400);

    CHECK(c.request("UNLOCK", "/a.txt", {{"Lock-Token", token}}).status == 204);
    CHECK(c.request("PUT", "/a.txt", {}, "v8").status == 204);
    CHECK_MESSAGE(apache_saw(apache, c, "PUT", "/a.txt") == 9, apache.access_log());
    CHECK(apache.error_log().find("AH00016") == std::string::npos);  // no configuration failure
}

// What the rewrite relies on, checked on Apache: a lock token counts as submitted in any list,
// true or false (RFC 4918 §10.4.1); `<DAV:no-lock>` makes a list false without losing that.
TEST_CASE("apache webdav: lock tokens in false lists are still submitted; DAV:no-lock") {
    apache_webdav apache;
    http_client c(apache.port());
    REQUIRE(c.request("PUT", "/a.txt", {}, "v1").status == 201);
    const auto token = lock(c, "/a.txt");
    CHECK(c.request("PUT", "/a.txt", {{"If", "(Not <DAV:no-lock>)"}}, "x").status == 423);
    CHECK(c.request("PUT", "/a.txt", {{"If", "(" + token + " <DAV:no-lock>)"}}, "x").status == 412);
    CHECK(c.request("PUT", "/a.txt", {{"If", "(" + token + " [\"stale\"]) (Not <DAV:no-lock>)"}}, "x").status == 204);
    CHECK(c.request("PUT", "/a.txt", {{"If", "(" + token + " <DAV:no-lock>) (Not <DAV:no-lock>)"}}, "y").status == 204);
    CHECK(c.request("GET", "/a.txt").body == "y");
    // "Not" is the only spelling Apache accepts (the rewrite writes it so).
    CHECK(c.request("PUT", "/a.txt", {{"If", "(" + token + ") (not <DAV:no-lock>)"}}, "z").status == 400);
    // Lists tagged with another resource do not apply to this one (the lock token still counts).
    CHECK(c.request("PUT", "/a.txt", {{"If", "</other.txt> ([\"x\"]) </a.txt> (" + token + ")"}}, "w").status == 204);
}

// The rewrite's promise, with Apache as the judge: for each header, Apache's answer to the
// original (conditions on Apache's own tag) equals its answer to what rewrite_dav_if forwards
// (given Apache's tag as the current validator), or the rewrite refuses and Apache answered 412.
// Each request starts from the same content, mtime and so ETag.
TEST_CASE("apache webdav: Apache answers the rewritten If header as it answers the original") {
    apache_webdav apache;
    http_client c(apache.port());
    const std::string host = "127.0.0.1:" + std::to_string(apache.port());
    REQUIRE(c.request("PUT", "/a.txt", {}, "base").status == 201);
    REQUIRE(c.request("PUT", "/other.txt", {}, "other").status == 201);

    const std::vector<std::string> templates = {
        "(<TOK> [ETAG])",
        "(<TOK> [\"stale\"])",
        "([ETAG])",
        "([\"stale\"])",
        "(Not [ETAG])",
        "(Not [\"stale\"])",
        "(<TOK> [\"stale\"]) (Not <DAV:no-lock>)",
        "(<TOK>) ([\"stale\"])",
        "([\"stale\"]) (<TOK>)",
        "([ETAG]) (<TOK>)",
        "(<TOK> [ETAG]) ([\"stale\"])",
        "(Not [\"stale\"] <TOK>)",
        "(<TOK> Not [ETAG])",
        "(<urn:uuid:00000000-0000-0000-0000-000000000000> [ETAG])",
        "(<urn:uuid:00000000-0000-0000-0000-000000000000> [ETAG]) (<TOK>)",
        "</a.txt> (<TOK> [ETAG])",
        "</a.txt> (<TOK> [\"stale\"])",
        "<http://HOST/a.txt> (<TOK> [\"stale\"]) (Not <DAV:no-lock>)",
        "<http://HOST/a.txt> ([ETAG])",
        "</other.txt> ([\"x\"]) </a.txt> (<TOK> [ETAG])",
        "</a.txt> ([\"stale\"]) </other.txt> (<TOK>)",
    };

    for (bool locked : {true, false}) {
        std::string token = lock(c, "/a.txt");
        // Back to "base" with the same mtime: the same ETag before every request.
        auto reset = [&] {
            REQUIRE(c.request("PUT", "/a.txt", {{"If", "(" + token + ")"}}, "base").status / 100 == 2);
            age(apache, "/a.txt");
        };
        reset();
        const auto etag = c.request("HEAD", "/a.txt").header("ETag");
        REQUIRE_MESSAGE(etag.starts_with("\""), etag);
        if (!locked) {
            REQUIRE(c.request("UNLOCK", "/a.txt", {{"Lock-Token", token}}).status == 204);
            // A token that names no lock any more: every list holding it is false.
        }
        for (const auto& t : templates) {
            const auto original = replace_all(replace_all(replace_all(t, "<TOK>", token), "ETAG", etag), "HOST", host);
            auto parsed = ifm::proxy::parse_dav_if(original);
            REQUIRE_MESSAGE(parsed.has_value(), original);
            auto r = ifm::proxy::rewrite_dav_if(*parsed, "/a.txt", host, {etag}, true);

            if (!locked) {
                // Writes below go through without a lock; reset() needs none.
                REQUIRE(c.request("PUT", "/a.txt", {}, "base").status / 100 == 2);
                age(apache, "/a.txt");
            } else {
                reset();
            }
            REQUIRE(c.request("HEAD", "/a.txt").header("ETag") == etag);
            const auto s1 = c.request("PUT", "/a.txt", {{"If", original}}, "new").status;

            if (!locked) {
                REQUIRE(c.request("PUT", "/a.txt", {}, "base").status / 100 == 2);
                age(apache, "/a.txt");
            } else {
                reset();
            }
            REQUIRE(c.request("HEAD", "/a.txt").header("ETag") == etag);
            unsigned s2 = 412;  // the proxy's own answer
            if (r.passes) {
                header_list h;
                if (!r.forwarded.empty()) h.emplace_back("If", r.forwarded);
                s2 = c.request("PUT", "/a.txt", h, "new").status;
            }
            if (verbose())
                MESSAGE((locked ? "locked   " : "unlocked ") << original << " -> " << s1 << " | "
                                                             << (r.passes ? "forwards '" + r.forwarded + "'" : "proxy 412")
                                                             << " -> " << s2);
            CHECK_MESSAGE(s1 == s2, (locked ? "locked: " : "unlocked: ") << original << " -> Apache " << s1
                                                                         << "; rewritten '" << r.forwarded << "' (passes "
                                                                         << r.passes << ") -> " << s2);
        }
        if (locked) CHECK(c.request("UNLOCK", "/a.txt", {{"Lock-Token", token}}).status == 204);
    }
}

// ---------------------------------------------------------------------------------------------
// Through the proxy. These fail until the proxy evaluates If on hash routes (today Apache gets
// the proxy's tags and answers 412 to a valid write).

namespace {

std::string proxy_yaml(std::uint16_t port, const redis_server& redis, const apache_webdav& apache) {
    return "listen: 127.0.0.1:" + std::to_string(port) + "\n"
           "workers: 1\n"
           "store: { kind: redis, url: \"" + redis.url() + "\", timeout: 500ms, young_server_wait: false }\n"
           "upstreams:\n"
           "  dav: { address: 127.0.0.1:" + std::to_string(apache.port()) + ", connect_timeout: 500ms, request_timeout: 5s }\n"
           "routes:\n"
           "  - match: { path_prefix: / }\n"
           "    upstream: dav\n"
           "    etag: hash\n"
           "    methods: [PUT, DELETE]\n"
           "log: { level: warn, access_log: false }\n";
}

}  // namespace

TEST_CASE("WebDAV client through the proxy (hash, Redis) to Apache: If with the proxy's tag and the lock token") {
    redis_server redis;
    apache_webdav apache;
    const auto port = free_port();
    proxy_process px(proxy_yaml(port, redis, apache), port);
    http_client c(port);
    http_client direct(apache.port());
    // The process accepts before its store connection is up.
    REQUIRE(eventually([&] { return c.request("PUT", "/warm-up", {{"If-None-Match", "*"}}, "w").status == 201; }, 5s));

    REQUIRE(c.request("PUT", "/doc.txt", {{"If-None-Match", "*"}}, "v1").status == 201);
    auto g = c.request("GET", "/doc.txt");
    REQUIRE(g.status == 200);
    const auto t = g.header("ETag");
    REQUIRE(t.starts_with("\""));
    CHECK(t != direct.request("HEAD", "/doc.txt").header("ETag"));  // the proxy's tag, not Apache's

    const auto token = lock(c, "/doc.txt");
    REQUIRE(apache_saw_eventually(apache, "PUT", "/doc.txt", 1));
    const std::size_t puts_before = 1;

    SUBCASE("the lock token and the proxy's current tag: the write goes through (today: Apache's false 412)") {
        auto r = c.request("PUT", "/doc.txt", {{"If", "(" + token + " [" + t + "])"}}, "v2");
        CHECK(r.status == 204);
        CHECK(direct.request("GET", "/doc.txt").body == "v2");
        CHECK(apache_saw_eventually(apache, "PUT", "/doc.txt", puts_before + 1));
        // The new representation has a new tag; the old one is stale now.
        auto t2 = c.request("GET", "/doc.txt").header("ETag");
        CHECK(t2 != t);
        CHECK(c.request("PUT", "/doc.txt", {{"If", "(" + token + " [" + t + "])"}}, "v3").status == 412);
        CHECK(c.request("PUT", "/doc.txt", {{"If", "(" + token + " [" + t2 + "])"}}, "v3").status == 204);
        CHECK(direct.request("GET", "/doc.txt").body == "v3");
    }
    SUBCASE("a stale tag: 412 from the proxy, never forwarded") {
        auto r = c.request("PUT", "/doc.txt", {{"If", "(" + token + " [\"stale\"])"}}, "v2");
        CHECK(r.status == 412);
        CHECK(r.header("Content-Type") == "application/problem+json");  // the proxy's answer, not Apache's
        CHECK(direct.request("GET", "/doc.txt").body == "v1");  // what proves it; the log is a second witness
        CHECK(apache_saw(apache, direct, "PUT", "/doc.txt") == puts_before);
    }
    SUBCASE("the current tag without the lock token: Apache's own 423 (the proxy does not hide the lock)") {
        auto r = c.request("PUT", "/doc.txt", {{"If", "([" + t + "])"}}, "v2");
        CHECK(r.status == 423);
        CHECK(apache_saw_eventually(apache, "PUT", "/doc.txt", puts_before + 1));
        CHECK(direct.request("GET", "/doc.txt").body == "v1");
    }
    SUBCASE("§10.4.8: a false list still submits its lock token") {
        auto r = c.request("PUT", "/doc.txt", {{"If", "(" + token + " [\"stale\"]) (Not <DAV:no-lock>)"}}, "v2");
        CHECK(r.status == 204);
        CHECK(direct.request("GET", "/doc.txt").body == "v2");
    }
    SUBCASE("tagged with the request URI as the client sees it (the proxy's authority)") {
        auto r = c.request("PUT", "/doc.txt",
                           {{"If", "<http://127.0.0.1:" + std::to_string(port) + "/doc.txt> (" + token + " [" + t + "])"}},
                           "v2");
        CHECK(r.status == 204);
        CHECK(direct.request("GET", "/doc.txt").body == "v2");
    }
    SUBCASE("DELETE under the lock: a stale tag refused by the proxy, the current one deletes") {
        // Tagged with the target: Apache answers an untagged `(<token>)` on DELETE with 424 (it
        // applies untagged lists to the parent collection too, which has no such lock).
        const std::string tag = "</doc.txt> ";
        CHECK(c.request("DELETE", "/doc.txt", {{"If", tag + "(" + token + " [\"stale\"])"}}).status == 412);
        CHECK(direct.request("GET", "/doc.txt").status == 200);
        CHECK(c.request("DELETE", "/doc.txt", {{"If", tag + "(" + token + " [" + t + "])"}}).status == 204);
        CHECK(direct.request("GET", "/doc.txt").status == 404);
        // Gone: no entity-tag matches, and the lock went with the resource.
        CHECK(c.request("PUT", "/doc.txt", {{"If", "([" + t + "])"}}, "again").status == 412);
        CHECK(c.request("PUT", "/doc.txt", {{"If", "(Not [" + t + "])"}}, "again").status == 201);
        return;
    }
    CHECK(c.request("UNLOCK", "/doc.txt", {{"Lock-Token", token}}).status == 204);
    // Unlocked: the entity-tag alone decides.
    auto now = c.request("GET", "/doc.txt").header("ETag");
    CHECK(c.request("PUT", "/doc.txt", {{"If", "([\"stale\"])"}}, "x").status == 412);
    CHECK(c.request("PUT", "/doc.txt", {{"If", "([" + now + "])"}}, "x").status == 204);
}

// The same sequence as a real command-line client does it: curl, with hand-written LOCK XML.

TEST_CASE("curl as the WebDAV client through the proxy to Apache") {
    redis_server redis;
    apache_webdav apache;
    const auto port = free_port();
    proxy_process px(proxy_yaml(port, redis, apache), port);
    http_client c(port);
    REQUIRE(eventually([&] { return c.request("PUT", "/warm-up", {{"If-None-Match", "*"}}, "w").status == 201; }, 5s));
    temp_dir dir;
    const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/c.txt";
    {
        std::FILE* f = std::fopen((dir.path() + "/lock.xml").c_str(), "w");
        REQUIRE(f);
        const auto body = exclusive_lock_body("curl");
        std::fwrite(body.data(), 1, body.size(), f);
        std::fclose(f);
    }
    // Runs curl; its -w output (status, then one header) is the result.
    auto curl = [&](const std::string& args) {
        const std::string cmd = "curl -sS -o /dev/null --max-time 10 " + args + " 2>&1";
        std::string out;
        if (std::FILE* p = ::popen(cmd.c_str(), "r")) {
            char buf[512];
            for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
            ::pclose(p);
        }
        while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
        return out;
    };
    CHECK(curl("-X PUT -H 'If-None-Match: *' --data-binary v1 -w '%{http_code}' " + url) == "201");
    const auto etag = curl("-w '%header{etag}' " + url);
    REQUIRE(etag.starts_with("\""));
    const auto token = curl("-X LOCK -H 'Content-Type: application/xml' -H 'Timeout: Second-600' --data-binary @" +
                            dir.path() + "/lock.xml -w '%header{lock-token}' " + url);
    REQUIRE(token.starts_with("<opaquelocktoken:"));
    CHECK(curl("-X PUT -H 'If: (" + token + " [\"stale\"])' --data-binary v2 -w '%{http_code}' " + url) == "412");
    CHECK(curl("-X PUT -H 'If: ([" + etag + "])' --data-binary v2 -w '%{http_code}' " + url) == "423");
    CHECK(curl("-X PUT -H 'If: (" + token + " [" + etag + "])' --data-binary v2 -w '%{http_code}' " + url) == "204");
    CHECK(curl("-X UNLOCK -H 'Lock-Token: " + token + "' -w '%{http_code}' " + url) == "204");
    CHECK(http_client(apache.port()).request("GET", "/c.txt").body == "v2");
}

}  // TEST_SUITE
