// Operations (issue 7), against the real binary: the admin listener (/healthz, /readyz, /metrics
// moving with traffic) with a real redis-server, SIGHUP reload on kept-alive connections, and the
// example configurations (every one passes --check-config; the deployment manifests agree with
// the configurations they carry).
#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_process.hpp"

#include <doctest/doctest.h>
#include <yaml-cpp/yaml.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

// Polls `f` every 20 ms until it holds or `timeout` passes.
bool eventually(const std::function<bool()>& f, std::chrono::milliseconds timeout = 10s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (f()) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(20ms);
    }
}

// One scrape of /metrics: samples by series text (`name{labels}`), families by name.
struct scrape {
    std::map<std::string, double> samples;
    std::map<std::string, std::string> types;
    std::vector<std::string> problems;   // format violations

    // Absent series count as 0 (labelled counters appear once they move).
    double operator[](const std::string& series) const {
        auto it = samples.find(series);
        return it == samples.end() ? 0 : it->second;
    }
};

// Parses the text format and checks what Prometheus requires or recommends: a TYPE line before
// a family's samples, valid names, counters named *_total, histogram buckets cumulative with
// le="+Inf" equal to _count.
scrape parse_metrics(const std::string& text) {
    scrape s;
    static const std::regex name_re("^[a-zA-Z_:][a-zA-Z0-9_:]*$");
    static const std::regex series_re(R"re(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-z_]+="[^"\\]*")(,[a-z_]+="[^"\\]*")*\})?$)re");
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.empty()) continue;
        if (line.starts_with("# TYPE ")) {
            std::istringstream l(line.substr(7));
            std::string name, type;
            l >> name >> type;
            if (!std::regex_match(name, name_re)) s.problems.push_back("bad family name: " + line);
            if (s.types.count(name)) s.problems.push_back("family declared twice: " + name);
            if (type == "counter" && !name.ends_with("_total")) s.problems.push_back("counter without _total: " + name);
            s.types[name] = type;
            continue;
        }
        if (line.starts_with("#")) continue;
        auto sp = line.rfind(' ');
        if (sp == std::string::npos) {
            s.problems.push_back("no value: " + line);
            continue;
        }
        auto series = line.substr(0, sp);
        auto value = line.substr(sp + 1);
        std::smatch m;
        if (!std::regex_match(series, m, series_re)) {
            s.problems.push_back("bad series: " + series);
            continue;
        }
        std::string name = m[1];
        std::string family = name;
        for (std::string suffix : {"_bucket", "_sum", "_count"})
            if (name.ends_with(suffix) && s.types.count(name.substr(0, name.size() - suffix.size())) &&
                s.types[name.substr(0, name.size() - suffix.size())] == "histogram")
                family = name.substr(0, name.size() - suffix.size());
        if (!s.types.count(family)) s.problems.push_back("sample before its TYPE line: " + series);
        if (s.samples.count(series)) s.problems.push_back("series twice: " + series);
        try {
            s.samples[series] = value == "+Inf" ? 1e300 : std::stod(value);
        } catch (const std::exception&) {
            s.problems.push_back("bad value: " + line);
        }
    }
    // Histograms: cumulative buckets, +Inf == _count.
    std::map<std::string, std::vector<double>> buckets;   // "name{labels without le}" -> values in order
    std::map<std::string, double> inf;
    static const std::regex bucket_re(R"re(^([a-z_]+)_bucket\{(.*)le="([^"]+)"\}$)re");
    for (const auto& [series, v] : s.samples) {
        std::smatch m;
        if (!std::regex_match(series, m, bucket_re)) continue;
        std::string labels = m[2];
        if (!labels.empty()) labels.pop_back();   // trailing comma
        std::string key = std::string(m[1]) + "{" + labels + "}";
        if (m[3] == "+Inf") inf[key] = v;
    }
    // Walk the text again for bucket order (the map above is sorted by text, not by le).
    std::istringstream again(text);
    for (std::string line; std::getline(again, line);) {
        std::smatch m;
        auto sp = line.rfind(' ');
        if (line.starts_with("#") || sp == std::string::npos) continue;
        auto series = line.substr(0, sp);
        if (!std::regex_match(series, m, bucket_re)) continue;
        std::string labels = m[2];
        if (!labels.empty()) labels.pop_back();
        buckets[std::string(m[1]) + "{" + labels + "}"].push_back(s.samples[series]);
    }
    for (const auto& [key, values] : buckets) {
        for (std::size_t i = 1; i < values.size(); ++i)
            if (values[i] < values[i - 1]) s.problems.push_back("buckets not cumulative: " + key);
        auto brace = key.find('{');
        std::string count = key.substr(0, brace) + "_count" + (key.substr(brace) == "{}" ? "" : key.substr(brace));
        if (!inf.count(key) || !s.samples.count(count) || inf[key] != s.samples[count])
            s.problems.push_back("+Inf bucket differs from _count: " + key);
    }
    return s;
}

