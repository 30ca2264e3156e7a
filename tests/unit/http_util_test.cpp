#include "proxy/http_util.hpp"
#include "proxy/problem.hpp"
#include "proxy/access_log.hpp"
#include "proxy/hasher.hpp"

#include <boost/beast/http/write.hpp>
#include <doctest/doctest.h>

#include <sstream>

using namespace ifm::proxy;

TEST_CASE("Connection tokens are parsed case-insensitively with OWS and empty elements") {
    CHECK(connection_tokens("close") == std::vector<std::string>{"close"});
    CHECK(connection_tokens(" Keep-Alive ,, X-Foo\t,") == std::vector<std::string>{"keep-alive", "x-foo"});
    CHECK(connection_tokens("").empty());
}

TEST_CASE("hop-by-hop fields and fields named in Connection are removed") {
    header_fields f;
    f.set(http::field::connection, "X-Secret, keep-alive");
    f.insert(http::field::connection, "Upgrade-Insecure");
    f.set("X-Secret", "1");
    f.set("Upgrade-Insecure", "1");
    f.set(http::field::keep_alive, "timeout=5");
    f.set(http::field::transfer_encoding, "chunked");
    f.set(http::field::te, "trailers");
    f.set(http::field::upgrade, "h2c");
    f.set(http::field::proxy_authorization, "Basic x");
    f.set(http::field::trailer, "X");
    f.set("Proxy-Connection", "keep-alive");
    f.set("X-Kept", "yes");
    strip_hop_by_hop(f);
    CHECK(f.count("X-Secret") == 0);
    CHECK(f.count("Upgrade-Insecure") == 0);
    CHECK(f.count(http::field::connection) == 0);
    CHECK(f.count(http::field::keep_alive) == 0);
    CHECK(f.count(http::field::transfer_encoding) == 0);
    CHECK(f.count(http::field::te) == 0);
    CHECK(f.count(http::field::upgrade) == 0);
    CHECK(f.count(http::field::proxy_authorization) == 0);
    CHECK(f.count(http::field::trailer) == 0);
    CHECK(f.count("Proxy-Connection") == 0);
    CHECK(f["X-Kept"] == "yes");
}

TEST_CASE("X-Forwarded-For is appended to, joining repeated lines") {
    header_fields f;
    append_x_forwarded_for(f, "127.0.0.1");
    CHECK(f["X-Forwarded-For"] == "127.0.0.1");
    header_fields g;
    g.insert("X-Forwarded-For", "1.1.1.1");
    g.insert("X-Forwarded-For", "2.2.2.2");
    append_x_forwarded_for(g, "::1");
    CHECK(g.count("X-Forwarded-For") == 1);
    CHECK(g["X-Forwarded-For"] == "1.1.1.1, 2.2.2.2, ::1");
}

TEST_CASE("Forwarded quotes IPv6 nodes and appends to an existing value") {
    header_fields f;
    f.set(http::field::forwarded, "for=1.2.3.4");
    add_forwarding_headers(f, ifm::config::forwarded_style::forwarded, "::1", "h.test:8080", true);
    CHECK(f[http::field::forwarded] == "for=1.2.3.4, for=\"[::1]\";proto=http;host=\"h.test:8080\"");
    // From a peer that is not a trusted proxy the incoming value is replaced.
    add_forwarding_headers(f, ifm::config::forwarded_style::forwarded, "::1", "h", false);
    CHECK(f[http::field::forwarded] == "for=\"[::1]\";proto=http;host=h");
}

TEST_CASE("trailer fields are dropped, the header kept, also where Beast puts them among the header's") {
    // Beast inserts a field after the last one of its name: a trailer Set-Cookie lands before
    // the header's Transfer-Encoding, which "drop what follows the header's count" removed.
    auto header = [] {
        header_fields f;
        f.insert("Set-Cookie", "x=1");
        f.insert("A", "1");
        f.insert("Transfer-Encoding", "chunked");
        return f;
    };
    auto add_trailer = [](header_fields& f) {
        f.insert("Set-Cookie", "evil=1");
        f.insert("X-T", "2");
        f.insert("set-cookie", "evil=2");
    };
    auto check_header = [](const header_fields& f) {
        CHECK(field_count(f) == 3);
        CHECK(f.count("Set-Cookie") == 1);
        CHECK(f["Set-Cookie"] == "x=1");
        CHECK(f["Transfer-Encoding"] == "chunked");
        CHECK(f.count("X-T") == 0);
    };
    SUBCASE("by the trailer's field names") {
        auto f = header();
        add_trailer(f);
        drop_trailer_fields(f, {"Set-Cookie", "X-T", "set-cookie"});
        check_header(f);
    }
    SUBCASE("by a snapshot of the header") {
        auto f = header();
        header_snapshot snap;
        snap.drop_added(f);   // not taken: nothing to do
        CHECK(field_count(f) == 3);
        snap.take(f);
        add_trailer(f);
        snap.drop_added(f);
        check_header(f);
        CHECK_FALSE(snap.taken());
    }
}

