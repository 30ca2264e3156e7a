// Upstream host names with the real resolver: the proxy binary runs in a private mount namespace
// (`unshare -m`) where a test-owned file is bind-mounted over /etc/hosts (and an nsswitch.conf
// saying `hosts: files`, so no DNS server is asked). glibc reads /etc/hosts on every lookup, so
// editing that file moves the name: absent at start (the proxy starts, 502), then added (200
// without a restart), then moved to 127.0.0.2 (followed after a failed connect).
#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_process.hpp"
#include "tests/support/workload.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <string>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

// In place (truncate and write), never by rename: the bind mount holds the file's inode.
void write_hosts(const std::string& path, const std::string& entries) {
  std::ofstream out(path, std::ios::trunc);
  out << "127.0.0.1 localhost\n" << entries;
}

std::string dns_yaml(std::uint16_t port, std::uint16_t origin) {
  return "listen: 127.0.0.1:" + std::to_string(port) + "\n"
         "workers: 1\n"   // one origin pool: what it resolved is what the next request uses
         "store: { kind: memory }\n"
         "upstreams:\n"
         "  origin: { address: origin.ifm-test:" + std::to_string(origin) + ", connect_timeout: 500ms }\n"
         "routes:\n"
         "  - match: { path_prefix: / }\n"
         "    upstream: origin\n"
         "log: { level: info, access_log: false }\n";
}

// GET /where on a fresh connection (so either worker may take it): status and body.
std::pair<int, std::string> where(std::uint16_t port) {
  http_client c(port);
  c.set_timeout(3s);
  auto r = c.request("GET", "/where");
  return {r.status, r.body};
}

}  // namespace

TEST_CASE("dns: a name that resolves only later is used without a restart; a moved name is followed after a failed connect") {
  temp_dir dir;
  const auto hosts = dir.path() + "/hosts", nsswitch = dir.path() + "/nsswitch.conf";
  write_hosts(hosts, "");
  std::ofstream(nsswitch) << "hosts: files\n";
  const std::string mounts = "mount --bind " + hosts + " /etc/hosts && mount --bind " + nsswitch + " /etc/nsswitch.conf";
  if (std::system(("unshare -m sh -c '" + mounts + "' >/dev/null 2>&1").c_str()) != 0) {
    MESSAGE("SKIPPED: `unshare -m` with bind mounts over /etc/hosts is not possible here (needs "
            "util-linux unshare and root with CAP_SYS_ADMIN, which a default container lacks); the DNS "
            "re-resolution test did not run");
    return;
  }

  fake_origin first;
  first.put("/where", "first");
  const auto origin_port = first.port();
  const auto port = free_port();
  proxy_process px(dns_yaml(port, origin_port), port, {},
                   {"unshare", "-m", "sh", "-c", mounts + " && exec \"$@\"", "sh"});
  INFO("proxy log:\n" << tail_lines(px.log()));

  // Absent: the proxy started anyway and answers 502.
  CHECK(px.log().find("cannot resolve 'origin.ifm-test' yet") != std::string::npos);
  CHECK(where(port).first == 502);
  CHECK(first.count("GET") == 0);

  // The name appears: served within seconds (each pool looks again at most once a second).
  write_hosts(hosts, "127.0.0.1 origin.ifm-test\n");
  CHECK(eventually([&] { return where(port) == std::pair<int, std::string>{200, "first"}; }, 5s));

  // The origin moves to 127.0.0.2 (same port: it is in the config); the old address refuses.
  fake_origin second("127.0.0.2", origin_port);
  second.put("/where", "second");
  first.stop();
  write_hosts(hosts, "127.0.0.2 origin.ifm-test\n");
  CHECK(eventually([&] { return where(port) == std::pair<int, std::string>{200, "second"}; }, 5s));
  for (int i = 0; i < 5; ++i) CHECK(where(port) == std::pair<int, std::string>{200, "second"});
  CHECK(second.count("GET") >= 6);
  CHECK(px.log().find("cannot resolve 'origin.ifm-test':") != std::string::npos);   // the retries said why
}
