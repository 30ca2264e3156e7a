// Issue 13 (operations), in process: the access log that explains a 409 (every line JSON), the
// X-Request-Id contract, traceparent passing through, and the admin listener's /healthz and
// /readyz (workers must turn; readiness is the origin's; cached; draining fails it).
#include "cache/store.hpp"
#include "proxy/access_log.hpp"
#include "proxy/admin.hpp"
#include "proxy/metrics.hpp"
#include "proxy/runtime.hpp"
#include "proxy/worker.hpp"
#include "tests/support/fake_origin.hpp"
#include "tests/support/http_client.hpp"
#include "tests/support/json.hpp"
#include "tests/support/process.hpp"
#include "tests/support/proxy_fixture.hpp"

#include <boost/json/serialize.hpp>
#include <doctest/doctest.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

using namespace ifm::test;
using namespace std::chrono_literals;

namespace {

const std::regex hex32("^[0-9a-f]{32}$");

// Redirects this process's stdout (where the access log and spdlog write) into a file.
class stdout_capture {
public:
    stdout_capture() : path_(dir_.path() + "/stdout") {
        std::fflush(stdout);
        saved_ = ::dup(1);
        file_ = std::fopen(path_.c_str(), "w");
        REQUIRE(file_);
        ::dup2(::fileno(file_), 1);
    }
    ~stdout_capture() { restore(); }
    void restore() {
        if (saved_ < 0) return;
        std::fflush(stdout);
        ::dup2(saved_, 1);
        ::close(saved_);
        saved_ = -1;
        std::fclose(file_);
    }
    // The lines written so far, waiting up to 3 s until there are `n` of them.
    std::vector<std::string> lines(std::size_t n) const {
        std::vector<std::string> out;
        for (int i = 0; i < 300; ++i) {
            std::fflush(stdout);
            out.clear();
            std::ifstream in(path_, std::ios::binary);
            for (std::string line; std::getline(in, line);) out.push_back(line);
            if (out.size() >= n) break;
            std::this_thread::sleep_for(10ms);
        }
        return out;
    }

private:
    temp_dir dir_;
    std::string path_;
    int saved_ = -1;
    FILE* file_ = nullptr;
};

void quiet_logging() {
    ifm::config::log_config quiet;
    quiet.level = "warn";
    quiet.access_log = false;
    ifm::proxy::setup_logging(quiet);
}

}  // namespace

