// Self-tests of the test harness: if these fail, no proxy test result means anything.
#include <doctest/doctest.h>

#include <thread>

#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/proxy_process.hpp"
#include "tests/support/raw_origin.hpp"

using namespace ifm::test;
using namespace std::chrono_literals;

TEST_SUITE("harness") {

TEST_CASE("fake origin: status, body size, etag and extra headers by request header") {
  fake_origin origin;
  http_client client(origin.port());
  auto r = client.request("GET", "/x", {{"x-fake-status", "418"}, {"x-fake-body-size", "1000"},
                                        {"x-fake-etag", "\"abc\""},
                                        {"x-fake-header", "X-One: 1"}, {"x-fake-header", "X-Two: two words"}});
  CHECK(r.status == 418);
  CHECK(r.body == fake_body(1000));
  CHECK(r.header("etag") == "\"abc\"");
  CHECK(r.header("x-one") == "1");
  CHECK(r.header("X-TWO") == "two words");
  CHECK(r.header("content-length") == "1000");
  CHECK_FALSE(r.has_header("x-three"));

  auto d = client.request("GET", "/x", {{"x-fake-status", "200"}});  // steered: store not consulted
  CHECK(d.status == 200);
  CHECK(d.body.empty());
}

TEST_CASE("fake origin: delay") {
  fake_origin origin;
  http_client client(origin.port());
  auto start = std::chrono::steady_clock::now();
  CHECK(client.request("GET", "/", {{"x-fake-delay-ms", "300"}}).status == 200);
  CHECK(std::chrono::steady_clock::now() - start >= 300ms);

  client.set_timeout(100ms);  // the client's own timeout fires first and throws
  CHECK_THROWS(client.request("GET", "/", {{"x-fake-delay-ms", "1000"}}));
  CHECK_FALSE(client.connected());
}

TEST_CASE("fake origin: chunked response") {
  fake_origin origin;
  http_client client(origin.port());
  auto r = client.request("GET", "/", {{"x-fake-body-size", "10000"}, {"x-fake-chunked", "1"}});
  CHECK(r.header("transfer-encoding") == "chunked");
  CHECK_FALSE(r.has_header("content-length"));
  CHECK(r.body == fake_body(10000));

  auto raw = raw_exchange(origin.port(), "GET / HTTP/1.1\r\nHost: x\r\nx-fake-body-size: 5000\r\n"
                                         "x-fake-chunked: 1\r\nConnection: close\r\n\r\n");
  CHECK(raw.find("\r\n1000\r\n") != std::string::npos);  // really split into 4 KiB chunks
  CHECK(raw.ends_with("\r\n0\r\n\r\n"));
}

TEST_CASE("fake origin: close modes") {
  fake_origin origin;
  SUBCASE("before: no response at all") {
    http_client client(origin.port());
    CHECK_THROWS(client.request("GET", "/", {{"x-fake-close", "before"}}));
    raw_connection c(origin.port());
    c.send("GET / HTTP/1.1\r\nHost: x\r\nx-fake-close: before\r\n\r\n");
    CHECK(c.closed_by_peer());
    CHECK(c.read_some().empty());
  }
  SUBCASE("mid: headers and half the body") {
    auto raw = raw_exchange(origin.port(), "GET / HTTP/1.1\r\nHost: x\r\nx-fake-body-size: 100\r\n"
                                           "x-fake-close: mid\r\n\r\n");
    auto body_at = raw.find("\r\n\r\n");
    REQUIRE(body_at != std::string::npos);
    CHECK(raw.find("Content-Length: 100\r\n") != std::string::npos);
    CHECK(raw.substr(body_at + 4) == fake_body(50));
    http_client client(origin.port());
    CHECK_THROWS(client.request("GET", "/", {{"x-fake-body-size", "100"}, {"x-fake-close", "mid"}}));
  }
  SUBCASE("after: full response with Connection: close") {
    http_client client(origin.port());
    auto r = client.request("GET", "/", {{"x-fake-close", "after"}, {"x-fake-body-size", "10"}});
    CHECK(r.status == 200);
    CHECK(r.header("connection") == "close");
    CHECK(r.body == fake_body(10));
    CHECK_FALSE(client.connected());
    CHECK(client.request("GET", "/", {{"x-fake-status", "204"}}).status == 204);  // reconnects
    CHECK(client.connects() == 2);
    CHECK(origin.connections_accepted() == 2);
  }
}

TEST_CASE("fake origin: echo of content-length and chunked request bodies") {
  fake_origin origin;
  http_client client(origin.port());
  auto r = client.request("POST", "/e", {{"x-fake-echo", "1"}}, "hello body");
  CHECK(r.body == "hello body");
  auto c = client.request("PUT", "/e", {{"x-fake-echo", "1"}, {"Transfer-Encoding", "chunked"}}, fake_body(20000));
  CHECK(c.body == fake_body(20000));
  auto reqs = origin.requests();
  REQUIRE(reqs.size() == 2);
  CHECK(reqs[1].header("transfer-encoding") == "chunked");
  CHECK(reqs[1].body == fake_body(20000));
}

TEST_CASE("fake origin: Expect: 100-continue") {
  fake_origin origin;
  raw_connection c(origin.port());
  c.send("PUT /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
  CHECK(c.read_some() == "HTTP/1.1 100 Continue\r\n\r\n");
  c.send("body");
  CHECK(c.read_some().starts_with("HTTP/1.1 201 Created\r\n"));
  CHECK(origin.get("/e") == "body");
}

TEST_CASE("fake origin: HEAD gets headers only") {
  fake_origin origin;
  http_client client(origin.port());
  auto r = client.request("HEAD", "/", {{"x-fake-body-size", "123"}});
  CHECK(r.status == 200);
  CHECK(r.header("content-length") == "123");
  CHECK(r.body.empty());
  CHECK(client.request("GET", "/", {{"x-fake-body-size", "3"}}).body == fake_body(3));  // framing intact
}

TEST_CASE("fake origin: key-value store") {
  fake_origin origin;
  http_client client(origin.port());
  CHECK(client.request("GET", "/doc").status == 404);
  CHECK(client.request("PUT", "/doc", {{"Content-Type", "text/plain"}}, "v1").status == 201);
  CHECK(client.request("PUT", "/doc", {{"Content-Type", "text/plain"}}, "v2").status == 204);
  auto g = client.request("GET", "/doc");
  CHECK(g.status == 200);
  CHECK(g.body == "v2");
  CHECK(g.header("content-type") == "text/plain");
  CHECK_FALSE(g.has_header("etag"));  // default: none
  CHECK_FALSE(g.has_header("last-modified"));
  auto h = client.request("HEAD", "/doc");
  CHECK(h.header("content-length") == "2");
  CHECK(h.body.empty());
  CHECK(client.request("PATCH", "/doc", {}, "+").status == 204);
  CHECK(origin.get("/doc") == "v2+");
  CHECK(client.request("POST", "/doc", {}, "x").status == 201);
  CHECK(origin.get("/doc") == "v2+");
  CHECK(client.request("DELETE", "/doc").status == 204);
  CHECK(client.request("DELETE", "/doc").status == 404);
  CHECK(client.request("GET", "/doc").status == 404);
  CHECK_FALSE(origin.get("/doc").has_value());

  origin.put("/direct", "behind the proxy's back");
  auto d = client.request("GET", "/direct");
  CHECK(d.body == "behind the proxy's back");
  CHECK(d.header("content-type") == "application/octet-stream");

  // A legacy backend ignores preconditions entirely.
  CHECK(client.request("PUT", "/direct", {{"If-Match", "\"nope\""}}, "x").status == 204);
  CHECK(client.request("PUT", "/new", {{"If-None-Match", "*"}}, "x").status == 201);
  CHECK(client.request("PUT", "/new", {{"If-None-Match", "*"}}, "y").status == 204);
}

TEST_CASE("fake origin: etag styles") {
  fake_origin origin;
  http_client client(origin.port());
  auto tag = [&] { return client.request("GET", "/r").header("etag"); };

  origin.set_etag_style(etag_style::strong);
  auto put = client.request("PUT", "/r", {}, "aaaa");
  auto t1 = tag();
  CHECK(put.header("etag") == t1);
  CHECK(t1 == origin.etag("/r"));
  CHECK(t1.front() == '"');
  client.request("PUT", "/r", {}, "bbbb");
  auto t2 = tag();
  CHECK(t2 != t1);

  origin.set_etag_on_write(false);
  CHECK_FALSE(client.request("PUT", "/r", {}, "cccc").has_header("etag"));
  origin.set_etag_on_write(true);

  origin.set_etag_style(etag_style::weak);
  CHECK(tag().starts_with("W/\""));

  origin.set_etag_style(etag_style::strong_sticky);
  auto s1 = tag();
  client.request("PUT", "/r", {}, "dddd");  // same size: same tag, like nginx within one second
  CHECK(tag() == s1);
  client.request("PUT", "/r", {}, "eeeee");
  CHECK(tag() != s1);
  CHECK(tag().ends_with("-5\""));

  origin.set_etag_style(etag_style::none);
  CHECK_FALSE(client.request("GET", "/r").has_header("etag"));

  origin.set_last_modified(true);
  auto lm = client.request("GET", "/r").header("last-modified");
  CHECK(lm.ends_with(" GMT"));
}

TEST_CASE("fake origin: kv delay holds a write back") {
  fake_origin origin(2);
  origin.set_kv_delay(500ms);
  std::thread slow([&] {
    http_client c(origin.port());
    c.request("PUT", "/slow", {}, "late");
  });
  REQUIRE(origin.wait_for_requests(1));
  CHECK_FALSE(origin.get("/slow").has_value());  // recorded, but not yet applied
  CHECK(origin.count("PUT") == 1);
  CHECK_FALSE(origin.wait_for_requests(2, 50ms));
  slow.join();
  CHECK(origin.get("/slow") == "late");
}

TEST_CASE("fake origin: recording and keep-alive reuse") {
  fake_origin origin;
  {
    http_client client(origin.port());
    client.request("PUT", "/a?q=1", {{"X-Custom", "Mixed Case Value"}}, "body");
    client.request("GET", "/a?q=1");
    client.request("GET", "/b");
    auto reqs = origin.requests();
    REQUIRE(reqs.size() == 3);
    CHECK(reqs[0].method == "PUT");
    CHECK(reqs[0].target == "/a?q=1");
    CHECK(reqs[0].header("x-custom") == "Mixed Case Value");
    CHECK(reqs[0].headers[0].first == "x-custom");  // names lower-cased, order kept
    CHECK(reqs[0].body == "body");
    CHECK(reqs[0].connection_id == reqs[1].connection_id);
    CHECK(reqs[1].connection_id == reqs[2].connection_id);
    CHECK(origin.count("GET") == 2);
    CHECK(origin.connections_accepted() == 1);
    CHECK(origin.open_connections() == 1);
    CHECK(client.connects() == 1);

    http_client other(origin.port());
    other.request("GET", "/c");
    CHECK(origin.requests().back().connection_id != reqs[0].connection_id);
    origin.clear();
    CHECK(origin.requests().empty());
  }
  for (int i = 0; i < 100 && origin.open_connections() > 0; ++i) std::this_thread::sleep_for(10ms);
  CHECK(origin.open_connections() == 0);
}

TEST_CASE("fake origin: several threads serve concurrent clients") {
  fake_origin origin(4);
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      http_client c(origin.port());
      for (int i = 0; i < 20; ++i)
        if (c.request("PUT", "/k" + std::to_string(t), {}, std::to_string(i)).status / 100 == 2) ++ok;
    });
  for (auto& t : threads) t.join();
  CHECK(ok == 160);
  CHECK(origin.count("PUT") == 160);
  CHECK(origin.get("/k3") == "19");
}