scrape scrape_metrics(std::uint16_t admin_port) {
    http_client c(admin_port);
    auto r = c.request("GET", "/metrics");
    REQUIRE(r.status == 200);
    CHECK(r.header("Content-Type").starts_with("text/plain; version=0.0.4"));
    auto s = parse_metrics(r.body);
    INFO(r.body);
    for (const auto& p : s.problems) FAIL_CHECK(p);
    return s;
}

response get(std::uint16_t port, const std::string& target) {
    http_client c(port);
    return c.request("GET", target);
}

std::string proxy_yaml(std::uint16_t port, std::uint16_t admin, std::uint16_t origin, const std::string& redis_url) {
    return "listen: 127.0.0.1:" + std::to_string(port) + "\n"
           "admin_listen: 127.0.0.1:" + std::to_string(admin) + "\n"
           "workers: 2\n"
           "store: { kind: redis, url: \"" + redis_url + "\", timeout: 500ms, young_server_wait: false }\n"
           "upstreams:\n"
           "  legacy: { address: 127.0.0.1:" + std::to_string(origin) + ", request_timeout: 5s }\n"
           "routes:\n"
           "  - name: api\n"
           "    match: { path_prefix: /api/ }\n"
           "    upstream: legacy\n"
           "    etag: hash\n"
           "    methods: [PUT, DELETE]\n"
           "    require_precondition: true\n"
           "    write_lease: 10s\n"
           "log: { level: warn, access_log: false }\n";
}

std::string api(const std::string& route, const std::string& method, const std::string& cls) {
    return "ifmatch_requests_total{route=\"" + route + "\",method=\"" + method + "\",class=\"" + cls + "\"}";
}
std::string outcome(const std::string& o) { return "ifmatch_precondition_outcomes_total{outcome=\"" + o + "\"}"; }

}  // namespace

