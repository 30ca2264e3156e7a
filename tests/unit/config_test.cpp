// The YAML loader: values reach the structs, every error names its path and line, and
// docs/configuration.md lists exactly the keys the loader accepts.
#include "config/config.hpp"

#include <doctest/doctest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <regex>
#include <sstream>

namespace cfg = ifm::config;
using namespace std::chrono_literals;

namespace {

// Sets or clears environment variables for one test and restores them afterwards, so that a
// developer's shell cannot change the results.
class env_guard {
public:
    env_guard() {
        set("IFM_REDIS_URL", nullptr);
        set("IFM_REDIS_PASSWORD", nullptr);
    }
    ~env_guard() {
        for (auto& [name, value] : saved_) {
            if (value) setenv(name.c_str(), value->c_str(), 1);
            else unsetenv(name.c_str());
        }
    }
    void set(const std::string& name, const char* value) {
        if (!saved_.contains(name)) {
            const char* old = std::getenv(name.c_str());
            saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
        }
        if (value) setenv(name.c_str(), value, 1);
        else unsetenv(name.c_str());
    }

private:
    std::map<std::string, std::optional<std::string>> saved_;
};

std::string dump(const std::vector<cfg::error>& errors) {
    std::string out;
    for (auto& e : errors) out += e.format("test.yaml") + "\n";
    return out;
}

cfg::config load_ok(std::string_view yaml) {
    auto r = cfg::load_string(yaml);
    INFO((r ? std::string() : dump(r.error())));
    REQUIRE(r.has_value());
    return *r;
}

std::vector<cfg::error> load_errors(std::string_view yaml) {
    auto r = cfg::load_string(yaml);
    REQUIRE_FALSE(r.has_value());
    return r.error();
}

// The one error of a file that should have exactly one.
cfg::error only_error(std::string_view yaml) {
    auto errors = load_errors(yaml);
    INFO(dump(errors));
    REQUIRE(errors.size() == 1);
    return errors[0];
}

void check_error(const cfg::error& e, std::string_view path, int line, std::string_view message_part) {
    INFO(e.format("test.yaml"));
    CHECK(e.path == path);
    CHECK(e.line == line);
    CHECK(e.message.find(message_part) != std::string::npos);
}

constexpr std::string_view minimal = R"(upstreams:
  legacy: { address: 127.0.0.1:3000 }
routes:
  - upstream: legacy
)";

}  // namespace

