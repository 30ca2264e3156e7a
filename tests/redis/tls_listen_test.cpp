// TLS on `listen` (listen_tls): the proxy binary serving https:// to real TLS clients (curl,
// Python's ssl module, python3-websockets) in front of real origins (nginx WebDAV, the
// in-process fake origin), with certificates made per test case by the openssl tool.
#include <doctest/doctest.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "tests/support/certificates.hpp"
#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_process.hpp"

using namespace ifm::test;

namespace {

struct command_result {
    int status;
    std::string out;
};

// Runs argv to completion (at most 20 s); stdout and stderr together.
command_result run_command(const temp_dir& dir, std::vector<std::string> argv) {
    static int n = 0;
    auto log = dir.path() + "/command" + std::to_string(++n) + ".log";
    child_process p(std::move(argv), log);
    int status = p.wait(std::chrono::seconds(20));
    return {status, read_text_file(log)};
}

// curl over https with the test CA file `ca`; an argument "=/path" is the proxy's URL for /path
// (https://localhost:PORT, localhost pinned to 127.0.0.1). Prints "<status> <connections
// opened>" after each transfer (-w).
command_result curl(const certificates& certs, const std::string& ca, std::uint16_t port,
                    std::vector<std::string> args) {
    const auto p = std::to_string(port);
    std::vector<std::string> argv{"curl", "-sS", "--http1.1", "--max-time", "10", "--cacert", certs.path(ca),
                                  "--resolve", "localhost:" + p + ":127.0.0.1", "-w", "\n%{http_code} %{num_connects}\n"};
    for (auto& a : args) argv.push_back(a.starts_with("=/") ? "https://localhost:" + p + a.substr(1) : a);
    return run_command(certs.dir, argv);
}

std::string tls_yaml(const certificates& certs, std::uint16_t port, std::uint16_t origin,
                     const std::string& cert = "server", std::string extra = "") {
    return "listen: 127.0.0.1:" + std::to_string(port) + "\n"
           "listen_tls: { certificate: " + certs.path(cert + ".pem") + ", key: " + certs.path(cert + ".key") + " }\n"
           "workers: 1\n"
           "upstreams:\n"
           "  files: { address: 127.0.0.1:" + std::to_string(origin) + " }\n"
           "routes:\n"
           "  - { name: files, match: { path_prefix: / }, upstream: files, etag: hash }\n"
           "log: { level: info, access_log: false }\n" + extra;
}

// Raw bytes in one TLS write (tests/support/tls_raw.py); what the server sent back.
command_result tls_raw(const certificates& certs, const std::string& ca, std::uint16_t port, const std::string& bytes,
                       double quiet_seconds = 2, std::size_t split = 0) {
    static int n = 0;
    auto file = certs.path("request" + std::to_string(++n));
    std::ofstream(file, std::ios::binary) << bytes;
    std::vector<std::string> argv{"/usr/bin/python3", IFM_SOURCE_DIR "/tests/support/tls_raw.py", certs.path(ca),
                                  std::to_string(port), file, std::to_string(quiet_seconds)};
    if (split > 0) argv.push_back(std::to_string(split));
    return run_command(certs.dir, argv);
}

std::size_t occurrences(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
}

}  // namespace