TEST_CASE("/metrics: the Prometheus text format, and the numbers move with traffic") {
    redis_server redis;
    fake_origin origin;
    origin.put("/api/doc", "version 1");
    origin.put("/api/fresh", "never read through the proxy");
    auto port = free_port(), admin = free_port();
    proxy_process px(proxy_yaml(port, admin, origin.port(), redis.url()), port);
    REQUIRE(wait_for_port(admin, 5s));

    auto before = scrape_metrics(admin);
    CHECK(before["ifmatch_build_info{version=\"" IFM_VERSION "\"}"] == 1);
    CHECK(before["ifmatch_workers"] == 2);
    CHECK(before["ifmatch_leases_held"] == 0);
    CHECK(eventually([&] { return scrape_metrics(admin)["ifmatch_store_connections_up"] == 2; }));
    CHECK(before.types["ifmatch_request_duration_seconds"] == "histogram");
    CHECK(before.types["ifmatch_store_duration_seconds"] == "histogram");
    CHECK(before.types["ifmatch_origin_duration_seconds"] == "histogram");

    http_client c(port);
    auto g = c.request("GET", "/api/doc");
    REQUIRE(g.status == 200);
    auto tag = g.header("ETag");
    REQUIRE(!tag.empty());
    CHECK(c.request("PUT", "/api/doc", {}, "no precondition").status == 428);                  // missing
    CHECK(c.request("PUT", "/api/doc", {{"If-Match", "\"stale\""}}, "x").status == 409);        // rejected_stale
    CHECK(c.request("PUT", "/api/doc", {{"If-None-Match", "*"}}, "x").status == 409);           // rejected_exists
    CHECK(c.request("PUT", "/api/doc", {{"If-Match", "nonsense"}}, "x").status == 400);         // malformed
    CHECK(c.request("PUT", "/api/fresh", {{"If-Match", "*"}}, "y").status / 100 == 2);          // revalidated
    CHECK(c.request("GET", "/elsewhere").status == 404);                                         // no route

    // A slow write holds its lease: a second write is busy, and the gauges show it in flight.
    auto seen = origin.requests().size();
    auto slow = std::async(std::launch::async, [&] {
        http_client w(port);
        return w.request("PUT", "/api/doc", {{"If-Match", tag}, {"x-fake-delay-ms", "1500"}}, "version 2").status;
    });
    REQUIRE(origin.wait_for_requests(seen + 1, 5s));
    auto during = scrape_metrics(admin);
    CHECK(during["ifmatch_leases_held"] == 1);
    CHECK(during["ifmatch_client_connections"] >= 2);   // `c` and the slow writer
    CHECK(during["ifmatch_origin_connections{state=\"in_use\"}"] >= 1);
    CHECK(c.request("PUT", "/api/doc", {{"If-Match", tag}}, "racing").status == 409);          // rejected_busy
    CHECK(slow.get() / 100 == 2);                                                               // passed

    auto after = scrape_metrics(admin);
    CHECK(after["ifmatch_leases_held"] == 0);
    CHECK(after["ifmatch_origin_connections{state=\"idle\"}"] >= 1);   // kept alive in the pools
    auto delta = [&](const std::string& series) { return after[series] - before[series]; };
    CHECK(delta(api("api", "GET", "2xx")) == 1);
    CHECK(delta(api("api", "PUT", "2xx")) == 2);     // revalidated + the slow write
    CHECK(delta(api("api", "PUT", "4xx")) == 5);     // 428, 409 stale, 409 exists, 400, 409 busy
    CHECK(delta(api("(none)", "GET", "4xx")) == 1);
    CHECK(delta("ifmatch_request_duration_seconds_count{route=\"api\"}") == 8);
    CHECK(delta("ifmatch_request_duration_seconds_sum{route=\"api\"}") >= 1.5);   // the slow write
    CHECK(delta("ifmatch_request_duration_seconds_bucket{route=\"api\",le=\"1\"}") == 7);
    CHECK(delta(outcome("passed")) == 1);
    CHECK(delta(outcome("revalidated")) == 1);
    CHECK(delta(outcome("rejected_stale")) == 1);
    CHECK(delta(outcome("rejected_busy")) == 1);
    CHECK(delta(outcome("rejected_exists")) == 1);
    CHECK(delta(outcome("missing")) == 1);
    CHECK(delta(outcome("malformed")) == 1);
    CHECK(delta(outcome("store_error")) == 0);
    CHECK(delta("ifmatch_origin_duration_seconds_count{kind=\"forward\"}") == 3);   // GET, 2 writes
    CHECK(delta("ifmatch_origin_duration_seconds_count{kind=\"fetch\"}") == 1);     // the revalidation
    CHECK(delta("ifmatch_store_duration_seconds_count{op=\"acquire\"}") == 5);      // stale, exists, fresh, slow, busy
    CHECK(delta("ifmatch_store_duration_seconds_count{op=\"commit\"}") == 2);
    CHECK(delta("ifmatch_store_duration_seconds_count{op=\"snapshot\"}") == 1);
    CHECK(delta("ifmatch_client_connections_accepted_total") >= 2);

    // Redis down: judged writes fail closed (store_error), the store errors and /readyz say so;
    // back up: every worker reconnects.
    redis.stop();
    CHECK(c.request("PUT", "/api/doc", {{"If-Match", tag}}, "z").status == 503);
    auto down = scrape_metrics(admin);
    CHECK(down[outcome("store_error")] - after[outcome("store_error")] == 1);
    CHECK(down["ifmatch_store_errors_total{op=\"acquire\"}"] >= 1);
    CHECK(eventually([&] { return scrape_metrics(admin)["ifmatch_store_connections_up"] == 0; }));
    redis.start();
    CHECK(eventually([&] {
        auto s = scrape_metrics(admin);
        return s["ifmatch_store_reconnects_total"] >= 2 && s["ifmatch_store_connections_up"] == 2;
    }));
}

