// https:// upstreams (upstreams.<name>.tls): the proxy binary in front of a real nginx TLS origin,
// with certificates made per test case by the openssl command line tool.
#include <doctest/doctest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/support/certificates.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_process.hpp"

using namespace ifm::test;

namespace {

// One upstream with `tls` (a YAML flow mapping), "/" tracked in hash mode, memory store.
std::string proxy_yaml(std::uint16_t port, std::uint16_t origin, const std::string& tls) {
    return "listen: 127.0.0.1:" + std::to_string(port) + "\n"
           "workers: 1\n"
           "upstreams:\n"
           "  files: { address: 127.0.0.1:" + std::to_string(origin) + ", connect_timeout: 2s, tls: " + tls + " }\n"
           "routes:\n"
           "  - { name: files, match: { path_prefix: / }, upstream: files, etag: hash }\n"
           "log: { level: info, access_log: false }\n";
}

bool exists(const nginx_webdav& nginx, const std::string& file) {
    return std::filesystem::exists(nginx.root() + file);
}

}  // namespace

TEST_SUITE("tls upstream") {

TEST_CASE("tls upstream: GET and a judged conditional PUT reach nginx over TLS, connections reused") {
    certificates certs;
    nginx_webdav nginx(certs.origin());
    // Plain HTTP to the TLS port is refused by nginx: the proxy really speaks TLS below.
    CHECK(http_client(nginx.port()).request("GET", "/").status == 400);
    auto port = free_port();
    // No server_name: the name verified is the address's host, 127.0.0.1 (an IP SAN).
    proxy_process px(proxy_yaml(port, nginx.port(), "{ enabled: true, ca_file: " + certs.path("ca.pem") + " }"), port);
    http_client c(port);
    CHECK(c.request("PUT", "/doc.txt", {}, "one").status == 201);
    auto g = c.request("GET", "/doc.txt");
    REQUIRE(g.status == 200);
    CHECK(g.body == "one");
    auto tag = g.header("etag");
    REQUIRE(!tag.empty());
    CHECK(c.request("PUT", "/doc.txt", {{"If-Match", tag}}, "two").status == 204);
    auto stale = c.request("PUT", "/doc.txt", {{"If-Match", tag}}, "three");
    CHECK(stale.status == 409);
    auto after = c.request("GET", "/doc.txt");
    CHECK(after.body == "two");
    CHECK(after.header("etag") != tag);

    // server_name: localhost verifies the DNS name instead (and is sent as SNI).
    auto port2 = free_port();
    proxy_process px2(proxy_yaml(port2, nginx.port(),
                                 "{ enabled: true, ca_file: " + certs.path("ca.pem") + ", server_name: localhost }"),
                      port2);
    CHECK(http_client(port2).request("GET", "/doc.txt").body == "two");
}

TEST_CASE("tls upstream: an origin certificate from an unknown CA is 502 and nothing is forwarded") {
    certificates certs;
    nginx_webdav nginx(certs.origin(/*rogue=*/true));
    auto port = free_port();
    proxy_process px(proxy_yaml(port, nginx.port(), "{ enabled: true, ca_file: " + certs.path("ca.pem") + " }"), port);
    auto r = http_client(port).request("PUT", "/secret.txt", {}, "data");
    CHECK(r.status == 502);
    CHECK(r.body.find("origin-unreachable") != std::string::npos);
    CHECK(r.body.find("TLS handshake") != std::string::npos);
    CHECK_FALSE(exists(nginx, "/secret.txt"));
    CHECK(px.log().find("certificate verify failed") != std::string::npos);
    CHECK(px.log().find("self-signed certificate") != std::string::npos);

    // verify: false accepts it (testing only).
    auto port2 = free_port();
    proxy_process px2(proxy_yaml(port2, nginx.port(), "{ enabled: true, verify: false }"), port2);
    CHECK(http_client(port2).request("PUT", "/secret.txt", {}, "data").status == 201);
    CHECK(exists(nginx, "/secret.txt"));
}

TEST_CASE("tls upstream: a server_name the certificate does not name is 502") {
    certificates certs;
    nginx_webdav nginx(certs.origin());
    auto port = free_port();
    proxy_process px(proxy_yaml(port, nginx.port(),
                                "{ enabled: true, ca_file: " + certs.path("ca.pem") + ", server_name: other.example }"),
                     port);
    auto r = http_client(port).request("PUT", "/x.txt", {}, "data");
    CHECK(r.status == 502);
    CHECK_FALSE(exists(nginx, "/x.txt"));
    CHECK(px.log().find("hostname mismatch") != std::string::npos);
}

TEST_CASE("tls upstream: a client certificate for an origin that requires one") {
    certificates certs;
    nginx_webdav nginx(certs.origin(false, /*client_ca=*/true));
    auto port = free_port();
    const std::string base = "enabled: true, ca_file: " + certs.path("ca.pem");
    {
        proxy_process px(proxy_yaml(port, nginx.port(), "{ " + base + " }"), port);
        // nginx completes the handshake and answers 400 "No required SSL certificate was sent".
        auto r = http_client(port).request("PUT", "/c.txt", {}, "data");
        CHECK((r.status == 400 || r.status == 502));
        CHECK_FALSE(exists(nginx, "/c.txt"));
    }
    auto port2 = free_port();
    proxy_process px2(proxy_yaml(port2, nginx.port(),
                                 "{ " + base + ", client_certificate: " + certs.path("client.pem") +
                                     ", client_key: " + certs.path("client.key") + " }"),
                      port2);
    http_client c(port2);
    CHECK(c.request("PUT", "/c.txt", {}, "data").status == 201);
    CHECK(c.request("GET", "/c.txt").status == 200);
}

TEST_CASE("tls upstream: a WebSocket tunnel to a wss origin (python3-websockets)") {
    certificates certs;
    const std::string script = IFM_SOURCE_DIR "/tests/support/ws_echo.py";
    auto origin_port = free_port();
    child_process server({"/usr/bin/python3", script, "serve", std::to_string(origin_port), certs.path("server.pem"),
                          certs.path("server.key")},
                         certs.path("ws_server.log"));
    REQUIRE(wait_for_port(origin_port, std::chrono::seconds(5)));
    auto port = free_port();
    proxy_process px("listen: 127.0.0.1:" + std::to_string(port) + "\n"
                     "upstreams:\n"
                     "  ws: { address: 127.0.0.1:" + std::to_string(origin_port) +
                         ", tls: { enabled: true, ca_file: " + certs.path("ca.pem") + ", server_name: localhost } }\n"
                     "routes:\n"
                     "  - { match: { path_prefix: / }, upstream: ws, track: false }\n",
                     port);
    child_process client({"/usr/bin/python3", script, "client", "ws://127.0.0.1:" + std::to_string(port) + "/ws"},
                         certs.path("ws_client.log"));
    auto status = client.wait(std::chrono::seconds(20));
    INFO(read_text_file(certs.path("ws_client.log")) << px.log());
    CHECK(status == 0);
}

TEST_CASE("tls upstream: a reload (SIGHUP) builds the TLS context again from the files") {
    certificates certs;
    nginx_webdav nginx(certs.origin());
    auto port = free_port();
    // Trusting the wrong CA first: the origin's certificate does not verify.
    proxy_process px(proxy_yaml(port, nginx.port(), "{ enabled: true, ca_file: " + certs.path("rogue.pem") + " }"), port);
    CHECK(http_client(port).request("GET", "/r.txt").status == 502);
    std::ofstream(px.config_path()) << proxy_yaml(port, nginx.port(),
                                                  "{ enabled: true, ca_file: " + certs.path("ca.pem") + " }");
    REQUIRE(::kill(px.pid(), SIGHUP) == 0);
    int status = 0;
    for (int i = 0; i < 100 && (status = http_client(port).request("GET", "/r.txt").status) == 502; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    INFO(px.log());
    CHECK(status == 404);   // reached nginx, which has no such file
}

TEST_CASE("tls upstream: a key that does not match its certificate stops the start") {
    certificates certs;
    auto port = free_port();
    auto out = proxy_process::run_once(proxy_yaml(port, 1, "{ enabled: true, client_certificate: " +
                                                               certs.path("client.pem") + ", client_key: " +
                                                               certs.path("server.key") + " }"),
                                       {});
    CHECK(out.status != 0);
    CHECK(out.log.find("upstreams.files.tls.client_key") != std::string::npos);
}

}  // TEST_SUITE