TEST_SUITE("tls listen") {

TEST_CASE("listen_tls: the conditional-write session over https (curl, nginx WebDAV), one connection reused") {
    certificates certs;
    nginx_webdav nginx;
    auto port = free_port();
    proxy_process px(tls_yaml(certs, port, nginx.port()), port);
    auto body = certs.path("body.txt"), two = certs.path("two.txt"), three = certs.path("three.txt");
    std::ofstream(body) << "one";
    std::ofstream(two) << "two";
    std::ofstream(three) << "three";
    auto put = curl(certs, "ca.pem", port, {"-T", body, "=/doc.txt"});
    INFO(put.out << px.log());
    CHECK(put.out.find("\n201 1") != std::string::npos);
    auto get = curl(certs, "ca.pem", port, {"-D", "-", "=/doc.txt"});
    auto at = get.out.find("ETag: ");
    if (at == std::string::npos) at = get.out.find("etag: ");
    REQUIRE(at != std::string::npos);
    auto tag = get.out.substr(at + 6, get.out.find('\r', at) - at - 6);
    // Two requests, one connection: a fresh If-Match is applied, the same tag again is stale.
    auto both = curl(certs, "ca.pem", port,
                     {"-H", "If-Match: " + tag, "-T", two, "=/doc.txt", "-T", three, "=/doc.txt"});
    INFO(both.out);
    CHECK(both.out.find("\n204 1\n") != std::string::npos);
    CHECK(both.out.find("\n409 0\n") != std::string::npos);   // 0: the connection was reused
    CHECK(both.out.find("application/problem+json") == std::string::npos);   // bodies only, no headers
    CHECK(both.out.find("\"status\":409") != std::string::npos);
    auto now = curl(certs, "ca.pem", port, {"=/doc.txt"});
    CHECK(now.out.starts_with("two\n200 1"));
    // A client that does not trust the certificate's issuer gets no response at all.
    auto untrusted = curl(certs, "rogue.pem", port, {"=/doc.txt"});
    CHECK(untrusted.status != 0);
    CHECK(untrusted.out.find("\n000 ") != std::string::npos);
}

TEST_CASE("listen_tls: pipelined requests in one TLS record are all answered, in order") {
    // OpenSSL decrypts the whole record: the second request sits in the TLS layer, not in the
    // socket, so waiting for the socket to become readable would hang until the idle timeout.
    certificates certs;
    fake_origin origin;
    origin.put("/a", "alpha");
    origin.put("/b", "bravo");
    auto port = free_port();
    proxy_process px(tls_yaml(certs, port, origin.port()), port);
    const std::string req = "GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n"
                            "GET /b HTTP/1.1\r\nHost: localhost\r\n\r\n"
                            "GET /a HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    auto start = std::chrono::steady_clock::now();
    auto r = tls_raw(certs, "ca.pem", port, req, 5);
    auto took = std::chrono::steady_clock::now() - start;
    INFO(r.out << px.log());
    CHECK(r.status == 0);
    CHECK(occurrences(r.out, "HTTP/1.1 200 OK") == 3);
    auto a = r.out.find("alpha"), b = r.out.find("bravo"), a2 = r.out.rfind("alpha");
    CHECK((a < b && b < a2 && a2 != std::string::npos));
    CHECK(took < std::chrono::seconds(4));   // closed by the server after the third, not by a timeout
}

TEST_CASE("listen_tls: a header and a body that arrive in several TLS records") {
    // The first record is read while the connection waits for a request; the rest of the header
    // (and the body) through TLS too, never from the socket underneath.
    certificates certs;
    fake_origin origin;
    auto port = free_port();
    proxy_process px(tls_yaml(certs, port, origin.port()), port);
    const std::string put = "PUT /split HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
                            "X-Filler: " + std::string(3000, 'f') + "\r\nConnection: close\r\n\r\nhello";
    for (std::size_t split : {std::size_t{10}, put.size() - 600, put.size() - 2}) {
        INFO("split at " << split);
        auto r = tls_raw(certs, "ca.pem", port, put, 3, split);
        INFO(r.out << px.log());
        CHECK(r.out.starts_with("HTTP/1.1 2"));
        CHECK(origin.get("/split") == std::optional<std::string>("hello"));
        origin.erase("/split");
    }
    // A header left unfinished gets its 408 over TLS once limits.header_timeout passes.
    auto port2 = free_port();
    proxy_process px2(tls_yaml(certs, port2, origin.port(), "server", "limits: { header_timeout: 1s }\n"), port2);
    auto r = tls_raw(certs, "ca.pem", port2, "GET /x HTTP/1.1\r\nHost: localhost\r\n", 4);
    INFO(r.out);
    CHECK(r.out.starts_with("HTTP/1.1 408 "));
}

TEST_CASE("listen_tls: X-Forwarded-Proto and Forwarded say https") {
    certificates certs;
    fake_origin origin;
    origin.put("/p", "x");
    auto port = free_port();
    proxy_process px(tls_yaml(certs, port, origin.port()), port);
    auto r = curl(certs, "ca.pem", port, {"=/p"});
    REQUIRE(r.out.find("\n200 1") != std::string::npos);
    auto reqs = origin.requests();
    REQUIRE(!reqs.empty());
    CHECK(reqs.back().header("X-Forwarded-Proto") == "https");

    auto port2 = free_port();
    proxy_process px2(tls_yaml(certs, port2, origin.port(), "server", "headers: { forwarded: forwarded }\n"), port2);
    curl(certs, "ca.pem", port2, {"=/p"});
    CHECK(origin.requests().back().header("Forwarded").find(";proto=https") != std::string::npos);
}

TEST_CASE("listen_tls: plain HTTP or a stalled handshake gets no HTTP answer and is counted") {
    certificates certs;
    fake_origin origin;
    auto port = free_port();
    auto admin = free_port();
    proxy_process px(tls_yaml(certs, port, origin.port(), "server",
                              "admin_listen: 127.0.0.1:" + std::to_string(admin) + "\n"
                              "limits: { header_timeout: 1s }\n"),
                     port);
    auto plain = raw_exchange(port, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", std::chrono::seconds(3));
    CHECK(plain.find("HTTP/1.1") == std::string::npos);
    CHECK(origin.requests().empty());
    // A connection that never starts its handshake is closed after header_timeout. (The start's
    // port probe, a connect and close without a byte, is not counted: 2, not 3.)
    raw_connection idle(port);
    auto start = std::chrono::steady_clock::now();
    CHECK(idle.closed_by_peer(std::chrono::seconds(5)));
    CHECK(std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(800));
    auto metrics = http_client(admin).request("GET", "/metrics").body;
    INFO(metrics);
    CHECK(metrics.find("ifmatch_tls_handshake_failures_total 2") != std::string::npos);
}

TEST_CASE("listen_tls: a reload (SIGHUP) serves the new certificate; a bad one is refused and the old kept") {
    certificates certs;
    fake_origin origin;
    origin.put("/r", "x");
    auto port = free_port();
    proxy_process px(tls_yaml(certs, port, origin.port(), "server"), port);
    CHECK(curl(certs, "ca.pem", port, {"=/r"}).out.find("\n200 1") != std::string::npos);
    CHECK(curl(certs, "rogue.pem", port, {"=/r"}).status != 0);

    // The rogue (self-signed) certificate instead: clients trusting it now connect.
    std::ofstream(px.config_path()) << tls_yaml(certs, port, origin.port(), "rogue");
    REQUIRE(::kill(px.pid(), SIGHUP) == 0);
    bool switched = false;
    for (int i = 0; i < 100 && !switched; ++i) {
        switched = curl(certs, "rogue.pem", port, {"=/r"}).out.find("\n200 1") != std::string::npos;
        if (!switched) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    INFO(px.log());
    CHECK(switched);
    CHECK(curl(certs, "ca.pem", port, {"=/r"}).status != 0);

    // A key that does not match: the reload is rejected, the rogue certificate still served.
    std::ofstream(px.config_path()) << "listen: 127.0.0.1:" + std::to_string(port) + "\nworkers: 1\n"
                                       "listen_tls: { certificate: " + certs.path("server.pem") +
                                       ", key: " + certs.path("rogue.key") + " }\n"
                                       "upstreams: { files: { address: 127.0.0.1:" + std::to_string(origin.port()) +
                                       " } }\n"
                                       "routes: [ { match: { path_prefix: / }, upstream: files } ]\n";
    REQUIRE(::kill(px.pid(), SIGHUP) == 0);
    bool rejected = false;
    for (int i = 0; i < 100 && !rejected; ++i) {
        rejected = px.log().find("listen_tls.key") != std::string::npos;
        if (!rejected) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    CHECK(rejected);
    CHECK(curl(certs, "rogue.pem", port, {"=/r"}).out.find("\n200 1") != std::string::npos);
}

TEST_CASE("listen_tls: a key that does not match its certificate stops the start") {
    certificates certs;
    auto port = free_port();
    auto out = proxy_process::run_once("listen: 127.0.0.1:" + std::to_string(port) + "\n"
                                       "listen_tls: { certificate: " + certs.path("server.pem") +
                                       ", key: " + certs.path("client.key") + " }\n"
                                       "upstreams: { files: { address: 127.0.0.1:1 } }\n"
                                       "routes: [ { match: { path_prefix: / }, upstream: files } ]\n",
                                       {});
    CHECK(out.status != 0);
    CHECK(out.log.find("listen_tls.key") != std::string::npos);
    CHECK(out.log.find("key values mismatch") != std::string::npos);
}

TEST_CASE("listen_tls: a WebSocket over wss:// through the proxy to a plain ws origin (python3-websockets)") {
    certificates certs;
    const std::string script = IFM_SOURCE_DIR "/tests/support/ws_echo.py";
    auto origin_port = free_port();
    child_process server({"/usr/bin/python3", script, "serve", std::to_string(origin_port)},
                         certs.path("ws_server.log"));
    REQUIRE(wait_for_port(origin_port, std::chrono::seconds(5)));
    auto port = free_port();
    proxy_process px("listen: 127.0.0.1:" + std::to_string(port) + "\n"
                     "listen_tls: { certificate: " + certs.path("server.pem") + ", key: " + certs.path("server.key") +
                     " }\n"
                     "upstreams: { ws: { address: 127.0.0.1:" + std::to_string(origin_port) + " } }\n"
                     "routes: [ { match: { path_prefix: / }, upstream: ws, track: false } ]\n",
                     port);
    ::setenv("WS_CA_FILE", certs.path("ca.pem").c_str(), 1);
    child_process client({"/usr/bin/python3", script, "client", "wss://127.0.0.1:" + std::to_string(port) + "/ws"},
                         certs.path("ws_client.log"));
    auto status = client.wait(std::chrono::seconds(20));
    ::unsetenv("WS_CA_FILE");
    INFO(read_text_file(certs.path("ws_client.log")) << px.log());
    CHECK(status == 0);
}

}  // TEST_SUITE