TEST_CASE("config: a full file reaches the structs, unset keys keep their defaults") {
    env_guard env;
    auto c = load_ok(R"(listen: "[::1]:0"
admin_listen: 127.0.0.1:9901
workers: 3
store:
  kind: redis
  url: redis://app:p%40ss@redis.internal:6380/2
  key_prefix: ifm-test
  timeout: 250us
upstreams:
  legacy:
    address: 127.0.0.1:3000
    request_timeout: 5s
    max_idle_connections: 8
  files: { address: "[fd00::7]:8081", host_header: files.internal, connect_timeout: 2m }
routes:
  - match: { path_prefix: /api/, host: API.Example.com, methods: [GET, PUT] }
    upstream: legacy
    etag: auto
    methods: [PUT, DELETE]
    require_precondition: true
    enforce: report
    reject_status: 412
    write_lease: 7s
    on_busy: wait
    busy_wait: 1s
    revalidate_on_mismatch: true
    refresh_after_write: true
    vary: [Accept, X-Tenant]
    query: sorted
  - name: dav
    upstream: files
    track: false
    etag: origin
    query: ignore
limits:
  max_header_bytes: 32KiB
  max_body_bytes: 10kB
  max_hash_body: 1GiB
  max_requests_per_connection: 100
  drain_timeout: 0ms
headers: { forwarded: none, via: false }
on_store_error: fail_open
log: { level: debug, json: true, access_log: false }
)");
    CHECK(c.listen == cfg::endpoint{"::1", 0});
    REQUIRE(c.admin_listen);
    CHECK(*c.admin_listen == cfg::endpoint{"127.0.0.1", 9901});
    CHECK(c.workers == 3);

    CHECK(c.store.kind == cfg::store_kind::redis);
    CHECK(c.store.url == "redis://app:@redis.internal:6380/2");  // the password moved out
    CHECK(c.store.password == "p@ss");
    CHECK(c.store.key_prefix == "ifm-test");
    CHECK(c.store.timeout == 1ms);
    CHECK(c.store.connect_timeout == 1s);

    REQUIRE(c.upstreams.size() == 2);
    auto& legacy = c.upstreams[0];
    CHECK(legacy.name == "legacy");
    CHECK(legacy.host == "127.0.0.1");
    CHECK(legacy.port == 3000);
    CHECK(legacy.request_timeout == 5s);
    CHECK(legacy.connect_timeout == 1s);
    CHECK(legacy.max_connections == 256);
    CHECK(legacy.max_idle_connections == 8);
    CHECK(legacy.idle_timeout == 30s);
    CHECK(legacy.host_header.empty());
    auto* files = c.find_upstream("files");
    REQUIRE(files);
    CHECK(files->host == "fd00::7");
    CHECK(files->port == 8081);
    CHECK(files->host_header == "files.internal");
    CHECK(files->connect_timeout == 120s);
    CHECK(c.find_upstream("nope") == nullptr);

    REQUIRE(c.routes.size() == 2);
    auto& api = c.routes[0];
    CHECK(api.name == "route0");
    CHECK(api.match.path_prefix == "/api/");
    CHECK(api.match.host == "api.example.com");
    CHECK(api.match.methods == std::vector<std::string>{"GET", "PUT"});
    CHECK(api.upstream == "legacy");
    CHECK(api.track);
    CHECK(api.etag == cfg::etag_mode::auto_);
    CHECK(api.methods == std::vector<std::string>{"PUT", "DELETE"});
    CHECK(api.require_precondition);
    CHECK(api.enforce == cfg::enforce_mode::report);
    CHECK(api.reject_status == 412);
    CHECK(api.write_lease == 7s);
    CHECK(api.on_busy == cfg::busy_policy::wait);
    CHECK(api.busy_wait == 1s);
    CHECK(api.revalidate_on_mismatch);
    CHECK(api.refresh_after_write);
    CHECK(api.vary == std::vector<std::string>{"accept", "x-tenant"});
    CHECK(api.query == cfg::query_mode::sorted);
    auto& dav = c.routes[1];
    CHECK(dav.name == "dav");
    CHECK(dav.match.path_prefix == "/");
    CHECK(dav.match.host.empty());
    CHECK(dav.match.methods.empty());
    CHECK_FALSE(dav.track);
    CHECK(dav.etag == cfg::etag_mode::origin);
    CHECK(dav.methods == std::vector<std::string>{"PUT", "PATCH", "DELETE", "POST"});
    CHECK(dav.enforce == cfg::enforce_mode::on);
    CHECK(dav.reject_status == 409);
    CHECK(dav.write_lease == 15s);
    CHECK(dav.on_busy == cfg::busy_policy::reject);
    CHECK(dav.vary.empty());
    CHECK(dav.query == cfg::query_mode::ignore);

    CHECK(c.limits.max_header_bytes == 32 * 1024);
    CHECK(c.limits.max_body_bytes == 10'000);
    CHECK(c.limits.max_hash_body == 1024u * 1024 * 1024);
    CHECK(c.limits.max_target_bytes == 8 * 1024);
    CHECK(c.limits.idle_timeout == 60s);
    CHECK(c.limits.max_connections == 10000);
    CHECK(c.limits.max_requests_per_connection == 100);
    CHECK(c.limits.drain_timeout == 0ms);
    CHECK(c.headers.forwarded == cfg::forwarded_style::none);
    CHECK_FALSE(c.headers.via);
    CHECK(c.on_store_error == cfg::store_error_policy::fail_open);
    CHECK(c.log.level == "debug");
    CHECK(c.log.json);
    CHECK_FALSE(c.log.access_log);
}

TEST_CASE("config: a minimal file gets the documented defaults") {
    env_guard env;
    auto c = load_ok(minimal);
    CHECK(c.listen == cfg::endpoint{"0.0.0.0", 8080});
    CHECK_FALSE(c.admin_listen);
    CHECK(c.workers == 0);
    CHECK(c.store.kind == cfg::store_kind::memory);
    CHECK(c.store.url == "redis://127.0.0.1:6379/0");
    CHECK(c.store.password.empty());
    CHECK(c.store.timeout == 50ms);
    CHECK(c.routes.at(0).name == "route0");
    CHECK(c.routes.at(0).etag == cfg::etag_mode::hash);
    CHECK(c.headers.forwarded == cfg::forwarded_style::x_forwarded);
    CHECK(c.on_store_error == cfg::store_error_policy::fail_closed);
    CHECK(c.log.level == "info");
}

TEST_CASE("config: unknown keys, with a suggestion when one is close") {
    env_guard env;
    check_error(only_error(R"(upstreams:
  legacy: { address: 127.0.0.1:3000 }
routes:
  - upstream: legacy
    etga: hash
)"),
                "routes[0]", 5, "unknown key 'etga'; did you mean 'etag'?");

    auto e = only_error(std::string(minimal) + "colour: blue\n");
    check_error(e, "", 5, "unknown key 'colour'");
    CHECK(e.message.find("did you mean") == std::string::npos);
    CHECK(e.format("p.yaml") == "p.yaml:5: unknown key 'colour'");

    check_error(only_error(std::string(minimal) + "limits:\n  max_body_byte: 1MiB\n"), "limits", 6,
                "did you mean 'max_body_bytes'?");
    check_error(only_error(R"(upstreams:
  legacy: { address: 127.0.0.1:3000, request_timout: 5s }
routes:
  - upstream: legacy
)"),
                "upstreams.legacy", 2, "did you mean 'request_timeout'?");
}

TEST_CASE("config: bad values name the path, the line and what was expected") {
    env_guard env;
    auto base = std::string(minimal);

    auto e = only_error(base + "    etag: sha256\n");
    check_error(e, "routes[0].etag", 5, "expected one of origin|hash|auto");
    CHECK(e.message == "expected one of origin|hash|auto");
    CHECK(e.format("proxy.yaml") == "proxy.yaml:5: routes[0].etag: expected one of origin|hash|auto");

    check_error(only_error(base + "    reject_status: 404\n"), "routes[0].reject_status", 5, "expected one of 409|412");
    check_error(only_error(base + "    track: yes\n"), "routes[0].track", 5, "expected one of true|false");
    check_error(only_error(base + "    methods: [put]\n"), "routes[0].methods[0]", 5, "upper-case HTTP method");
    check_error(only_error(base + "    methods: [PUT, GET]\n"), "routes[0].methods[1]", 5, "GET is a safe method");
    check_error(only_error(base + "    methods: PUT\n"), "routes[0].methods", 5, "expected a list");
    check_error(only_error(base + "    vary: [Accept, accept]\n"), "routes[0].vary[1]", 5, "duplicate 'accept'");
    check_error(only_error(base + "    match: { path_prefix: api }\n"), "routes[0].match.path_prefix", 5,
                "starting with /");
    check_error(only_error(base + "on_store_error: closed\n"), "on_store_error", 5,
                "expected one of fail_closed|fail_open");
    check_error(only_error(base + "store: { kind: etcd }\n"), "store.kind", 5, "expected one of redis|memory");
    check_error(only_error(base + "store: { key_prefix: \"a{b}\" }\n"), "store.key_prefix", 5, "1 to 64 characters");
    check_error(only_error(base + "log: { level: verbose }\n"), "log.level", 5,
                "expected one of trace|debug|info|warn|error|critical|off");
    check_error(only_error(base + "headers: { forwarded: rfc7239 }\n"), "headers.forwarded", 5,
                "expected one of x_forwarded|forwarded|none");
    check_error(only_error(base + "workers: 257\n"), "workers", 5, "expected an integer from 0 to 256");
    check_error(only_error(base + "headers: { trusted_proxies: [10.0.0.0/8, 10.0.0.0/33] }\n"),
                "headers.trusted_proxies[1]", 5, "expected an IP network like 10.0.0.0/8");
    check_error(only_error(base + "    track: false\n    require_precondition: true\n"), "routes[0].require_precondition",
                6, "has no effect when track is false");
    check_error(only_error(base + "    enforce: warn\n"), "routes[0].enforce", 5, "expected one of off|report|on");
    check_error(only_error(base + "    track: false\n    enforce: report\n"), "routes[0].enforce", 6,
                "has no effect when track is false");
    check_error(only_error(R"(upstreams:
  legacy: { address: 127.0.0.1:3000, max_connections: 4, max_idle_connections: 8 }
routes:
  - upstream: legacy
)"),
                "upstreams.legacy.max_idle_connections", 2, "must not exceed max_connections (4)");
    check_error(only_error(base + "limits: [1]\n"), "limits", 5, "expected a mapping, got a list");

    // Durations: a unit is required, and the message says what is expected.
    check_error(only_error(R"(upstreams:
  legacy:
    address: 127.0.0.1:3000
    request_timeout: 10
routes:
  - upstream: legacy
)"),
                "upstreams.legacy.request_timeout", 4, "expected a duration like 50ms or 15s");
    check_error(only_error(base + "store: { timeout: 0ms }\n"), "store.timeout", 5, "must be at least 1ms");
    check_error(only_error(base + "limits: { idle_timeout: 25h }\n"), "limits.idle_timeout", 5, "must be at most 24h");

    // Sizes.
    check_error(only_error(base + "limits:\n  max_body_bytes: 8 MiB\n"), "limits.max_body_bytes", 6,
                "expected a size like 512, 16KiB or 8MiB");
    check_error(only_error(base + "limits:\n  max_header_bytes: 512\n"), "limits.max_header_bytes", 6,
                "must be between 1KiB and 1MiB");

    // Endpoints: port 0 is fine where the proxy listens, not where it connects.
    check_error(only_error(base + "listen: localhost\n"), "listen", 5, "expected host:port");
    check_error(only_error(base + "admin_listen: 127.0.0.1:99999\n"), "admin_listen", 5, "expected host:port");
    check_error(only_error(R"(upstreams:
  legacy: { address: 127.0.0.1:0 }
routes:
  - upstream: legacy
)"),
                "upstreams.legacy.address", 2, "port must be between 1 and 65535");
    CHECK(load_ok(base + "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n").listen.port == 0);
    check_error(only_error(base + "listen: 127.0.0.1:8080\nadmin_listen: 127.0.0.1:8080\n"), "admin_listen", 6,
                "must differ from listen");
}

TEST_CASE("config: missing and unknown upstreams") {
    env_guard env;
    // A route without an upstream: reported at the route's first line.
    check_error(only_error(R"(upstreams:
  legacy: { address: 127.0.0.1:3000 }
routes:
  - upstream: legacy
  - match: { path_prefix: /b/ }
    etag: origin
)"),
                "routes[1].upstream", 5, "required key missing");

    // An upstream without an address.
    check_error(only_error(R"(upstreams:
  legacy:
    request_timeout: 5s
routes:
  - upstream: legacy
)"),
                "upstreams.legacy.address", 2, "required key missing");

    // A reference to an upstream that does not exist.
    check_error(only_error(R"(upstreams:
  legacy: { address: 127.0.0.1:3000 }
routes:
  - upstream: legacy
  - upstream: legacyy
)"),
                "routes[1].upstream", 5, "unknown upstream 'legacyy'; did you mean 'legacy'?");

    // No upstreams and no routes at all.
    auto errors = load_errors("listen: 127.0.0.1:8080\n");
    INFO(dump(errors));
    REQUIRE(errors.size() == 2);
    check_error(errors[0], "upstreams", 1, "at least one upstream");
    check_error(errors[1], "routes", 1, "at least one route");
    check_error(only_error(R"(upstreams:
  legacy: { address: 127.0.0.1:3000 }
routes: []
)"),
                "routes", 3, "at least one route is required");
}

TEST_CASE("config: listen_tls needs a readable certificate and key, each reported with its line") {
    env_guard env;
    const std::string readable = std::string(IFM_SOURCE_DIR) + "/README.md";
    auto c = load_ok("listen: 0.0.0.0:8443\nlisten_tls: { certificate: " + readable + ", key: " + readable +
                     " }\nupstreams: { app: { address: 127.0.0.1:3000 } }\nroutes: [ { upstream: app } ]\n");
    CHECK(c.listen_tls.enabled());
    CHECK(c.listen_tls.certificate == readable);
    CHECK(c.listen_tls.key == readable);
    CHECK_FALSE(load_ok(minimal).listen_tls.enabled());
    check_error(only_error("listen_tls:\n  certificate: " + readable +
                           "\nupstreams: { app: { address: 127.0.0.1:3000 } }\nroutes: [ { upstream: app } ]\n"),
                "listen_tls.key", 2, "required key missing");
    check_error(only_error("listen_tls:\n  certificate: /nonexistent/tls.pem\n  key: " + readable +
                           "\nupstreams: { app: { address: 127.0.0.1:3000 } }\nroutes: [ { upstream: app } ]\n"),
                "listen_tls.certificate", 2, "cannot read '/nonexistent/tls.pem'");
    check_error(only_error("listen_tls: { certificate: " + readable + ", key: " + readable +
                           ", ciphers: ALL }\nupstreams: { app: { address: 127.0.0.1:3000 } }\nroutes: [ { upstream: app } ]\n"),
                "listen_tls", 1, "unknown key 'ciphers'");
}

TEST_CASE("config: upstream TLS keys, unreadable files and an unpaired client certificate") {
    env_guard env;
    const std::string readable = std::string(IFM_SOURCE_DIR) + "/README.md";
    auto c = load_ok(R"(upstreams:
  legacy:
    address: origin.internal:443
    tls:
      enabled: true
      ca_file: )" + readable + R"(
      verify: false
      server_name: api.example.com
      client_certificate: )" + readable + R"(
      client_key: )" + readable + R"(
routes:
  - upstream: legacy
)");
    const auto& t = c.upstreams[0].tls;
    CHECK(t.enabled);
    CHECK(t.ca_file == readable);
    CHECK_FALSE(t.verify);
    CHECK(t.server_name == "api.example.com");
    CHECK(t.client_certificate == readable);
    CHECK(t.client_key == readable);
    CHECK_FALSE(load_ok(minimal).upstreams[0].tls.enabled);
    CHECK(load_ok(minimal).upstreams[0].tls.verify);

    // A CA file that cannot be read: its path, line and the system's reason.
    check_error(only_error(R"(upstreams:
  legacy:
    address: 127.0.0.1:3000
    tls: { enabled: true,
           ca_file: /nonexistent/ca.pem }
routes:
  - upstream: legacy
)"),
                "upstreams.legacy.tls.ca_file", 5, "cannot read '/nonexistent/ca.pem': No such file or directory");
    // A directory is not a readable file.
    check_error(only_error(R"(upstreams:
  legacy: { address: 127.0.0.1:3000, tls: { enabled: true, client_certificate: /tmp, client_key: )" + readable + R"( } }
routes:
  - upstream: legacy
)"),
                "upstreams.legacy.tls.client_certificate", 2, "cannot read '/tmp'");
    // A certificate without its key, and a key without its certificate.
    check_error(only_error(R"(upstreams:
  legacy:
    address: 127.0.0.1:3000
    tls:
      enabled: true
      client_certificate: )" + readable + R"(
routes:
  - upstream: legacy
)"),
                "upstreams.legacy.tls.client_certificate", 6, "needs upstreams.legacy.tls.client_key");
    check_error(only_error(R"(upstreams:
  legacy:
    address: 127.0.0.1:3000
    tls:
      enabled: true
      client_key: )" + readable + R"(
routes:
  - upstream: legacy
)"),
                "upstreams.legacy.tls.client_key", 6, "needs upstreams.legacy.tls.client_certificate");
    // TLS settings without enabled: true would leave the origin on plain HTTP unnoticed.
    check_error(only_error(R"(upstreams:
  legacy:
    address: 127.0.0.1:3000
    tls: { server_name: api.example.com }
routes:
  - upstream: legacy
)"),
                "upstreams.legacy.tls.server_name", 4, "has no effect unless upstreams.legacy.tls.enabled is true");
    check_error(only_error(R"(upstreams:
  legacy: { address: 127.0.0.1:3000, tls: { enabled: yes } }
routes:
  - upstream: legacy
)"),
                "upstreams.legacy.tls.enabled", 2, "expected one of true|false");
    check_error(only_error(R"(upstreams:
  legacy: { address: 127.0.0.1:3000, tls: { enabled: true, server_name: "a b" } }
routes:
  - upstream: legacy
)"),
                "upstreams.legacy.tls.server_name", 2, "expected a host name");
}

TEST_CASE("config: the write lease must outlast the origin request") {
    env_guard env;
    auto e = only_error(R"(upstreams:
  legacy: { address: 127.0.0.1:3000 }
routes:
  - upstream: legacy
    write_lease: 11s
)");
    check_error(e, "routes[0].write_lease", 5, "");
    CHECK(e.message ==
          "must exceed upstreams.legacy.request_timeout (10s) plus lease_margin (1s), "
          "because the origin cannot check a fencing token");

    // A defaulted lease (15s) against a slow origin: reported at the route's line.
    check_error(only_error(R"(upstreams:
  slow: { address: 127.0.0.1:3000, request_timeout: 20s }
routes:
  - name: a
    upstream: slow
)"),
                "routes[0].write_lease", 4, "upstreams.slow.request_timeout (20s)");

    // Untracked routes hold no lease, so there is nothing to check.
    load_ok(R"(upstreams:
  slow: { address: 127.0.0.1:3000, request_timeout: 20s }
routes:
  - upstream: slow
    track: false
)");
    CHECK(load_ok(std::string(minimal) + "    write_lease: 11001ms\n").routes[0].write_lease == 11001ms);

    check_error(only_error(std::string(minimal) + "    on_busy: wait\n    busy_wait: 15s\n"), "routes[0].busy_wait", 6,
                "must be shorter than write_lease (15s)");
}

TEST_CASE("config: route names are unique, explicit or defaulted") {
    env_guard env;
    check_error(only_error(R"(upstreams:
  legacy: { address: 127.0.0.1:3000 }
routes:
  - name: api
    upstream: legacy
  - name: api
    upstream: legacy
)"),
                "routes[1].name", 6, "duplicate route name 'api' (also routes[0])");
    check_error(only_error(R"(upstreams:
  legacy: { address: 127.0.0.1:3000 }
routes:
  - upstream: legacy
  - name: route0
    upstream: legacy
)"),
                "routes[1].name", 5, "duplicate route name 'route0'");
    check_error(only_error(std::string(minimal) + "    name: a/b\n"), "routes[0].name", 5, "expected a name");
}

TEST_CASE("config: duplicate keys") {
    env_guard env;
    check_error(only_error(std::string(minimal) + "    etag: hash\n    etag: origin\n"), "routes[0].etag", 6,
                "duplicate key");
    check_error(only_error(R"(upstreams:
  legacy: { address: 127.0.0.1:3000 }
  legacy: { address: 127.0.0.1:3001 }
routes:
  - upstream: legacy
)"),
                "upstreams.legacy", 3, "duplicate upstream");
}

TEST_CASE("config: YAML syntax errors and unreadable files") {
    env_guard env;
    auto e = only_error(R"(upstreams:
  legacy: { address: 127.0.0.1:3000
routes:
  - upstream: legacy
)");
    CHECK(e.path.empty());
    CHECK(e.line == 3);  // where yaml-cpp notices the unclosed flow mapping
    CHECK(e.message.starts_with("YAML syntax error"));

    e = only_error("listen: 127.0.0.1:8080\nroutes:\n  - upstream: a\n   bad: indentation\n");
    CHECK(e.line == 4);
    CHECK(e.message.starts_with("YAML syntax error"));

    check_error(only_error(""), "", 1, "the configuration is empty");
    check_error(only_error("just a string\n"), "", 1, "expected a mapping");

    auto r = cfg::load_file("/nonexistent/ifm.yaml");
    REQUIRE_FALSE(r.has_value());
    REQUIRE(r.error().size() == 1);
    CHECK(r.error()[0].line == 0);
    CHECK(r.error()[0].format("/nonexistent/ifm.yaml") ==
          "/nonexistent/ifm.yaml:0: cannot read the file: No such file or directory");
}

TEST_CASE("config: every error of a file is reported, in line order") {
    env_guard env;
    auto errors = load_errors(R"(listen: nowhere
workers: many
upstreams:
  legacy:
    address: 127.0.0.1:3000
    request_timeout: 10
routes:
  - upstream: legacy
    etag: strong
    write_lease: 5s
  - upstream: missing
    query: sorted
  - name: x
limits: { max_body_bytes: huge, max_hedaer_bytes: 1KiB }
)");
    INFO(dump(errors));
    std::vector<std::pair<std::string, int>> got;
    for (auto& e : errors) got.emplace_back(e.path, e.line);
    std::vector<std::pair<std::string, int>> want = {
        {"listen", 1},
        {"workers", 2},
        {"upstreams.legacy.request_timeout", 6},
        {"routes[0].etag", 9},
        // routes[0].write_lease is not judged: its route and upstream already have errors.
        {"routes[1].upstream", 11},
        {"routes[2].upstream", 13},
        {"limits.max_body_bytes", 14},
        {"limits", 14},
    };
    CHECK(got == want);
}

TEST_CASE("config: store URLs, passwords and environment overrides") {
    env_guard env;
    auto with_store = [](std::string store) { return std::string(minimal) + "store:\n" + store; };

    auto c = load_ok(with_store("  url: redis://:s%3Acret@10.0.0.5:6379\n"));
    CHECK(c.store.url == "redis://10.0.0.5:6379");
    CHECK(c.store.password == "s:cret");
    c = load_ok(with_store("  url: unix:///run/redis.sock?db=3\n  password: pw\n"));
    CHECK(c.store.url == "unix:///run/redis.sock?db=3");
    CHECK(c.store.password == "pw");
    load_ok(with_store("  url: redis://[::1]:6379/15\n"));

    check_error(only_error(with_store("  url: redis://:a@h:1/0\n  password: b\n")), "store.password", 7, "give it once");
    check_error(only_error(with_store("  url: http://127.0.0.1:6379\n")), "store.url", 6, "expected redis://");
    CHECK(load_ok(with_store("  url: redis://redis.internal/1\n")).store.url == "redis://redis.internal/1");
    load_ok(with_store("  url: redis://[::1]\n"));
    check_error(only_error(with_store("  url: redis://127.0.0.1:0\n")), "store.url", 6, "expected redis://");
    check_error(only_error(with_store("  url: redis://\n")), "store.url", 6, "expected redis://");
    check_error(only_error(with_store("  url: redis://127.0.0.1:6379/zero\n")), "store.url", 6, "database");
    check_error(only_error(with_store("  url: unix://run/redis.sock\n")), "store.url", 6, "absolute");
    check_error(only_error(with_store("  url: unix:///run/redis.sock?timeout=1\n")), "store.url", 6, "db=N");
    check_error(only_error(with_store("  url: redis://:%zz@h:1\n")), "store.url", 6, "percent-encoding");
    check_error(only_error(with_store("  url: redis://secret@h:1\n")), "store.url", 6, "redis://:password@host");

    SUBCASE("IFM_REDIS_PASSWORD overrides the file and the URL") {
        env.set("IFM_REDIS_PASSWORD", "from-env");
        CHECK(load_ok(with_store("  password: from-file\n")).store.password == "from-env");
        CHECK(load_ok(with_store("  url: redis://:from-url@h:1\n")).store.password == "from-env");
        CHECK(load_ok(minimal).store.password == "from-env");
    }
    SUBCASE("an empty variable counts as unset") {
        env.set("IFM_REDIS_PASSWORD", "");
        CHECK(load_ok(with_store("  password: from-file\n")).store.password == "from-file");
    }
    SUBCASE("IFM_REDIS_URL replaces store.url, its password included") {
        env.set("IFM_REDIS_URL", "redis://:url-pw@redis.env:6390/1");
        c = load_ok(with_store("  url: redis://127.0.0.1:6379/0\n  password: file-pw\n"));
        CHECK(c.store.url == "redis://redis.env:6390/1");
        CHECK(c.store.password == "url-pw");
    }
    SUBCASE("a bad IFM_REDIS_URL is reported at line 0") {
        env.set("IFM_REDIS_URL", "localhost:6379");
        check_error(only_error(minimal), "store.url", 0, "from IFM_REDIS_URL: expected redis://");
    }
}

TEST_CASE("config: parse_duration") {
    using cfg::parse_duration;
    CHECK(parse_duration("50ms") == 50ms);
    CHECK(parse_duration("15s") == 15s);
    CHECK(parse_duration("2m") == 2min);
    CHECK(parse_duration("1h") == 1h);
    CHECK(parse_duration("0s") == 0ms);
    CHECK(parse_duration("250us") == 1ms);  // rounds up
    CHECK(parse_duration("1000us") == 1ms);
    CHECK(parse_duration("1001us") == 2ms);
    CHECK(parse_duration("0us") == 0ms);
    CHECK(parse_duration("18446744073709551615us"));
    CHECK(parse_duration("9223372036854775807ms") == cfg::duration::max());
    for (auto bad : {"", "15", "s", "-5s", "+5s", " 5s", "5s ", "5 s", "5sec", "5S", "1.5s", "1m30s", "0x10s",
                     "5ns", "9223372036854775808ms", "2562047788015216h", "99999999999999999999s"}) {
        INFO(bad);
        CHECK_FALSE(parse_duration(bad));
    }
}

TEST_CASE("config: parse_size") {
    using cfg::parse_size;
    CHECK(parse_size("512") == 512u);
    CHECK(parse_size("512B") == 512u);
    CHECK(parse_size("0") == 0u);
    CHECK(parse_size("10kB") == 10'000u);
    CHECK(parse_size("3MB") == 3'000'000u);
    CHECK(parse_size("2GB") == 2'000'000'000u);
    CHECK(parse_size("16KiB") == 16u * 1024);
    CHECK(parse_size("8MiB") == 8u * 1024 * 1024);
    CHECK(parse_size("1GiB") == 1024u * 1024 * 1024);
    CHECK(parse_size("18446744073709551615") == std::numeric_limits<std::size_t>::max());
    for (auto bad : {"", "B", "KiB", "-1", "+1", "1 KiB", "1KB", "1K", "1kib", "1.5MiB", "1KiBx", "18446744073709551616",
                     "17179869184GiB"}) {
        INFO(bad);
        CHECK_FALSE(parse_size(bad));
    }
}

TEST_CASE("config: parse_endpoint") {
    using cfg::endpoint;
    using cfg::parse_endpoint;
    CHECK(parse_endpoint("127.0.0.1:8080") == endpoint{"127.0.0.1", 8080});
    CHECK(parse_endpoint("origin.internal:3000") == endpoint{"origin.internal", 3000});
    CHECK(parse_endpoint("[::1]:8080") == endpoint{"::1", 8080});
    CHECK(parse_endpoint("[fe80::1%eth0]:1") == endpoint{"fe80::1%eth0", 1});
    CHECK(parse_endpoint("0.0.0.0:0") == endpoint{"0.0.0.0", 0});  // callers decide whether 0 is allowed
    CHECK(parse_endpoint("h:65535") == endpoint{"h", 65535});
    for (auto bad : {"", ":8080", "host", "host:", "host:65536", "host:-1", "host:+80", "host:80x", "host :80",
                     "::1:8080", "[::1]", "[::1]8080", "[]:80", "[host]:80", "a/b:80", "host:99999999999999999999"}) {
        INFO(bad);
        CHECK_FALSE(parse_endpoint(bad));
    }
}

TEST_CASE("config: every example file loads") {
    env_guard env;
    namespace fs = std::filesystem;
    int count = 0;
    for (auto& entry : fs::directory_iterator(fs::path(IFM_SOURCE_DIR) / "examples")) {
        if (entry.path().extension() != ".yaml") continue;
        ++count;
        auto r = cfg::load_file(entry.path().string());
        INFO(entry.path().string() << "\n" << (r ? std::string() : dump(r.error())));
        CHECK(r.has_value());
    }
    CHECK(count >= 2);
}

namespace {

struct doc_row {
    std::string key;
    std::string def;       // the Default cell as written
    std::string example;
};

// Rows of the key table in docs/configuration.md: "| `key` | type | default | `example` | meaning |".
std::vector<doc_row> documented_keys() {
    std::ifstream in(std::string(IFM_SOURCE_DIR) + "/docs/configuration.md");
    REQUIRE(in);
    auto unquote = [](std::string s) {
        auto first = s.find_first_not_of(" `"), last = s.find_last_not_of(" `");
        return first == std::string::npos ? std::string() : s.substr(first, last - first + 1);
    };
    std::vector<doc_row> rows;
    bool in_keys = false;
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with("## ")) in_keys = line == "## Keys";
        if (!in_keys || !line.starts_with("| `")) continue;
        std::vector<std::string> cells;
        std::stringstream ss(line.substr(1));
        for (std::string cell; std::getline(ss, cell, '|');) cells.push_back(cell);
        REQUIRE_MESSAGE(cells.size() >= 5, line);
        rows.push_back({unquote(cells[0]), cells[2], unquote(cells[3])});
    }
    return rows;
}

// minimal + `key: example`, where "routes[]" is the first route and "<name>" its upstream.
std::string with_key(const std::string& key, const std::string& example) {
    YAML::Node root = YAML::Load(std::string(minimal));
    std::vector<std::string> parts;
    std::stringstream ss(key);
    for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);
    // Recursion instead of rebinding a YAML::Node: assigning one node to another overwrites it.
    auto set = [&](auto& self, YAML::Node at, std::size_t i) -> void {
        auto part = parts[i] == "<name>" ? std::string("legacy") : parts[i];
        if (i + 1 == parts.size()) {
            at[part] = YAML::Load(example);
            // A dependency rule needs both of its keys: the other one from a fixed example.
            if (key == "routes[].dependencies[].path") at["invalidates"] = YAML::Load("[/users]");
            if (key == "routes[].dependencies[].invalidates") at["path"] = YAML::Load("/users/{id}/email");
            // TLS keys take effect with enabled: true; files must exist, and a client
            // certificate comes with its key.
            if (key.starts_with("upstreams.<name>.tls.") && !key.ends_with(".enabled")) at["enabled"] = true;
            if (key.ends_with("_file") || key.ends_with(".client_certificate") || key.ends_with(".client_key"))
                at[part] = std::string(IFM_SOURCE_DIR) + "/README.md";
            if (key.starts_with("listen_tls.")) {   // both, readable files
                at["certificate"] = std::string(IFM_SOURCE_DIR) + "/README.md";
                at["key"] = std::string(IFM_SOURCE_DIR) + "/README.md";
            }
            if (key.ends_with(".client_certificate") || key.ends_with(".client_key")) {
                at["client_certificate"] = std::string(IFM_SOURCE_DIR) + "/README.md";
                at["client_key"] = std::string(IFM_SOURCE_DIR) + "/README.md";
            }
        }
        else if (part.ends_with("[]")) self(self, at[part.substr(0, part.size() - 2)][0], i + 1);
        else self(self, at[part], i + 1);
    };
    set(set, root, 0);
    // The sentinel credentials go with a redis-sentinel:// URL (and a user with its password).
    if (key.starts_with("store.sentinel_")) {
        root["store"]["url"] = "redis-sentinel://127.0.0.1:26379/ifm";
        if (key == "store.sentinel_username") root["store"]["sentinel_password"] = "s3ntinel-pw";
    }
    return YAML::Dump(root);
}

}  // namespace

TEST_CASE("config: docs/configuration.md documents exactly the keys the loader accepts") {
    env_guard env;
    auto rows = documented_keys();
    REQUIRE(rows.size() > 20);
    std::set<std::string> documented;
    for (auto& row : rows) {
        CHECK_MESSAGE(documented.insert(row.key).second, "documented twice: " << row.key);
        // The documented example must be accepted where the doc puts it.
        auto yaml = with_key(row.key, row.example);
        auto r = cfg::load_string(yaml);
        INFO(row.key << ": " << row.example << "\n" << yaml << (r ? std::string() : dump(r.error())));
        CHECK(r.has_value());
    }
    std::set<std::string> known;
    for (auto& key : cfg::known_keys()) {
        known.insert(key);
        CHECK_MESSAGE(documented.contains(key), "not in docs/configuration.md: " << key);
    }
    for (auto& key : documented) CHECK_MESSAGE(known.contains(key), "documented but unknown to the loader: " << key);
}

TEST_CASE("config: every default in docs/configuration.md is the loader's default") {
    env_guard env;
    auto base = cfg::load_string(minimal);
    REQUIRE(base.has_value());
    int checked = 0;
    for (auto& row : documented_keys()) {
        // Only a Default cell that is one literal (`50ms`, `true`, `[PUT, DELETE]`) can be set;
        // prose ("none", "`route<i>` (...)", "1 with ..., else 0") is left to the reader.
        static const std::regex literal(R"(^\s*`([^`]+)`\s*$)");
        std::smatch m;
        if (!std::regex_match(row.def, m, literal)) continue;
        auto yaml = with_key(row.key, m[1].str());
        auto r = cfg::load_string(yaml);
        INFO(row.key << ": documented default " << m[1].str() << "\n" << yaml << (r ? std::string() : dump(r.error())));
        REQUIRE(r.has_value());
        // with_key turned TLS on for the other tls keys: compare with TLS on alone.
        if (row.key.starts_with("upstreams.<name>.tls.") && !row.key.ends_with(".enabled")) {
            auto tls_on = cfg::load_string(with_key("upstreams.<name>.tls.enabled", "true"));
            REQUIRE(tls_on.has_value());
            CHECK(*r == *tls_on);
        } else {
            CHECK(*r == *base);
        }
        ++checked;
    }
    CHECK(checked > 30);
}

TEST_CASE("config: limits.spool_dir must be an absolute, existing, writable directory; the spool sizes may be 0") {
    auto base = std::string(minimal);
    check_error(only_error(base + "limits:\n  spool_dir: tmp\n"), "limits.spool_dir", 6, "absolute path");
    check_error(only_error(base + "limits:\n  spool_dir: /no/such/dir\n"), "limits.spool_dir", 6, "/no/such/dir");
    check_error(only_error(base + "limits:\n  spool_dir: /etc/hostname\n"), "limits.spool_dir", 6, "not a directory");
    auto c = load_ok(base + "limits:\n  spool_dir: /tmp\n  max_spooled_bytes: 0\n  max_spooled_response: 2MiB\n");
    CHECK(c.limits.spool_dir == "/tmp");
    CHECK(c.limits.max_spooled_bytes == 0);
    CHECK(c.limits.max_spooled_response == 2 * 1024 * 1024);
    auto d = load_ok(base);
    CHECK(d.limits.spool_dir.empty());
    CHECK(d.limits.max_spooled_bytes == std::size_t{1} << 30);
}

TEST_CASE("config: store.snapshot_reuse is a duration, 1s by default, 0ms turns it off") {
    auto base = std::string(minimal);
    CHECK(load_ok(base).store.snapshot_reuse == std::chrono::seconds(1));
    CHECK(load_ok(base + "store: { snapshot_reuse: 0ms }\n").store.snapshot_reuse.count() == 0);
    CHECK(load_ok(base + "store: { snapshot_reuse: 250ms }\n").store.snapshot_reuse == std::chrono::milliseconds(250));
    check_error(only_error(base + "store: { snapshot_reuse: 5 }\n"), "store.snapshot_reuse", 5, "a unit is required");
    check_error(only_error(base + "store: { snapshot_reuse: soon }\n"), "store.snapshot_reuse", 5, "expected a duration");
}