TEST_CASE("http client: reconnects transparently after the server closed an idle connection") {
  fake_origin origin;
  origin.set_idle_timeout(100ms);
  http_client client(origin.port());
  CHECK(client.request("GET", "/", {{"x-fake-status", "200"}}).status == 200);
  std::this_thread::sleep_for(300ms);
  CHECK(origin.open_connections() == 0);
  CHECK(client.request("GET", "/", {{"x-fake-status", "201"}}).status == 201);
  CHECK(client.connects() == 2);
  CHECK(origin.connections_accepted() == 2);
}

TEST_CASE("http client: a stopped server is an error, not a hang") {
  auto origin = std::make_unique<fake_origin>();
  http_client client(origin->port());
  CHECK(client.request("GET", "/", {{"x-fake-status", "200"}}).status == 200);
  CHECK(client.connected());
  origin->stop();  // closes the idle keep-alive connection
  for (int i = 0; i < 100 && client.connected(); ++i) std::this_thread::sleep_for(10ms);
  CHECK_FALSE(client.connected());
  CHECK_THROWS(client.request("GET", "/"));  // nobody listening any more
}

TEST_CASE("raw origin: framing detector") {
  CHECK(raw_request_length("GET / HTTP/1.1\r\nHost: x\r\n") == 0);
  CHECK(raw_request_length("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET") == 27);
  CHECK(raw_request_length("POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nab") == 0);
  CHECK(raw_request_length("POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nabcX") == 41);
  std::string chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n";
  CHECK(raw_request_length(chunked) == chunked.size());
  CHECK(raw_request_length(chunked.substr(0, chunked.size() - 1)) == 0);
  CHECK(raw_request_length("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n") == std::string_view::npos);
}