TEST_CASE("access log in JSON: every line parses (any bytes), and a 409's line explains it") {
    proxy_fixture px([](ifm::config::config& c) {
        c.log.level = "info";
        c.log.access_log = true;
        c.log.json = true;
    });
    stdout_capture out;
    http_client c(px.port());
    REQUIRE(c.request("PUT", "/doc", {{"If-None-Match", "*"}}, "v1").status == 201);
    auto tag = c.request("GET", "/doc").header("ETag");
    REQUIRE(!tag.empty());
    auto stale = c.request("PUT", "/doc", {{"If-Match", "\"stale\""}, {"X-Request-Id", "explain-409"}}, "v2");
    REQUIRE(stale.status == 409);
    // A target with bytes that are not UTF-8 (obs-text is legal in a target), and an
    // application line with some too: both must still be valid JSON.
    raw_exchange(px.port(), "GET /plain/caf\xe9\xff HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    spdlog::warn("an application line with a stray byte: \xff");
    auto lines = out.lines(5);   // 4 access lines and the warning
    out.restore();
    quiet_logging();

    REQUIRE(lines.size() >= 5);
    std::optional<boost::json::value> rejected, odd;
    int access = 0, application = 0;
    for (const auto& line : lines) {
        std::string err;
        auto v = parse_json(line, &err);
        INFO("line: " << line << " error: " << err);
        REQUIRE(v);
        REQUIRE(v->is_object());
        CHECK(std::regex_match(json_string(*v, "@timestamp"), std::regex(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$)")));
        CHECK(!json_string(*v, "log.level").empty());
        if (json_string(*v, "log.logger") == "access") {
            ++access;
            CHECK(v->as_object().contains("http.request.id"));
            CHECK(v->as_object().contains("ifmatch.total_ms"));
            if (json_string(*v, "http.request.id") == "explain-409") rejected = v;
            if (json_string(*v, "url.original").starts_with("/plain/caf")) odd = v;
        } else {
            ++application;
        }
    }
    CHECK(access == 4);
    CHECK(application >= 1);
    REQUIRE(rejected);
    const auto& r = rejected->as_object();
    INFO(boost::json::serialize(r));
    CHECK(json_string(*rejected, "http.request.method") == "PUT");
    CHECK(json_string(*rejected, "url.original") == "/doc");
    CHECK(r.at("http.response.status_code").as_int64() == 409);
    CHECK(json_string(*rejected, "ifmatch.route") == "tracked");
    CHECK(json_string(*rejected, "ifmatch.upstream") == "origin");
    CHECK(!json_string(*rejected, "ifmatch.key").empty());
    CHECK(json_string(*rejected, "ifmatch.if_match") == "\"stale\"");
    CHECK_FALSE(r.contains("ifmatch.if_none_match"));   // not sent
    CHECK(json_string(*rejected, "ifmatch.current_etag") == tag);
    CHECK(json_string(*rejected, "ifmatch.outcome") == "rejected_stale");
    CHECK(r.at("ifmatch.store_ms").is_number());
    CHECK(r.at("ifmatch.origin_ms").to_number<double>() == 0);   // rejected before the origin
    CHECK(r.at("ifmatch.total_ms").to_number<double>() > 0);
    CHECK(r.at("event.duration").to_number<double>() > 0);
    REQUIRE(odd);
    CHECK(json_string(*odd, "url.original") == "/plain/caf\xef\xbf\xbd\xef\xbf\xbd");
    CHECK(odd->as_object().at("ifmatch.origin_ms").to_number<double>() > 0);   // forwarded: origin time counted
}

TEST_CASE("access log in text: timestamp first, request id, key and validators, still one line") {
    proxy_fixture px([](ifm::config::config& c) {
        c.log.level = "info";
        c.log.access_log = true;
    });
    stdout_capture out;
    http_client c(px.port());
    REQUIRE(c.request("PUT", "/t", {{"If-None-Match", "*"}, {"X-Request-Id", "text-1"}}, "v1").status == 201);
    auto lines = out.lines(1);
    out.restore();
    quiet_logging();
    REQUIRE(lines.size() == 1);
    INFO(lines[0]);
    CHECK(std::regex_search(lines[0], std::regex(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z 127\.0\.0\.1 "PUT /t" 201 )")));
    CHECK(lines[0].find(" id=text-1") != std::string::npos);
    CHECK(lines[0].find(" key=") != std::string::npos);
    CHECK(lines[0].find(" if_none_match=* ") != std::string::npos);
    CHECK(lines[0].find(" precondition=revalidated ") != std::string::npos);   // nothing was known of /t
    CHECK(lines[0].find(" store_ms=") != std::string::npos);
}

TEST_CASE("X-Request-Id: a valid one is kept, others replaced; sent to the origin and on every response") {
    proxy_fixture px;
    auto& origin = px.origin();
    http_client c(px.port());
    auto last_id = [&] { return origin.requests().back().header("x-request-id"); };

    auto kept = c.request("GET", "/plain/a", {{"x-fake-status", "200"}, {"X-Request-Id", "client-chosen.42"}});
    CHECK(kept.header("X-Request-Id") == "client-chosen.42");
    CHECK(kept.header_count("X-Request-Id") == 1);
    CHECK(last_id() == "client-chosen.42");

    for (std::string bad : {std::string("has space"), std::string(129, 'x'), std::string("")}) {
        CAPTURE(bad);
        auto r = c.request("GET", "/plain/b", {{"x-fake-status", "200"}, {"X-Request-Id", bad}});
        auto id = r.header("X-Request-Id");
        CHECK(std::regex_match(id, hex32));
        CHECK(last_id() == id);
    }
    auto g1 = c.request("GET", "/plain/c", {{"x-fake-status", "200"}}).header("X-Request-Id");
    auto g2 = c.request("GET", "/plain/c", {{"x-fake-status", "200"}}).header("X-Request-Id");
    CHECK(std::regex_match(g1, hex32));
    CHECK(g1 != g2);
    // The origin's own X-Request-Id does not replace ours.
    auto o = c.request("GET", "/plain/d", {{"x-fake-status", "200"}, {"x-fake-header", "X-Request-Id: origin-made"}});
    CHECK(std::regex_match(o.header("X-Request-Id"), hex32));

    // The proxy's own answers: header and problem body agree.
    REQUIRE(c.request("PUT", "/r", {{"If-None-Match", "*"}}, "v1").status == 201);
    auto rejected = c.request("PUT", "/r", {{"If-Match", "\"nope\""}, {"X-Request-Id", "mine"}}, "v2");
    CHECK(rejected.status == 409);
    CHECK(rejected.header("X-Request-Id") == "mine");
    auto body = parse_json(rejected.body);
    REQUIRE(body);
    CHECK(json_string(*body, "request_id") == "mine");
    // Even for a request whose header could not be parsed.
    auto bad = raw_exchange(px.port(), "GET /x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n");
    INFO(bad);
    std::smatch m;
    REQUIRE(std::regex_search(bad, m, std::regex("X-Request-Id: ([0-9a-f]{32})\r\n")));
    CHECK(bad.find("\"request_id\":\"" + m[1].str() + "\"") != std::string::npos);
}

TEST_CASE("traceparent and tracestate reach the origin untouched") {
    proxy_fixture px;
    http_client c(px.port());
    const std::string tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const std::string ts = "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7";
    CHECK(c.request("GET", "/plain/t", {{"x-fake-status", "200"}, {"traceparent", tp}, {"tracestate", ts}}).status == 200);
    auto seen = px.origin().requests().back();
    CHECK(seen.header("traceparent") == tp);
    CHECK(seen.header("tracestate") == ts);
    // Tracked routes too (the proxy's own revalidation aside, the client's request is forwarded).
    CHECK(c.request("PUT", "/tr", {{"If-None-Match", "*"}, {"traceparent", tp}}, "v").status == 201);
    CHECK(px.origin().requests().back().header("traceparent") == tp);
}

namespace {

// An admin listener over workers whose event loops the test runs (or not).
struct admin_env {
    fake_origin origin;
    ifm::proxy::metrics stats;
    std::unique_ptr<ifm::cache::store_factory> stores;
    std::shared_ptr<const ifm::proxy::runtime> rt;
    std::vector<std::unique_ptr<ifm::proxy::worker>> workers;
    std::vector<std::thread> threads;
    std::unique_ptr<ifm::proxy::admin_server> admin;

    explicit admin_env(std::uint16_t origin_port = 0) {
        auto cfg = make_test_config(origin_port ? origin_port : origin.port());
        stores = ifm::cache::make_store_factory(cfg.store);
        rt = ifm::proxy::make_runtime(cfg);
        for (unsigned i = 0; i < 2; ++i) workers.push_back(std::make_unique<ifm::proxy::worker>(rt, *stores, stats, i));
        std::vector<ifm::proxy::worker*> ws;
        for (auto& w : workers) ws.push_back(w.get());
        admin = std::make_unique<ifm::proxy::admin_server>(
            ifm::proxy::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0), rt, *stores, stats, ws);
    }
    void run_worker(std::size_t i) {
        auto& w = *workers[i];
        threads.emplace_back([&w] {
            auto guard = boost::asio::make_work_guard(w.ioc);
            w.ioc.run();
        });
    }
    ~admin_env() {
        admin.reset();
        for (auto& w : workers) w->ioc.stop();
        for (auto& t : threads) t.join();
    }
    response get(const std::string& target) {
        http_client c(admin->port());
        return c.request("GET", target);
    }
};

}  // namespace

TEST_CASE("/healthz: 503 while a worker's event loop does not turn, 200 once every one does") {
    admin_env env;
    env.run_worker(0);   // worker 1 never runs: stuck, as far as anyone can tell
    auto stuck = env.get("/healthz");
    CHECK(stuck.status == 503);
    CHECK(stuck.body.find("worker 1 did not answer") != std::string::npos);
    env.run_worker(1);
    auto ok = env.get("/healthz");
    CHECK(ok.status == 200);
    CHECK(ok.body.find("\"ok\"") != std::string::npos);
}

TEST_CASE("/readyz: the origin decides, the store is reported, the answer is cached, draining fails it") {
    admin_env env;
    env.run_worker(0);
    env.run_worker(1);
    auto r = env.get("/readyz");
    INFO(r.body);
    CHECK(r.status == 200);
    auto body = parse_json(r.body);
    REQUIRE(body);
    CHECK(json_string(*body, "status") == "ready");
    CHECK(json_string(body->as_object().at("upstreams"), "origin") == "ok");
    const auto& store = body->as_object().at("store").as_object();
    CHECK(json_string(store, "kind") == "memory");
    CHECK(store.at("reachable").as_bool());
    CHECK(store.contains("recovering"));

    // Probes within a second share one check: one origin connect, not five.
    auto before = env.origin.connections_accepted();
    for (int i = 0; i < 5; ++i) CHECK(env.get("/readyz").status == 200);
    CHECK(env.origin.connections_accepted() - before <= 1);

    env.admin->begin_drain();
    auto draining = env.get("/readyz");
    CHECK(draining.status == 503);
    CHECK(draining.body.find("\"reason\":\"draining\"") != std::string::npos);
    CHECK(env.get("/healthz").status == 200);   // alive while draining
    CHECK(env.get("/metrics").status == 200);
}

TEST_CASE("/readyz: 503 naming the upstream whose port refuses connections") {
    admin_env env(free_port());   // nothing listens there
    env.run_worker(0);
    env.run_worker(1);
    auto r = env.get("/readyz");
    CHECK(r.status == 503);
    CHECK(r.body.find("\"reason\":\"upstream origin: ") != std::string::npos);
}

TEST_CASE("an upstream name that does not resolve at start: the proxy starts, answers 502, /readyz says why") {
    proxy_fixture px([](ifm::config::config& c) {
        c.upstreams[0].host = "no-such-origin.invalid";
        c.admin_listen = ifm::config::endpoint{"127.0.0.1", 0};
    });
    http_client c(px.port());
    auto r = c.request("GET", "/plain/x");
    CHECK(r.status == 502);
    CHECK(std::regex_match(r.header("X-Request-Id"), hex32));
    http_client admin(px.server().admin_port());
    auto ready = admin.request("GET", "/readyz");
    CHECK(ready.status == 503);
    CHECK(ready.body.find("upstream origin: ") != std::string::npos);
}

namespace {

namespace fs = std::filesystem;
const fs::path monitoring = fs::path(IFM_SOURCE_DIR) / "examples" / "monitoring";

// Every metric name a live proxy exports: family names from TYPE lines, and sample names (the
// histogram's _bucket/_sum/_count).
std::set<std::string> exported_names(std::uint16_t admin_port, std::string* text = nullptr) {
    http_client c(admin_port);
    auto r = c.request("GET", "/metrics");
    REQUIRE(r.status == 200);
    if (text) *text = r.body;
    std::set<std::string> names;
    std::istringstream in(r.body);
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with("# TYPE ")) {
            std::istringstream l(line.substr(7));
            std::string name;
            l >> name;
            names.insert(name);
        } else if (!line.empty() && line[0] != '#') {
            names.insert(line.substr(0, line.find_first_of("{ ")));
        }
    }
    return names;
}

// The metric names a PromQL expression uses (ours all start with ifmatch_ or process_).
std::set<std::string> metrics_in(const std::string& expr) {
    static const std::regex name(R"(\b((?:ifmatch|process)_[a-zA-Z0-9_]+)\b)");
    std::set<std::string> out;
    for (std::sregex_iterator it(expr.begin(), expr.end(), name), end; it != end; ++it) out.insert((*it)[1]);
    return out;
}

bool have_promtool() { return std::system("command -v promtool >/dev/null 2>&1") == 0; }

// Runs a shell command; returns its exit status and output.
std::pair<int, std::string> run_command(const std::string& cmd) {
    std::string out;
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    REQUIRE(p);
    char buf[4096];
    while (auto n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    int status = ::pclose(p);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

struct live_proxy {
    proxy_fixture px{[](ifm::config::config& c) { c.admin_listen = ifm::config::endpoint{"127.0.0.1", 0}; }};
    std::string text;
    std::set<std::string> names;
    live_proxy() {
        http_client c(px.port());
        c.request("PUT", "/m", {{"If-Match", "\"x\""}}, "v");   // a judged write and a problem
        names = exported_names(px.server().admin_port(), &text);
    }
};

}  // namespace

TEST_CASE("/metrics passes promtool check metrics") {
    live_proxy live;
    REQUIRE(live.names.count("process_cpu_seconds_total"));
    if (!have_promtool()) {
        MESSAGE("promtool not installed (Debian package prometheus, see scripts/setup): check skipped");
        return;
    }
    temp_dir dir;
    auto path = dir.path() + "/metrics.txt";
    std::ofstream(path) << live.text;
    auto [status, out] = run_command("promtool check metrics < " + path);
    INFO(out);
    CHECK(status == 0);
}

TEST_CASE("examples/monitoring: the alert rules pass promtool and name only metrics the proxy exports") {
    live_proxy live;
    auto rules_file = (monitoring / "alerts.yaml").string();
    auto doc = YAML::LoadFile(rules_file);
    std::set<std::string> alerts;
    for (const auto& group : doc["groups"]) {
        for (const auto& rule : group["rules"]) {
            auto name = rule["alert"].as<std::string>();
            auto expr = rule["expr"].as<std::string>();
            CAPTURE(name);
            alerts.insert(name);
            auto used = metrics_in(expr);
            CHECK(!used.empty());
            for (const auto& m : used) CHECK_MESSAGE(live.names.count(m), "not exported: " << m);
        }
    }
    for (auto wanted : {"IfmatchConflictRateSpike", "IfmatchStoreDown", "IfmatchOriginErrors", "IfmatchLeaseTooShort"})
        CHECK_MESSAGE(alerts.count(wanted), "missing alert " << wanted);
    if (!have_promtool()) {
        MESSAGE("promtool not installed (Debian package prometheus, see scripts/setup): rules check skipped");
        return;
    }
    auto [status, out] = run_command("promtool check rules " + rules_file);
    INFO(out);
    CHECK(status == 0);
}

TEST_CASE("examples/monitoring: the Grafana dashboard loads and every expression names exported metrics") {
    live_proxy live;
    std::ifstream in(monitoring / "grafana-dashboard.json");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::string err;
    auto dash = parse_json(text, &err);
    INFO(err);
    REQUIRE(dash);
    REQUIRE(dash->as_object().contains("panels"));
    int exprs = 0;
    for (const auto& panel : dash->as_object().at("panels").as_array()) {
        CHECK(!json_string(panel, "title").empty());
        for (const auto& target : panel.as_object().at("targets").as_array()) {
            auto expr = json_string(target, "expr");
            CAPTURE(expr);
            ++exprs;
            auto used = metrics_in(expr);
            CHECK(!used.empty());
            for (const auto& m : used) CHECK_MESSAGE(live.names.count(m), "not exported: " << m);
        }
    }
    CHECK(exprs >= 10);
}