TEST_CASE("Max-Forwards values and WebSocket handshakes") {
    request_header h;
    CHECK_FALSE(max_forwards_of(h));
    h.set(http::field::max_forwards, " 3 ");
    CHECK(max_forwards_of(h) == 3u);
    for (const char* bad : {"", "-1", "1,2", "0x1", "9999999999999999999999"}) {
        h.set(http::field::max_forwards, bad);
        CHECK_FALSE(max_forwards_of(h));
    }
    h.set(http::field::upgrade, "WebSocket");
    h.set(http::field::connection, "keep-alive, Upgrade");
    CHECK(is_websocket_upgrade(h));
    h.set(http::field::connection, "keep-alive");
    CHECK_FALSE(is_websocket_upgrade(h));
    h.set(http::field::connection, "upgrade");
    h.set(http::field::upgrade, "h2c");
    CHECK_FALSE(is_websocket_upgrade(h));
}

TEST_CASE("trusted proxy networks") {
    namespace ip = boost::asio::ip;
    auto n = ifm::config::parse_cidr("10.0.0.0/8");
    REQUIRE(n);
    CHECK(n->contains(ip::make_address("10.200.1.1")));
    CHECK_FALSE(n->contains(ip::make_address("11.0.0.1")));
    CHECK(n->contains(ip::make_address("::ffff:10.1.2.3")));   // dual-stack listener
    auto one = ifm::config::parse_cidr("::1");
    REQUIRE(one);
    CHECK(one->contains(ip::make_address("::1")));
    CHECK_FALSE(one->contains(ip::make_address("127.0.0.1")));
    for (const char* bad : {"10.0.0.0/33", "10.0.0/8", "host.example", "::1/129", "10.0.0.0/", "1.2.3.4/0008"})
        CHECK_FALSE(ifm::config::parse_cidr(bad));
}

TEST_CASE("Via is appended") {
    header_fields f;
    f.set(http::field::via, "1.0 fred");
    append_via(f, 11);
    CHECK(f[http::field::via] == "1.0 fred, 1.1 ifmatch-proxy");
}

TEST_CASE("request framing checks catch what Beast 1.81 lets through") {
    auto check = [](std::initializer_list<std::pair<const char*, const char*>> fields, unsigned version = 11) {
        request_header h;
        h.version(version);
        for (auto& [n, v] : fields) h.insert(n, v);
        return check_request_framing(h);
    };
    CHECK(check({{"Host", "a"}}).empty());
    CHECK(check({{"Host", "a"}, {"Transfer-Encoding", "chunked"}}).empty());
    CHECK(!check({{"Host", "a"}, {"Transfer-Encoding", "gzip"}, {"Content-Length", "3"}}).empty());
    CHECK(!check({{"Host", "a"}, {"Transfer-Encoding", "gzip, chunked"}}).empty());
    CHECK(!check({{"Host", "a"}, {"Transfer-Encoding", "chunked, identity"}}).empty());
    CHECK(!check({{"Host", "a"}, {"Transfer-Encoding", "xchunked"}}).empty());
    CHECK(!check({{"Transfer-Encoding", "chunked"}}, 10).empty());
    CHECK(!check({{"Host", "a"}, {"Content-Length", "3"}, {"Content-Length", "3"}}).empty());
    CHECK(!check({{"Host", "a"}, {"Content-Length", "3, 3"}}).empty());
    CHECK(!check({}).empty());                                   // HTTP/1.1 without Host
    CHECK(!check({{"Host", "a"}, {"Host", "b"}}).empty());
    CHECK(check({}, 10).empty());                                // HTTP/1.0 may omit Host
}

