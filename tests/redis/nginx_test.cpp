// The real legacy backend the proxy is built for: nginx WebDAV, started per test case.
#include <doctest/doctest.h>

#include <regex>
#include <sys/stat.h>

#include "tests/support/http_client.hpp"
#include "tests/support/nginx.hpp"

using namespace ifm::test;

TEST_SUITE("nginx") {

TEST_CASE("nginx webdav: PUT/GET/DELETE round trip and its mtime-size ETag") {
  nginx_webdav nginx;
  http_client c(nginx.port());
  CHECK(c.request("GET", "/dir/a.txt").status == 404);
  CHECK(c.request("PUT", "/dir/a.txt", {{"Content-Type", "text/plain"}}, "hello").status == 201);
  CHECK(c.request("PUT", "/dir/a.txt", {}, "world!!").status == 204);
  auto g = c.request("GET", "/dir/a.txt");
  CHECK(g.status == 200);
  CHECK(g.body == "world!!");

  auto tag = g.header("etag");
  std::smatch m;
  REQUIRE_MESSAGE(std::regex_match(tag, m, std::regex(R"re("([0-9a-f]+)-([0-9a-f]+)")re")), tag);
  struct stat st{};
  REQUIRE(::stat((nginx.root() + "/dir/a.txt").c_str(), &st) == 0);
  CHECK(std::stoull(m[1].str(), nullptr, 16) == static_cast<unsigned long long>(st.st_mtime));
  CHECK(std::stoull(m[2].str(), nullptr, 16) == 7);
  CHECK(c.request("HEAD", "/dir/a.txt").header("etag") == tag);

  CHECK(c.request("DELETE", "/dir/a.txt").status == 204);
  CHECK(c.request("GET", "/dir/a.txt").status == 404);
  CHECK(c.request("DELETE", "/dir/a.txt").status == 404);
  CHECK(c.connects() == 1);  // keep-alive throughout
}

TEST_CASE("nginx webdav: same-size writes within one second share an ETag (the lost-update trap)") {
  nginx_webdav nginx;
  http_client c(nginx.port());
  bool same_second = false;
  for (int attempt = 0; attempt < 5 && !same_second; ++attempt) {
    c.request("PUT", "/f", {}, "aaaa");
    auto first = c.request("GET", "/f");
    c.request("PUT", "/f", {}, "bbbb");
    auto second = c.request("GET", "/f");
    CHECK(second.body == "bbbb");
    if (first.header("last-modified") != second.header("last-modified")) continue;  // crossed a second
    same_second = true;
    CHECK(first.header("etag") == second.header("etag"));
  }
  CHECK(same_second);
  c.request("PUT", "/f", {}, "ccccc");
  CHECK(c.request("GET", "/f").header("etag").ends_with("-5\""));
}

TEST_CASE("nginx webdav: stop and start again on the same port and root") {
  nginx_webdav nginx;
  http_client c(nginx.port());
  CHECK(c.request("PUT", "/kept", {}, "x").status == 201);
  nginx.stop();
  CHECK_FALSE(nginx.running());
  CHECK_THROWS(c.request("GET", "/kept"));
  nginx.start();
  CHECK(c.request("GET", "/kept").body == "x");
}

}  // TEST_SUITE
