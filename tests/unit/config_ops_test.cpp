// Configuration additions of issue 13: ${VAR} / ${VAR:-default} interpolation, listen addresses
// that must be IP literals, limits.drain_delay, and the JSON Schema in docs/config.schema.json.
#include "config/config.hpp"
#include "tests/support/json.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

namespace cfg = ifm::config;
using namespace std::chrono_literals;

namespace {

// Sets (or unsets, with nullptr) environment variables for one test, restoring them after.
class env_vars {
public:
    env_vars(std::initializer_list<std::pair<const char*, const char*>> vars) {
        for (auto [name, value] : vars) {
            const char* old = std::getenv(name);
            saved_.push_back({name, old ? std::optional<std::string>(old) : std::nullopt});
            if (value) ::setenv(name, value, 1);
            else ::unsetenv(name);
        }
    }
    ~env_vars() {
        for (auto& [name, old] : saved_) {
            if (old) ::setenv(name.c_str(), old->c_str(), 1);
            else ::unsetenv(name.c_str());
        }
    }

private:
    std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

std::string dump(const std::vector<cfg::error>& errors) {
    std::string out;
    for (const auto& e : errors) out += e.format("test.yaml") + "\n";
    return out;
}

}  // namespace

TEST_CASE("config: ${VAR} and ${VAR:-default} in values, from the environment") {
    env_vars env{{"IFM_T_PORT", "3001"}, {"IFM_T_LEASE", "20s"}, {"IFM_T_EMPTY", ""}, {"IFM_T_UNSET", nullptr},
                 {"IFM_REDIS_URL", nullptr}, {"IFM_REDIS_PASSWORD", nullptr}};
    auto r = cfg::load_string(R"(upstreams:
  legacy: { address: "127.0.0.1:${IFM_T_PORT}", request_timeout: "${IFM_T_UNSET:-5s}" }
routes:
  - upstream: legacy
    name: "${IFM_T_EMPTY:-api}"
    write_lease: ${IFM_T_LEASE}
    match: { path_prefix: "/$${literal}/" }
store: { key_prefix: "p${IFM_T_EMPTY}x" }
)");
    INFO((r ? std::string() : dump(r.error())));
    REQUIRE(r.has_value());
    CHECK(r->upstreams[0].port == 3001);
    CHECK(r->upstreams[0].request_timeout == 5s);    // unset: the default
    CHECK(r->routes[0].name == "api");               // empty: the default too (shell semantics)
    CHECK(r->routes[0].write_lease == 20s);
    CHECK(r->routes[0].match.path_prefix == "/${literal}/");   // $${ escapes
    CHECK(r->store.key_prefix == "px");              // set but empty, no default: empty
}

TEST_CASE("config: an unset ${VAR} without default is an error with its path and line") {
    env_vars env{{"IFM_T_UNSET", nullptr}};
    auto r = cfg::load_string(R"(upstreams:
  legacy: { address: 127.0.0.1:3000 }
routes:
  - upstream: legacy
    write_lease: ${IFM_T_UNSET}
    match: { path_prefix: "/${bad name}/" }
)");
    REQUIRE_FALSE(r.has_value());
    INFO(dump(r.error()));
    REQUIRE(r.error().size() == 2);
    CHECK(r.error()[0].path == "routes[0].write_lease");
    CHECK(r.error()[0].line == 5);
    CHECK(r.error()[0].message.find("IFM_T_UNSET is not set") != std::string::npos);
    CHECK(r.error()[1].path == "routes[0].match.path_prefix");
    CHECK(r.error()[1].line == 6);
    CHECK(r.error()[1].message.find("invalid variable reference") != std::string::npos);
}

TEST_CASE("config: an interpolated value is still validated where it lands, on its line") {
    env_vars env{{"IFM_T_BAD", "soon"}};
    auto r = cfg::load_string(R"(upstreams:
  legacy: { address: 127.0.0.1:3000 }
routes:
  - upstream: legacy
limits:
  idle_timeout: ${IFM_T_BAD}
)");
    REQUIRE_FALSE(r.has_value());
    INFO(dump(r.error()));
    REQUIRE(r.error().size() == 1);
    CHECK(r.error()[0].path == "limits.idle_timeout");
    CHECK(r.error()[0].line == 6);
}

TEST_CASE("config: listen addresses are IP literals (or localhost), never host names") {
    auto r = cfg::load_string(R"(listen: proxy.example.com:8080
admin_listen: admin.internal:9901
upstreams:
  legacy: { address: origin.internal:3000 }
routes:
  - upstream: legacy
)");
    REQUIRE_FALSE(r.has_value());
    INFO(dump(r.error()));
    REQUIRE(r.error().size() == 2);   // the upstream's host name is fine: it is resolved
    CHECK(r.error()[0].path == "listen");
    CHECK(r.error()[0].message.find("not the host name 'proxy.example.com'") != std::string::npos);
    CHECK(r.error()[1].path == "admin_listen");
    for (auto ok : {"listen: 0.0.0.0:8080", "listen: localhost:8080", "listen: \"[::]:8080\"", "listen: \"[::1]:0\""}) {
        CAPTURE(ok);
        auto good = cfg::load_string(std::string(ok) + "\nupstreams:\n  legacy: { address: origin.internal:3000 }\n"
                                                        "routes:\n  - upstream: legacy\n");
        CHECK(good.has_value());
    }
}

TEST_CASE("config: limits.drain_delay defaults to 5s and may be 0ms") {
    const std::string base = "upstreams:\n  legacy: { address: 127.0.0.1:3000 }\nroutes:\n  - upstream: legacy\n";
    auto d = cfg::load_string(base);
    REQUIRE(d.has_value());
    CHECK(d->limits.drain_delay == 5s);
    auto zero = cfg::load_string(base + "limits: { drain_delay: 0ms }\n");
    REQUIRE(zero.has_value());
    CHECK(zero->limits.drain_delay == 0ms);
}

TEST_CASE("config: docs/config.schema.json is json_schema(), and names exactly the loader's keys") {
    auto generated = cfg::json_schema();
    std::ifstream in(std::string(IFM_SOURCE_DIR) + "/docs/config.schema.json");
    REQUIRE(in);
    std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK_MESSAGE(file == generated, "regenerate: build/ifmatch-proxy --print-config-schema > docs/config.schema.json");

    std::string err;
    auto schema = ifm::test::parse_json(generated, &err);
    INFO(err);
    REQUIRE(schema);
    // Walk the schema the way known_keys() spells keys.
    std::set<std::string> in_schema;
    std::function<void(const boost::json::object&, const std::string&)> walk = [&](const boost::json::object& o,
                                                                                      const std::string& prefix) {
        if (auto* props = o.if_contains("properties")) {
            for (const auto& [key, sub] : props->as_object()) {
                const auto& so = sub.as_object();
                std::string path = prefix + std::string(key);
                if (so.at("type") == "object") walk(so, path + ".");
                else if (so.at("type") == "array" && so.at("items").as_object().contains("properties")) walk(so.at("items").as_object(), path + "[].");
                else in_schema.insert(path);
            }
        }
        if (auto* pattern = o.if_contains("patternProperties"))
            for (const auto& [re, sub] : pattern->as_object()) walk(sub.as_object(), prefix + "<name>.");
    };
    walk(schema->as_object(), "");
    std::set<std::string> known;
    for (const auto& k : cfg::known_keys()) known.insert(k);
    CHECK(in_schema == known);
    // Leaves carry a type and what the loader expects.
    const auto& limits = schema->as_object().at("properties").as_object().at("limits").as_object().at("properties").as_object();
    CHECK(limits.at("drain_delay").as_object().at("type") == "string");
    CHECK(std::string(limits.at("drain_delay").as_object().at("description").as_string()).find("duration") != std::string::npos);
    const auto& log = schema->as_object().at("properties").as_object().at("log").as_object().at("properties").as_object();
    CHECK(log.at("json").as_object().at("type") == "boolean");
}
