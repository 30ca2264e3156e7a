// A proxy's protocol duties (RFC 9110 §6.5, §7.6, §15.2; RFC 9112 §7.1), checked as raw bytes at
// both ends: what the client sends and receives, and what the origin receives.
#include "tests/support/http_client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_fixture.hpp"
#include "tests/support/raw_origin.hpp"
#include "tests/support/scripted_origin.hpp"

#include <doctest/doctest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

// A proxy whose only upstream is a scripted origin.
struct protocol_env {
    scripted_origin origin;
    proxy_fixture px{[this](ifm::config::config& c) { c.upstreams[0].port = origin.port(); }};
};

// Reads one complete response (Content-Length or chunked, as the origin's framing detector
// parses requests: it skips the start line the same way), or what came within 2 s.
std::string read_response(raw_connection& c) {
    std::string in;
    for (int i = 0; i < 200; ++i) {
        auto len = raw_request_length(in);
        if (len != 0 && len != std::string::npos) break;
        in += c.read_some(10ms);
    }
    return in;
}

std::string header_section(const std::string& response) {
    return response.substr(0, response.find("\r\n\r\n") + 2);
}

// An origin response whose trailer section arrives in the same read as its header.
const std::string trailered_response =
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Set-Cookie, ETag\r\n\r\n"
    "2\r\nok\r\n0\r\nSet-Cookie: sid=evil\r\nETag: \"trailer\"\r\n\r\n";

}  // namespace

TEST_CASE("an origin's trailer fields are dropped, never merged into the response header") {
    protocol_env env;
    // Untracked (streamed) and tracked (buffered and hashed) routes.
    for (const char* target : {"/plain/t", "/t"}) {
        INFO("target: " << target);
        env.origin.script(trailered_response);
        raw_connection c(env.px.port());
        c.send(std::string("GET ") + target + " HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n");
        auto r = read_response(c);
        REQUIRE(r.starts_with("HTTP/1.1 200 "));
        CHECK(r.find("sid=evil") == std::string::npos);
        CHECK(r.find("\"trailer\"") == std::string::npos);
        CHECK(header_section(r).find("Set-Cookie") == std::string::npos);
        CHECK(r.find("ok") != std::string::npos);
    }
}

