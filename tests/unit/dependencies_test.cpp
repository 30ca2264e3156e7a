// Resource dependencies (SPEC §9): path templates, what a write to a path also changes, and the
// loader's checks of routes[].dependencies.
#include "config/config.hpp"
#include "proxy/dependencies.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace cfg = ifm::config;
using ifm::proxy::dependent_paths;
using ifm::proxy::match_path_template;

namespace {

using strings = std::vector<std::string>;

std::string first_error(const std::string& yaml) {
    auto r = cfg::load_string(yaml);
    REQUIRE_FALSE(r.has_value());
    auto errors = r.error();   // by value: keep it alive
    const auto& e = errors.front();
    return e.path + ":" + std::to_string(e.line) + ": " + e.message;
}

std::string route_with(const std::string& dependencies, const std::string& extra = "") {
    return "upstreams:\n  o: { address: 127.0.0.1:8080 }\n"
           "routes:\n"
           "  - upstream: o\n" + extra +
           "    dependencies:\n" + dependencies;
}

}  // namespace

TEST_CASE("dependencies: a template matches whole segments and binds {name} to one non-empty segment") {
    auto m = match_path_template("/users/{id}/email", "/users/7/email");
    REQUIRE(m);
    REQUIRE(m->size() == 1);
    CHECK((*m)[0].first == "id");
    CHECK((*m)[0].second == "7");
    CHECK_FALSE(match_path_template("/users/{id}/email", "/users/7"));
    CHECK_FALSE(match_path_template("/users/{id}/email", "/users/7/email/x"));
    CHECK_FALSE(match_path_template("/users/{id}/email", "/users//email"));
    CHECK_FALSE(match_path_template("/users/{id}/email", "/Users/7/email"));   // paths are case-sensitive
    CHECK(match_path_template("/items", "/items"));
    CHECK_FALSE(match_path_template("/items", "/items/"));
    // Literals compare in the normalized spelling: %7E is "~", a percent-encoded byte stays encoded.
    CHECK(match_path_template("/~docs/{name}", "/~docs/a"));
    CHECK(match_path_template("/caf%c3%a9/{x}", "/caf%C3%A9/1"));
}

TEST_CASE("dependencies: a write's dependent paths, substituted, each once, never the path itself") {
    std::vector<cfg::dependency_rule> rules = {
        {"/users/{id}/email", {"/users/{id}", "/users"}},
        {"/users/{id}/{field}", {"/users/{id}", "/audit/{field}/{id}"}},
        {"/items/{n}", {"/items", "/items/{n}"}},
    };
    CHECK(dependent_paths(rules, "/users/7/email") == strings{"/users/7", "/users", "/audit/email/7"});
    CHECK(dependent_paths(rules, "/users/7/name") == strings{"/users/7", "/audit/name/7"});
    CHECK(dependent_paths(rules, "/items/3") == strings{"/items"});
    CHECK(dependent_paths(rules, "/other").empty());
}

TEST_CASE("config: routes[].dependencies are read and checked with path and line") {
    auto ok = cfg::load_string(route_with("      - { path: \"/users/{id}/email\", invalidates: [\"/users/{id}\", /users] }\n"));
    REQUIRE(ok.has_value());
    REQUIRE(ok->routes[0].dependencies.size() == 1);
    CHECK(ok->routes[0].dependencies[0].path == "/users/{id}/email");
    CHECK(ok->routes[0].dependencies[0].invalidates == strings{"/users/{id}", "/users"});

    CHECK(first_error(route_with("      - { path: \"/users/{id}/email\", invalidates: [\"/users/{uid}\"] }\n")) ==
          "routes[0].dependencies[0].invalidates[0]:6: {uid} is not bound by path '/users/{id}/email'");
    CHECK(first_error(route_with("      - { path: \"users/{id}\", invalidates: [/users] }\n")).starts_with(
        "routes[0].dependencies[0].path:6: expected a path template"));
    CHECK(first_error(route_with("      - { path: \"/a/x{id}\", invalidates: [/users] }\n")).starts_with(
        "routes[0].dependencies[0].path:6: expected a path template"));
    CHECK(first_error(route_with("      - { path: \"/a/{id}/{id}\", invalidates: [/users] }\n")).starts_with(
        "routes[0].dependencies[0].path:6: expected a path template"));
    CHECK(first_error(route_with("      - { path: \"/a//b\", invalidates: [/users] }\n")).starts_with(
        "routes[0].dependencies[0].path:6: expected a path template"));
    CHECK(first_error(route_with("      - { path: /a }\n")) == "routes[0].dependencies[0].invalidates:6: required key missing");
    CHECK(first_error(route_with("      - { path: /a, invalidates: [] }\n")) ==
          "routes[0].dependencies[0].invalidates:6: expected at least one path template");
    CHECK(first_error(route_with("      - { path: /a, invalidates: [/1, /2, /3, /4, /5, /6, /7, /8, /9] }\n")).starts_with(
        "routes[0].dependencies[0].invalidates:6: at most 8 resources"));
    CHECK(first_error(route_with("      - { path: /a, invalidates: [/b], also: 1 }\n")).starts_with(
        "routes[0].dependencies[0]:6: unknown key 'also'"));
    CHECK(first_error(route_with("      - { path: /a, invalidates: [/b] }\n", "    track: false\n")) ==
          "routes[0].dependencies:6: has no effect when track is false");
}