TEST_CASE("raw origin: counts pipelined requests and records bytes") {
  raw_origin origin;
  const std::string two = "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
                          "POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
  raw_connection c(origin.port());
  c.send(two);
  std::string got;
  for (int i = 0; i < 20 && got.size() < 2 * 40; ++i) got += c.read_some(200ms);
  CHECK(got == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
               "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  CHECK(origin.request_count() == 2);
  CHECK(origin.bytes_received() == two);

  http_client client(origin.port());
  auto r = client.request("PUT", "/3", {{"Transfer-Encoding", "chunked"}}, "chunky");
  CHECK(r.body == "ok");
  CHECK(origin.request_count() == 3);
  CHECK(origin.connections_accepted() == 2);
  CHECK(origin.bytes_per_connection().size() == 2);
  origin.clear();
  CHECK(origin.request_count() == 0);
  CHECK(origin.bytes_received().empty());
}

TEST_CASE("proxy process: a proxy that exits at once fails fast, with its log in the error") {
  const auto start = std::chrono::steady_clock::now();
  std::string what;
  try {
    proxy_process proxy("listen: [broken\n", free_port());
  } catch (const std::runtime_error& e) {
    what = e.what();
  }
  CHECK(what.find("log tail") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  CHECK(tail_lines("a\nb\nc\n", 2) == "b\nc\n");
  CHECK(tail_lines("a\nb", 5) == "a\nb");
}

}  // TEST_SUITE