// Issue 13 changed /readyz: a Redis outage no longer fails it (reads still flow, and a shared
// store's outage must not empty the whole Service); the body reports the store instead.
TEST_CASE("/healthz and /readyz: 503 with a JSON reason while the origin is down; Redis down is reported, not fatal") {
    // nginx, not the in-process fake origin: the proxy process inherits the test's listening
    // sockets, so an in-process origin's port would keep accepting after it stops.
    redis_server redis;
    nginx_webdav origin;
    auto port = free_port(), admin = free_port();
    proxy_process px(proxy_yaml(port, admin, origin.port(), redis.url()), port);
    REQUIRE(wait_for_port(admin, 5s));

    auto health = get(admin, "/healthz");
    CHECK(health.status == 200);
    CHECK(health.body.find("\"ok\"") != std::string::npos);
    // Ready once the store connections are up (the listener accepts a little earlier).
    response ready;
    CHECK(eventually([&] { return (ready = get(admin, "/readyz")).status == 200; }));
    INFO(ready.body);
    CHECK(ready.header("Content-Type") == "application/json");
    CHECK(get(admin, "/nothing-here").status == 404);
    auto probe = proxy_process::run_once(read_text_file(px.config_path()), {"--healthcheck"});
    CHECK(probe.status == 0);

    CHECK(eventually([&] { return get(admin, "/readyz").body.find("\"reachable\":true") != std::string::npos; }));
    redis.stop();
    response store_down;
    CHECK(eventually([&] {
        store_down = get(admin, "/readyz");
        return store_down.body.find("\"reachable\":false") != std::string::npos;
    }));
    INFO(store_down.body);
    CHECK(store_down.status == 200);   // still ready: reads flow
    CHECK(store_down.header("Content-Type") == "application/json");
    CHECK(store_down.body.find("\"status\":\"ready\"") != std::string::npos);
    CHECK(store_down.body.find("\"store\":{\"kind\":\"redis\"") != std::string::npos);
    CHECK(scrape_metrics(admin)["ifmatch_store_up"] == 0);
    CHECK(get(admin, "/healthz").status == 200);

    redis.start();
    CHECK(eventually([&] { return get(admin, "/readyz").body.find("\"reachable\":true") != std::string::npos; }));
    CHECK(scrape_metrics(admin)["ifmatch_store_up"] == 1);
    response not_ready;

    origin.stop();   // the origin goes away: its port refuses connections
    CHECK(eventually([&] { return (not_ready = get(admin, "/readyz")).status == 503; }));
    INFO(not_ready.status << " " << not_ready.body);
    CHECK(not_ready.body.find("\"reason\":\"upstream legacy: ") != std::string::npos);
    origin.start();
    CHECK(eventually([&] { return get(admin, "/readyz").status == 200; }));

    px.terminate();
    CHECK(px.wait(10s) == 0);
    auto gone = proxy_process::run_once(read_text_file(px.config_path()), {"--healthcheck"});
    CHECK(gone.status == 1);
}