TEST_CASE("a chunked request with a trailer is forwarded without it, not refused") {
    protocol_env env;
    raw_connection c(env.px.port());
    c.send("POST /plain/a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           "2\r\nab\r\n0\r\nX-Trailer: 1\r\nSet-Cookie: no\r\n\r\n");
    auto r = read_response(c);
    CHECK(r.starts_with("HTTP/1.1 200 "));
    auto seen = env.origin.received();
    CHECK(seen.find("X-Trailer") == std::string::npos);
    CHECK(seen.find("Set-Cookie") == std::string::npos);
    CHECK(seen.find("2\r\nab\r\n0\r\n\r\n") != std::string::npos);
    // The connection stays usable.
    c.send("GET /plain/b HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(read_response(c).starts_with("HTTP/1.1 200 "));
}

// Beast 1.81 inserts a field next to the fields of the same name, not at the end: a trailer
// field named like a header field lands inside the header (found by fuzz_request). Dropping "the
// fields after the header's count" then dropped the header's last field, its framing included.
TEST_CASE("a trailer field named like a header field is dropped, and only it (request and response)") {
    protocol_env env;
    raw_connection c(env.px.port());
    c.send("POST /plain/a HTTP/1.1\r\nHost: a\r\nX-A: header\r\nTransfer-Encoding: chunked\r\n\r\n"
           "2\r\nab\r\n0\r\nX-A: trailer\r\nHost: b\r\n\r\n");
    auto r = read_response(c);
    CHECK(r.starts_with("HTTP/1.1 200 "));
    auto seen = env.origin.received();
    INFO(seen);
    CHECK(seen.find("X-A: header\r\n") != std::string::npos);
    CHECK(seen.find("trailer") == std::string::npos);
    CHECK(seen.find("Host: b") == std::string::npos);
    CHECK(seen.find("Transfer-Encoding: chunked\r\n") != std::string::npos);
    CHECK(seen.find("2\r\nab\r\n0\r\n\r\n") != std::string::npos);

    for (const char* target : {"/plain/t", "/t"}) {
        INFO("target: " << target);
        env.origin.script("HTTP/1.1 200 OK\r\nSet-Cookie: sid=good\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "2\r\nok\r\n0\r\nSet-Cookie: sid=evil\r\n\r\n");
        raw_connection rc(env.px.port());
        rc.send(std::string("GET ") + target + " HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n");
        auto res = read_response(rc);
        REQUIRE(res.starts_with("HTTP/1.1 200 "));
        CHECK(res.find("sid=evil") == std::string::npos);
        CHECK(header_section(res).find("Set-Cookie: sid=good\r\n") != std::string::npos);
        CHECK(res.find("ok") != std::string::npos);
    }
}

TEST_CASE("1xx interim responses reach an HTTP/1.1 client before the final one; not an HTTP/1.0 one") {
    protocol_env env;
    const std::string hints = "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n";
    const std::string final_response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    SUBCASE("103 Early Hints to HTTP/1.1") {
        env.origin.script(hints + final_response);
        raw_connection c(env.px.port());
        c.send("GET /plain/h HTTP/1.1\r\nHost: a\r\n\r\n");
        std::string in;
        for (int i = 0; i < 200 && in.find("\r\n\r\nok") == std::string::npos; ++i) in += c.read_some(10ms);
        REQUIRE(in.starts_with("HTTP/1.1 103 Early Hints\r\n"));
        auto interim = in.substr(0, in.find("\r\n\r\n") + 4);
        CHECK(interim.find("Link: </s.css>; rel=preload\r\n") != std::string::npos);
        CHECK(in.substr(interim.size()).starts_with("HTTP/1.1 200 OK\r\n"));
    }
    SUBCASE("100 Continue the origin sends on its own, to HTTP/1.1") {
        env.origin.script("HTTP/1.1 100 Continue\r\n\r\n" + final_response);
        raw_connection c(env.px.port());
        c.send("POST /plain/h HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab");
        std::string in;
        for (int i = 0; i < 200 && in.find("\r\n\r\nok") == std::string::npos; ++i) in += c.read_some(10ms);
        CHECK(in.starts_with("HTTP/1.1 100 Continue\r\n"));
        CHECK(in.find("HTTP/1.1 200 OK\r\n") != std::string::npos);
    }
    SUBCASE("dropped for HTTP/1.0") {
        env.origin.script(hints + final_response);
        raw_connection c(env.px.port());
        c.send("GET /plain/h HTTP/1.0\r\nHost: a\r\n\r\n");
        auto in = c.read_until_closed(2s);
        CHECK(in.starts_with("HTTP/1.1 200 OK\r\n"));
        CHECK(in.find("103") == std::string::npos);
    }
}

// RFC 9112 §6.1: chunked is HTTP/1.1 framing. A response with no length (here chunked from the
// origin) goes to an HTTP/1.0 client close-delimited. The request is forwarded
// as HTTP/1.1, so the choice must follow the client's version, not the forwarded one's.
TEST_CASE("an HTTP/1.0 client gets a response without a length close-delimited, never chunked") {
    protocol_env env;
    for (const char* target : {"/plain/t", "/t"}) {
        INFO("target: " << target);
        {
            env.origin.script("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
            raw_connection c(env.px.port());
            c.send(std::string("GET ") + target + " HTTP/1.0\r\nHost: a\r\n\r\n");
            auto r = c.read_until_closed(3s);
            REQUIRE(r.starts_with("HTTP/1.1 200 "));
            auto head = header_section(r);
            CHECK(head.find("chunked") == std::string::npos);
            auto body = r.substr(r.find("\r\n\r\n") + 4);
            CHECK(body == "ok");
        }
    }
}

TEST_CASE("OPTIONS * is forwarded in asterisk-form; * with another method is refused") {
    protocol_env env;
    raw_connection c(env.px.port());
    c.send("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(read_response(c).starts_with("HTTP/1.1 200 "));
    CHECK(env.origin.received().starts_with("OPTIONS * HTTP/1.1\r\n"));
    raw_connection d(env.px.port());
    d.send("GET * HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(read_response(d).starts_with("HTTP/1.1 400 "));
    CHECK(env.origin.requests() == 1);
}

TEST_CASE("Max-Forwards on OPTIONS and TRACE: 0 is answered by the proxy, else decremented") {
    protocol_env env;
    SUBCASE("OPTIONS with 0") {
        raw_connection c(env.px.port());
        c.send("OPTIONS /plain/x HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n");
        auto r = read_response(c);
        CHECK(r.starts_with("HTTP/1.1 200 "));
        CHECK(r.find("Content-Length: 0\r\n") != std::string::npos);
        CHECK(env.origin.requests() == 0);
    }
    SUBCASE("TRACE with 0 reflects the request, without credentials") {
        raw_connection c(env.px.port());
        c.send("TRACE /plain/x HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\nX-Probe: 7\r\n"
               "Cookie: secret=1\r\nAuthorization: Basic c2VjcmV0\r\n\r\n");
        auto r = read_response(c);
        CHECK(r.starts_with("HTTP/1.1 200 "));
        CHECK(r.find("Content-Type: message/http\r\n") != std::string::npos);
        auto body = r.substr(r.find("\r\n\r\n") + 4);
        CHECK(body.starts_with("TRACE /plain/x HTTP/1.1\r\n"));
        CHECK(body.find("X-Probe: 7\r\n") != std::string::npos);
        CHECK(body.find("secret") == std::string::npos);
        CHECK(body.find("c2VjcmV0") == std::string::npos);
        CHECK(env.origin.requests() == 0);
    }
    SUBCASE("OPTIONS with 3 goes on with 2; GET's is left alone") {
        raw_connection c(env.px.port());
        c.send("OPTIONS /plain/x HTTP/1.1\r\nHost: a\r\nMax-Forwards: 3\r\n\r\n");
        CHECK(read_response(c).starts_with("HTTP/1.1 200 "));
        c.send("GET /plain/y HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n");
        CHECK(read_response(c).starts_with("HTTP/1.1 200 "));
        auto seen = env.origin.received();
        CHECK(seen.find("Max-Forwards: 2\r\n") != std::string::npos);
        CHECK(seen.find("Max-Forwards: 0\r\n") != std::string::npos);
        CHECK(env.origin.requests() == 2);
    }
}

namespace {

const std::string ws_handshake =
    "GET /plain/ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const std::string switching =
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

}  // namespace

TEST_CASE("a WebSocket through the proxy: a real client and echo server (python3-websockets)") {
    temp_dir dir;
    const std::string script = IFM_SOURCE_DIR "/tests/support/ws_echo.py";
    auto origin_port = free_port();
    child_process server({"/usr/bin/python3", script, "serve", std::to_string(origin_port)}, dir.path() + "/server.log");
    REQUIRE(wait_for_port(origin_port, 5s));
    proxy_fixture px([&](ifm::config::config& c) { c.upstreams[0].port = origin_port; });
    auto base = "ws://127.0.0.1:" + std::to_string(px.port());
    // An untracked route and a tracked one (a tracked GET is never tracked when it upgrades).
    child_process client({"/usr/bin/python3", script, "client", base + "/plain/ws", base + "/ws"}, dir.path() + "/client.log");
    CHECK(client.wait(20s) == 0);
}

TEST_CASE("an upgraded connection is relayed byte for byte, both ways, and closed when idle") {
    scripted_origin origin;
    proxy_fixture px([&](ifm::config::config& c) {
        c.upstreams[0].port = origin.port();
        c.limits.tunnel_idle_timeout = std::chrono::milliseconds(300);
    });
    origin.script(switching + "\x81\x02hi");   // a frame right behind the 101
    raw_connection c(px.port());
    c.send(ws_handshake);
    std::string in;
    for (int i = 0; i < 200 && in.find("\x81\x02hi") == std::string::npos; ++i) in += c.read_some(10ms);
    REQUIRE(in.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    CHECK(in.find("Upgrade: websocket\r\n") != std::string::npos);
    CHECK(in.find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != std::string::npos);
    CHECK(in.ends_with("\r\n\r\n\x81\x02hi"));
    auto seen = origin.received();
    CHECK(seen.find("Upgrade: websocket\r\n") != std::string::npos);
    CHECK(seen.find("Connection: upgrade\r\n") != std::string::npos);
    // Client bytes that are not HTTP reach the origin untouched.
    const std::string frame("\x82\x04\x00\r\n\xff", 6);
    c.send(frame);
    for (int i = 0; i < 200 && origin.received().find(frame) == std::string::npos; ++i)
        std::this_thread::sleep_for(10ms);
    CHECK(origin.received().ends_with(frame));
    CHECK(origin.requests() == 1);
    // No byte either way: the tunnel is closed after tunnel_idle_timeout.
    CHECK(c.closed_by_peer(5s));
}

TEST_CASE("without an Upgrade asked for, a 101 is a bad origin response; a refused upgrade stays HTTP") {
    scripted_origin origin;
    proxy_fixture px([&](ifm::config::config& c) { c.upstreams[0].port = origin.port(); });
    SUBCASE("101 to a plain GET: 502, nothing tunnelled") {
        origin.script(switching + "TUNNELLED");
        raw_connection c(px.port());
        c.send("GET /plain/x HTTP/1.1\r\nHost: a\r\n\r\n");
        auto r = read_response(c);
        CHECK(r.starts_with("HTTP/1.1 502 "));
        CHECK(r.find("TUNNELLED") == std::string::npos);
    }
    SUBCASE("the origin answers the handshake 200: the connection goes on as HTTP") {
        origin.script("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno");
        raw_connection c(px.port());
        c.send(ws_handshake);
        auto r = read_response(c);
        CHECK(r.starts_with("HTTP/1.1 200 OK\r\n"));
        CHECK(r.find("Upgrade") == std::string::npos);
        c.send("GET /plain/y HTTP/1.1\r\nHost: a\r\n\r\n");
        auto next = read_response(c);
        CHECK(next.starts_with("HTTP/1.1 200 OK\r\n"));
        CHECK(next.ends_with("fine"));
        CHECK(origin.requests() == 2);
    }
}

TEST_CASE("X-Forwarded-* and Forwarded: kept and extended from a trusted proxy, replaced from others") {
    const std::vector<std::pair<std::string, std::string>> spoofed = {
        {"X-Forwarded-For", "10.9.9.9"}, {"X-Forwarded-Proto", "https"},
        {"X-Forwarded-Host", "shop.example"}, {"Forwarded", "for=10.9.9.9;proto=https"}, {"Host", "inner.test"},
        {"x-fake-status", "200"}};
    SUBCASE("untrusted (the default): replaced") {
        proxy_fixture px;
        http_client c(px.port());
        CHECK(c.request("GET", "/plain/f", spoofed).status == 200);
        auto req = px.origin().requests().back();
        CHECK(req.header("x-forwarded-for") == "127.0.0.1");
        CHECK(req.header("x-forwarded-proto") == "http");
        CHECK(req.header("x-forwarded-host") == "inner.test");
        CHECK_FALSE(req.has_header("forwarded"));
    }
    SUBCASE("trusted x_forwarded: kept and extended") {
        proxy_fixture px([](ifm::config::config& c) { c.headers.trusted_proxies = {"10.0.0.0/8", "127.0.0.0/8"}; });
        http_client c(px.port());
        CHECK(c.request("GET", "/plain/f", spoofed).status == 200);
        auto req = px.origin().requests().back();
        CHECK(req.header("x-forwarded-for") == "10.9.9.9, 127.0.0.1");
        CHECK(req.header("x-forwarded-proto") == "https");
        CHECK(req.header("x-forwarded-host") == "shop.example");
        CHECK(req.header("forwarded") == "for=10.9.9.9;proto=https");
    }
    SUBCASE("trusted Forwarded style: extended") {
        proxy_fixture px([](ifm::config::config& c) {
            c.headers.trusted_proxies = {"127.0.0.1"};
            c.headers.forwarded = ifm::config::forwarded_style::forwarded;
        });
        http_client c(px.port());
        CHECK(c.request("GET", "/plain/f", spoofed).status == 200);
        auto req = px.origin().requests().back();
        CHECK(req.header("forwarded") == "for=10.9.9.9;proto=https, for=127.0.0.1;proto=http;host=inner.test");
    }
    SUBCASE("a network that does not hold the peer is not trusted") {
        proxy_fixture px([](ifm::config::config& c) { c.headers.trusted_proxies = {"10.0.0.0/8", "::1/128"}; });
        http_client c(px.port());
        CHECK(c.request("GET", "/plain/f", spoofed).status == 200);
        CHECK(px.origin().requests().back().header("x-forwarded-proto") == "http");
    }
}

// request_timeout starts late (client_session::read_origin_header: only for a response header
// not in within a tick or two of worker::watch_delay) and then covers the body as before.
TEST_CASE("request_timeout: a body that stalls after its header cuts the client off; the origin connection is not reused") {
    scripted_origin origin;
    proxy_fixture px{[&](ifm::config::config& c) {
        c.upstreams[0].port = origin.port();
        c.upstreams[0].request_timeout = 300ms;
    }};
    // 10 of the 100 body bytes, then nothing: the scripted origin waits for a next request.
    origin.script("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    raw_connection c(px.port());
    auto start = std::chrono::steady_clock::now();
    c.send("GET /plain/stall HTTP/1.1\r\nHost: a\r\n\r\n");
    auto got = c.read_until_closed(3s);
    auto elapsed = std::chrono::steady_clock::now() - start;
    CHECK(got.starts_with("HTTP/1.1 200"));
    CHECK(got.size() < got.find("\r\n\r\n") + 4 + 100);   // never the whole body
    CHECK(elapsed >= 250ms);
    CHECK(elapsed < 2s);   // closed at the deadline, not left hanging
    // The next request is served on a new origin connection: the stalled one was dropped.
    http_client next(px.port());
    CHECK(next.request("GET", "/plain/after").status == 200);
    CHECK(origin.connections() == 2);
}

TEST_CASE("request_timeout shorter than the late start's two ticks: a silent origin still gets 504, on time") {
    proxy_fixture px([](ifm::config::config& c) { c.upstreams[0].request_timeout = 10ms; });
    http_client c(px.port());
    auto start = std::chrono::steady_clock::now();
    CHECK(c.request("GET", "/plain/slow", {{"x-fake-delay-ms", "1500"}}).status == 504);
    CHECK(std::chrono::steady_clock::now() - start < 500ms);   // 10 ms, plus at most two 20 ms ticks
    CHECK(c.request("GET", "/plain/fast", {{"x-fake-status", "200"}}).status == 200);
}

// A whole small response goes out in one sendmsg(2) that never blocks (tcp_or_tls_stream::send_now);
// what the socket does not take is written asynchronously from where it stopped. Pipelined
// requests whose responses the client does not read fill its socket, so later sends are partial.
TEST_CASE("whole responses to a client that reads late arrive intact and in order, the partly sent ones too") {
    proxy_fixture px;
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    int small = 4096;   // before connect: the window the proxy sees stays small
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(px.port());
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    const int requests = 700;
    const std::size_t size = 8000;   // header and body come from the origin in one read: sent whole
    std::string req;
    for (int i = 0; i < requests; ++i)
        req += "GET /plain/p" + std::to_string(i) + " HTTP/1.1\r\nHost: a\r\nx-fake-body-size: " + std::to_string(size) +
               "\r\n\r\n";
    REQUIRE(::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
    std::this_thread::sleep_for(500ms);   // the proxy fills what the socket takes, then waits
    timeval tv{3, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string in;
    char buf[2048];
    int complete = 0;
    std::size_t pos = 0;
    std::string expected(size, '\0');   // the fake origin's body pattern (fake_body)
    for (std::size_t i = 0; i < size; ++i) expected[i] = static_cast<char>('a' + (i * 7 + i / 26) % 26);
    while (complete < requests) {
        auto head_end = in.find("\r\n\r\n", pos);
        if (head_end != std::string::npos && in.size() >= head_end + 4 + size) {
            INFO("response " << complete);
            CHECK(std::string_view(in).substr(pos).starts_with("HTTP/1.1 200"));
            CHECK(std::string_view(in).substr(pos, head_end - pos).find("Content-Length: 8000") != std::string_view::npos);
            REQUIRE(in.compare(head_end + 4, size, expected) == 0);
            pos = head_end + 4 + size;
            ++complete;
            continue;
        }
        auto n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        in.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    CHECK(complete == requests);
    CHECK(in.size() == pos);   // nothing more than the responses
}

// The proxy's own responses are serialized by the proxy (client_session::send_whole), not Beast:
// the same bytes as Beast's serializer would write, the standard reason phrase included (header::reason()
// gives it when none was set).
TEST_CASE("the proxy's own responses: standard reason phrase, Content-Length of the body sent, none after a HEAD") {
    proxy_fixture px;
    {
        raw_connection c(px.port());
        c.send("GET /plain/x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n");
        auto r = c.read_until_closed(2s);
        REQUIRE(r.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        auto end = r.find("\r\n\r\n");
        REQUIRE(end != std::string::npos);
        auto cl = r.find("Content-Length: ");
        REQUIRE(cl < end);
        auto length = std::stoul(r.substr(cl + 16));
        CHECK(length > 0);
        CHECK(r.size() - (end + 4) == length);
        CHECK(r.find("\"status\":400") != std::string::npos);
        CHECK(r.find("application/problem+json") < end);
    }
    {
        raw_connection c(px.port());
        // Kept alive: a GET after the HEAD's answer is read as the next response, not as its body.
        c.send("HEAD /plain/x HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n"
               "GET /plain/y HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n");
        std::string r;
        for (int i = 0; i < 100 && r.find("\"status\":417") == std::string::npos; ++i) r += c.read_some(20ms);
        REQUIRE(r.starts_with("HTTP/1.1 417 Expectation Failed\r\n"));
        auto end = r.find("\r\n\r\n");
        REQUIRE(end != std::string::npos);
        CHECK(r.find("Content-Length: ") < end);
        CHECK(r.substr(end + 4).starts_with("HTTP/1.1 417 Expectation Failed\r\n"));   // no body after the HEAD's header
    }
    {
        raw_connection c(px.port());
        c.send("OPTIONS /plain/x HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n");
        auto r = c.read_some(2s);
        CHECK(r.starts_with("HTTP/1.1 200 OK\r\n"));
    }
}
