// The real binary: command line, config errors, access log, bounded memory while streaming.
#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_process.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <thread>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

std::string plain_yaml(std::uint16_t port, std::uint16_t origin, const std::string& extra = {}) {
    return "listen: 127.0.0.1:" + std::to_string(port) + "\n"
           "workers: 1\n"
           "upstreams:\n"
           "  o: { address: 127.0.0.1:" + std::to_string(origin) + " }\n"
           "routes:\n"
           "  - match: { path_prefix: /plain/ }\n"
           "    upstream: o\n"
           "    track: false\n"
           "  - match: { path_prefix: / }\n"
           "    upstream: o\n"
           "limits: { max_body_bytes: 256MiB }\n" + extra;
}

// Peak resident memory of a process, in KiB (VmHWM).
long peak_rss_kib(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line))
        if (line.starts_with("VmHWM:")) return std::stol(line.substr(6));
    return -1;
}

}  // namespace

TEST_CASE("--version, --help and unknown arguments") {
    auto v = proxy_process::run_once(plain_yaml(free_port(), 1), {"--version"});
    CHECK(v.status == 0);
    CHECK(v.log.find("ifmatch-proxy ") != std::string::npos);
#ifdef IFM_EXPECT_MIMALLOC
    CHECK_MESSAGE(v.log.find("(allocator: mimalloc 2.") != std::string::npos, v.log);
#else
    CHECK(v.log.find("(allocator: glibc malloc)") != std::string::npos);
#endif
    auto h = proxy_process::run_once(plain_yaml(free_port(), 1), {"--help"});
    CHECK(h.status == 0);
    CHECK(h.log.find("--check-config") != std::string::npos);
    auto bad = proxy_process::run_once(plain_yaml(free_port(), 1), {"--frobnicate"});
    CHECK(bad.status != 0);
}

TEST_CASE("--check-config: ok, and every error with file, line and path") {
    auto ok = proxy_process::run_once(plain_yaml(free_port(), 3000), {"--check-config"});
    CHECK(ok.status == 0);
    CHECK(ok.log.find(": ok") != std::string::npos);
    std::string broken =
        "listen: 127.0.0.1:8080\n"
        "upstreams:\n"
        "  o: { address: 127.0.0.1:3000 }\n"
        "routes:\n"
        "  - upstream: o\n"
        "    etag: sha1\n"
        "  - upstream: nowhere\n"
        "limits: { idle_timeout: soon }\n";
    auto r = proxy_process::run_once(broken, {"--check-config"});
    CHECK(r.status != 0);
    CHECK(r.log.find(":6: routes[0].etag: expected one of origin|hash|auto") != std::string::npos);
    CHECK(r.log.find(":7: routes[1].upstream") != std::string::npos);
    CHECK(r.log.find(":8: limits.idle_timeout") != std::string::npos);
}

TEST_CASE("one access-log line per request; JSON format; control characters escaped") {
    fake_origin origin;
    auto port = free_port();
    proxy_process px(plain_yaml(port, origin.port(), "log: { level: info, json: true }\n"), port);
    http_client c(port);
    CHECK(c.request("GET", "/plain/a%0d%0aFAKE", {{"x-fake-status", "201"}}).status == 201);
    CHECK(c.request("GET", "/plain/b", {{"x-fake-status", "404"}}).status == 404);
    std::this_thread::sleep_for(200ms);   // the log is written after the response
    auto log = px.log();
    std::istringstream lines(log);
    std::string line;
    int access = 0;
    while (std::getline(lines, line)) {
        // Field names follow ECS since issue 13 (they were "method", "route", "duration_ms"...).
        if (line.find("\"http.request.method\":") == std::string::npos) continue;
        ++access;
        CHECK(line.front() == '{');
        CHECK(line.find("\"ifmatch.route\":") != std::string::npos);
        CHECK(line.find("\"ifmatch.upstream\":\"o\"") != std::string::npos);
        CHECK(line.find("\"ifmatch.total_ms\":") != std::string::npos);
        CHECK(line.find("\"ifmatch.outcome\":\"not_judged\"") != std::string::npos);
    }
    CHECK(access == 2);
    CHECK(log.find("\"http.response.status_code\":201") != std::string::npos);
    CHECK(log.find("\"http.response.status_code\":404") != std::string::npos);
    // log.json: the application's own lines are JSON too.
    std::istringstream all(log);
    int json_lines = 0;
    while (std::getline(all, line)) {
        if (line.empty()) continue;
        CHECK_MESSAGE(line.front() == '{', line);
        CHECK_MESSAGE(line.back() == '}', line);
        ++json_lines;
    }
    CHECK(json_lines > access);   // at least the "listening" line besides the access lines
}

TEST_CASE("a 64 MiB upload and download stream through with bounded proxy memory") {
    fake_origin origin;
    auto port = free_port();
    proxy_process px(plain_yaml(port, origin.port()), port);
    http_client c(port);
    c.set_timeout(60s);
    auto before = peak_rss_kib(px.pid());
    REQUIRE(before > 0);
    std::string big(64u << 20, 'u');
    auto up = c.request("PUT", "/plain/big", {{"x-fake-status", "204"}}, big);
    CHECK(up.status == 204);
    auto down = c.request("GET", "/plain/big", {{"x-fake-body-size", std::to_string(64u << 20)}, {"x-fake-chunked", "1"}});
    CHECK(down.body.size() == (64u << 20));
    auto after = peak_rss_kib(px.pid());
    MESSAGE("proxy peak RSS " << before << " KiB before, " << after << " KiB after 2 x 64 MiB");
    // Buffering either body would add 64 MiB; streaming adds a few relay buffers.
    CHECK(after - before < 16 * 1024);
    CHECK(origin.requests().back().method == "GET");
}