TEST_CASE("response framing: CL with TE and non-chunked codings are refused") {
    response_header h;
    h.insert(http::field::transfer_encoding, "chunked");
    CHECK(check_response_framing(h).empty());
    h.insert(http::field::content_length, "5");
    CHECK(!check_response_framing(h).empty());
    response_header g;
    g.insert(http::field::transfer_encoding, "gzip, chunked");
    CHECK(!check_response_framing(g).empty());
}

TEST_CASE("problem+json bodies escape and carry current_etag") {
    problem p{409, "stale-precondition", "Stale", "d\"x\n", "/a\x01", std::string("\"abc\""), 0};
    auto res = make_problem_response(p, 11, true, false);
    CHECK(res.result_int() == 409);
    CHECK(res[http::field::content_type] == "application/problem+json");
    CHECK(res[http::field::etag] == "\"abc\"");
    CHECK(res.body() == "{\"type\":\"urn:ifmatch-proxy:problem:stale-precondition\",\"title\":\"Stale\",\"status\":409,"
                        "\"detail\":\"d\\\"x\\n\",\"instance\":\"/a\\u0001\",\"current_etag\":\"\\\"abc\\\"\"}\n");
}

TEST_CASE("log lines escape control characters") {
    CHECK(escape_for_log("GET /a\r\nFAKE 200") == "GET /a\\x0d\\x0aFAKE 200");
    CHECK(escape_for_log("a\\b\"") == "a\\\\b\\x22");
}

TEST_CASE("hash validators are strong, stable and content-sensitive") {
    auto a = hash_etag("hello");
    CHECK(a.size() == 24);
    CHECK(a.front() == '"');
    CHECK(a.back() == '"');
    CHECK(a == hash_etag("hello"));
    CHECK(a != hash_etag("hellp"));
    body_hasher h;
    h.update("hel", 3);
    h.update("lo", 2);
    CHECK(h.finish() == a);
}

TEST_CASE("serialize_header writes what Beast's serializer writes, in one buffer") {
    request_message<http::empty_body> req{http::verb::get, "/a?b=1", 11};
    req.set(http::field::host, "example.test");
    req.insert("X-Two", "1");
    req.insert("X-Two", "2");
    std::string out = "prefix:";
    serialize_header(req.base(), out);
    CHECK(out == "prefix:GET /a?b=1 HTTP/1.1\r\nHost: example.test\r\nX-Two: 1\r\nX-Two: 2\r\n\r\n");
    std::ostringstream beast_out;
    beast_out << req.base();
    CHECK(out.substr(7) == beast_out.str());

    response_message<http::empty_body> res{http::status::precondition_failed, 10};
    res.set(http::field::content_length, "0");
    std::string r;
    serialize_header(res.base(), r);
    CHECK(r == "HTTP/1.0 412 Precondition Failed\r\nContent-Length: 0\r\n\r\n");
    res.result(599);
    res.reason("Odd");
    r.clear();
    serialize_header(res.base(), r);
    CHECK(r == "HTTP/1.0 599 Odd\r\nContent-Length: 0\r\n\r\n");
    request_message<http::empty_body> custom;
    custom.method_string("PROPFIND");
    custom.target("/");
    std::string c;
    serialize_header(custom.base(), c);
    CHECK(c == "PROPFIND / HTTP/1.1\r\n\r\n");
}

TEST_CASE("header field maps take their lines from the thread's pool, any size") {
    // A value past the pool's largest block, one per size class and one of each class boundary.
    header_fields f;
    for (std::size_t n : {0ul, 1ul, 31ul, 32ul, 33ul, 200ul, field_pool_largest - 60, field_pool_largest, 4000ul})
        f.insert("X-Size-" + std::to_string(n), std::string(n, 'v'));
    f.set("X-Size-200", std::string(300, 'w'));   // set: erase the old line, add a longer one
    CHECK(field_count(f) == 9);
    CHECK(f["X-Size-4000"] == std::string(4000, 'v'));
    CHECK(f["X-Size-200"] == std::string(300, 'w'));
    header_fields copy = f;
    f.clear();
    CHECK(copy["X-Size-31"] == std::string(31, 'v'));
#if !defined(__SANITIZE_ADDRESS__)
    // A freed block is the next one handed out of its class on this thread.
    void* a = field_pool_allocate(100);
    field_pool_deallocate(a, 100);
    void* b = field_pool_allocate(120);   // same 32-byte class as 100: 97..128
    CHECK(a == b);
    field_pool_deallocate(b, 120);
#endif
}