TEST_CASE("SIGTERM as Kubernetes needs it: /readyz fails at once, new connections are served for "
          "limits.drain_delay, then the listener closes, in-flight requests finish, exit 0") {
    fake_origin origin;
    auto port = free_port(), admin = free_port();
    std::string yaml = "listen: 127.0.0.1:" + std::to_string(port) + "\n"
                       "admin_listen: 127.0.0.1:" + std::to_string(admin) + "\n"
                       "workers: 2\n"
                       "upstreams:\n"
                       "  a: { address: 127.0.0.1:" + std::to_string(origin.port()) + " }\n"
                       "routes:\n"
                       "  - { name: a, match: { path_prefix: / }, upstream: a, track: false }\n"
                       "limits: { drain_delay: 2s, drain_timeout: 5s }\n"
                       "log: { level: info, access_log: false }\n";
    proxy_process px(yaml, port);
    REQUIRE(wait_for_port(admin, 5s));
    const std::vector<std::pair<std::string, std::string>> ok{{"x-fake-status", "200"}};
    REQUIRE(eventually([&] { return get(admin, "/readyz").status == 200; }));
    http_client kept(port);
    REQUIRE(kept.request("GET", "/before", ok).status == 200);

    auto sent = std::chrono::steady_clock::now();
    REQUIRE(::kill(px.pid(), SIGTERM) == 0);
    response r;
    CHECK(eventually([&] { return (r = get(admin, "/readyz")).status == 503; }, 1s));
    CHECK(r.body.find("\"reason\":\"draining\"") != std::string::npos);
    CHECK(get(admin, "/healthz").status == 200);
    CHECK(scrape_metrics(admin)["ifmatch_draining"] == 1);
    // Within the delay: a brand-new connection is served, and so is the kept-alive one.
    http_client fresh(port);
    CHECK(fresh.request("GET", "/during", ok).status == 200);
    CHECK(kept.request("GET", "/during-kept", ok).status == 200);
    CHECK(std::chrono::steady_clock::now() - sent < 1500ms);   // these were really within the delay
    // A slow request that starts in the delay and ends after it finishes normally.
    auto slow = std::async(std::launch::async, [port] {
        http_client s(port);
        return s.request("GET", "/slow", {{"x-fake-status", "200"}, {"x-fake-delay-ms", "2500"}}).status;
    });
    // After the delay the listener is closed.
    CHECK(eventually([&] { return !wait_for_port(port, 50ms); }, 4s));
    CHECK(std::chrono::steady_clock::now() - sent >= 1900ms);
    CHECK(slow.get() == 200);
    CHECK(px.wait(10s) == 0);
    CHECK(px.log().find("draining: /readyz fails; accepting for 2000 ms more") != std::string::npos);
}

TEST_CASE("SIGHUP: routes, upstreams, limits and log level change on kept-alive connections") {
    fake_origin a, b;
    auto port = free_port(), admin = free_port();
    auto yaml = [&](const std::string& level, const std::string& body_limit, bool with_b) {
        std::string y = "listen: 127.0.0.1:" + std::to_string(port) + "\n"
                        "admin_listen: 127.0.0.1:" + std::to_string(admin) + "\n"
                        "workers: 2\n"
                        "upstreams:\n"
                        "  a: { address: 127.0.0.1:" + std::to_string(a.port()) + " }\n";
        if (with_b) y += "  b: { address: 127.0.0.1:" + std::to_string(b.port()) + " }\n";
        y += "routes:\n"
             "  - { name: a, match: { path_prefix: /a/ }, upstream: a, track: false }\n";
        if (with_b) y += "  - { name: b, match: { path_prefix: /b/ }, upstream: b, track: false }\n";
        y += "limits: { max_body_bytes: " + body_limit + " }\n"
             "log: { level: " + level + ", access_log: false }\n";
        return y;
    };
    proxy_process px(yaml("warn", "1MiB", false), port);
    REQUIRE(wait_for_port(admin, 5s));
    auto reloads = [&](const std::string& result) {
        return scrape_metrics(admin)["ifmatch_config_reloads_total{result=\"" + result + "\"}"];
    };
    auto rewrite = [&](const std::string& text) { std::ofstream(px.config_path(), std::ios::trunc) << text; };

    const std::vector<std::pair<std::string, std::string>> ok{{"x-fake-status", "200"}};
    http_client c(port);
    CHECK(c.request("GET", "/a/1", ok).status == 200);
    auto no_route = c.request("GET", "/b/1", ok);   // no such route yet
    CHECK(no_route.status == 404);
    CHECK(no_route.body.find("no-route") != std::string::npos);
    CHECK(c.request("PUT", "/a/big", {{"x-fake-status", "204"}}, std::string(4096, 'x')).status == 204);

    // A request in flight while the configuration changes finishes normally.
    auto seen = a.requests().size();
    auto in_flight = std::async(std::launch::async, [&] {
        http_client s(port);
        return s.request("GET", "/a/slow", {{"x-fake-delay-ms", "800"}}).status;
    });
    REQUIRE(a.wait_for_requests(seen + 1, 5s));

    rewrite(yaml("info", "1KiB", true));
    REQUIRE(::kill(px.pid(), SIGHUP) == 0);
    REQUIRE(eventually([&] { return reloads("applied") == 1; }));
    CHECK(in_flight.get() == 200);

    // The client connection opened before the reload is still open and sees the new route and
    // upstream; the new body limit applies (413 closes that other connection).
    auto nb = c.request("GET", "/b/2", ok);
    CHECK(nb.status == 200);
    CHECK(b.count("GET") == 1);
    CHECK(c.connects() == 1);
    http_client big(port);
    CHECK(big.request("PUT", "/a/big", {{"x-fake-status", "204"}}, std::string(4096, 'x')).status == 413);
    CHECK(px.log().find("configuration reloaded: 2 route(s), 2 upstream(s)") != std::string::npos);   // info, now
    CHECK(scrape_metrics(admin)["ifmatch_requests_total{route=\"b\",method=\"GET\",class=\"2xx\"}"] == 1);

    // An invalid file is rejected with its errors logged; the running configuration stays.
    rewrite("listen: 127.0.0.1:" + std::to_string(port) + "\n"
            "upstreams:\n"
            "  a: { address: 127.0.0.1:" + std::to_string(a.port()) + " }\n"
            "routes:\n"
            "  - upstream: nowhere\n"
            "    etag: sha1\n");
    REQUIRE(::kill(px.pid(), SIGHUP) == 0);
    REQUIRE(eventually([&] { return reloads("rejected") == 1; }));
    auto log = px.log();
    CHECK(log.find(":6: routes[0].etag: expected one of origin|hash|auto") != std::string::npos);
    CHECK(log.find("reload refused, keeping the running configuration") != std::string::npos);
    CHECK(c.request("GET", "/b/3", ok).status == 200);
    CHECK(c.request("GET", "/a/3", ok).status == 200);

    // What needs a restart (here: the listen address) is refused the same way.
    rewrite(yaml("info", "1KiB", true).replace(0, std::string("listen: 127.0.0.1:" + std::to_string(port)).size(),
                                                 "listen: 127.0.0.1:" + std::to_string(free_port())));
    REQUIRE(::kill(px.pid(), SIGHUP) == 0);
    REQUIRE(eventually([&] { return reloads("rejected") == 2; }));
    CHECK(px.log().find("listen changed: listen, admin_listen, workers and store need a restart") != std::string::npos);
    CHECK(c.request("GET", "/b/4", ok).status == 200);
    CHECK(c.connects() == 1);
    CHECK(reloads("applied") == 1);
}

namespace {

namespace fs = std::filesystem;
const fs::path examples = fs::path(IFM_SOURCE_DIR) / "examples";

// The ConfigMap's config.yaml and the proxy container of the Pod in a multi-document manifest.
struct pod_manifest {
    std::string config;
    YAML::Node proxy;
    std::string mount_path;
};

pod_manifest read_pod(const fs::path& file) {
    pod_manifest m;
    std::string configmap;
    for (const auto& doc : YAML::LoadAllFromFile(file.string())) {
        if (doc["kind"].as<std::string>() == "ConfigMap") {
            m.config = doc["data"]["config.yaml"].as<std::string>();
            configmap = doc["metadata"]["name"].as<std::string>();
        }
    }
    for (const auto& doc : YAML::LoadAllFromFile(file.string())) {
        if (doc["kind"].as<std::string>() != "Pod") continue;
        std::string volume;
        for (const auto& v : doc["spec"]["volumes"])
            if (v["configMap"] && v["configMap"]["name"].as<std::string>() == configmap) volume = v["name"].as<std::string>();
        for (const auto& c : doc["spec"]["containers"]) {
            if (c["name"].as<std::string>() != "ifmatch-proxy") continue;
            m.proxy = static_cast<const YAML::Node&>(c);
            for (const auto& vm : c["volumeMounts"])
                if (vm["name"].as<std::string>() == volume) m.mount_path = vm["mountPath"].as<std::string>();
        }
    }
    return m;
}

std::uint16_t port_of(const std::string& yaml_text, const std::string& key) {
    auto node = YAML::Load(yaml_text)[key];
    REQUIRE(node);
    auto text = node.as<std::string>();
    return static_cast<std::uint16_t>(std::stoi(text.substr(text.rfind(':') + 1)));
}

}  // namespace

TEST_CASE("examples: every configuration passes --check-config") {
    int checked = 0;
    for (const auto& entry : fs::directory_iterator(examples)) {
        if (entry.path().extension() != ".yaml") continue;
        CAPTURE(entry.path().string());
        auto r = proxy_process::run_once(read_text_file(entry.path().string()), {"--check-config"});
        INFO(r.log);
        CHECK(r.status == 0);
        CHECK(r.log.find(": ok (") != std::string::npos);
        ++checked;
    }
    CHECK(checked >= 3);   // quickstart, production, sidecar
    auto pod = read_pod(examples / "kubernetes" / "pod.yaml");
    REQUIRE(!pod.config.empty());
    auto r = proxy_process::run_once(pod.config, {"--check-config"});
    INFO(r.log);
    CHECK(r.status == 0);
}

TEST_CASE("examples: the Pod and compose manifests agree with the configurations they carry") {
    // Kubernetes: probes on the admin port, container ports = listen/admin_listen, the config
    // file where --config looks for it.
    auto pod = read_pod(examples / "kubernetes" / "pod.yaml");
    REQUIRE(pod.proxy);
    std::map<std::string, int> ports;
    for (const auto& p : pod.proxy["ports"]) ports[p["name"].as<std::string>()] = p["containerPort"].as<int>();
    CHECK(ports["http"] == port_of(pod.config, "listen"));
    CHECK(ports["admin"] == port_of(pod.config, "admin_listen"));
    CHECK(YAML::Load(pod.config)["admin_listen"].as<std::string>().starts_with("0.0.0.0:"));   // kubelet probes the Pod IP
    CHECK(pod.proxy["readinessProbe"]["httpGet"]["path"].as<std::string>() == "/readyz");
    CHECK(pod.proxy["readinessProbe"]["httpGet"]["port"].as<std::string>() == "admin");
    CHECK(pod.proxy["livenessProbe"]["httpGet"]["path"].as<std::string>() == "/healthz");
    CHECK(pod.proxy["livenessProbe"]["httpGet"]["port"].as<std::string>() == "admin");
    auto args = pod.proxy["args"].as<std::vector<std::string>>();
    REQUIRE(args.size() == 2);
    CHECK(args[0] == "--config");
    CHECK(args[1] == pod.mount_path + "/config.yaml");
    CHECK(pod.proxy["securityContext"]["runAsNonRoot"].as<bool>());

    // Compose: the proxy shares the origin's network namespace, whose published ports are the
    // proxy's listen and admin ports; the mounted file is a valid configuration.
    auto compose = YAML::LoadFile((examples / "docker-compose.yml").string());
    auto proxy = compose["services"]["proxy"];
    REQUIRE(proxy);
    CHECK(proxy["network_mode"].as<std::string>() == "service:legacy");
    std::string mounted;
    for (const auto& v : proxy["volumes"]) {
        auto spec = v.as<std::string>();
        if (spec.find(":/etc/ifmatch-proxy/config.yaml") != std::string::npos) mounted = spec.substr(0, spec.find(':'));
    }
    REQUIRE(!mounted.empty());
    auto sidecar = read_text_file((examples / mounted).lexically_normal().string());
    REQUIRE(!sidecar.empty());
    std::set<int> published;
    for (const auto& p : compose["services"]["legacy"]["ports"]) {
        auto spec = p.as<std::string>();
        published.insert(std::stoi(spec.substr(spec.rfind(':') + 1)));
    }
    CHECK(published.count(port_of(sidecar, "listen")) == 1);
    CHECK(published.count(port_of(sidecar, "admin_listen")) == 1);
    auto origin_address = YAML::Load(sidecar)["upstreams"]["legacy"]["address"].as<std::string>();
    CHECK(read_text_file((examples / "nginx-webdav.conf").string()).find("listen " + origin_address + ";") !=
          std::string::npos);
}
