// Idempotent retries (README "Idempotent retries"): the Idempotency-Key syntax, the fingerprint,
// the stored response's encoding, the memory store's records (the Redis store runs the same
// cases in tests/redis/idempotency_test.cpp) and the route settings.
#include "cache/memory_store.hpp"
#include "config/config.hpp"
#include "proxy/idempotency.hpp"

#include <doctest/doctest.h>

using namespace ifm;
using namespace std::chrono_literals;

TEST_CASE("idempotency: Idempotency-Key is a Structured Field string") {
    CHECK(proxy::parse_idempotency_key("\"8e03978e-40d5-43e8-bc93-6894a57f9324\"") ==
          std::optional<std::string>("8e03978e-40d5-43e8-bc93-6894a57f9324"));
    CHECK(proxy::parse_idempotency_key("  \"a\\\"b\\\\c\"  ") == std::optional<std::string>("a\"b\\c"));
    for (std::string_view bad : {"", "abc", "\"\"", "\"abc", "abc\"", "\"a\"b\"", "\"a\\nb\"", "\"a\\\"",
                                 "\"caf\xc3\xa9\"", "\"tab\there\"", "\"a\";param=1", "token"})
        CHECK_MESSAGE(!proxy::parse_idempotency_key(bad), bad);
    CHECK(proxy::parse_idempotency_key("\"" + std::string(255, 'k') + "\""));
    CHECK(!proxy::parse_idempotency_key("\"" + std::string(256, 'k') + "\""));
}

TEST_CASE("idempotency: the fingerprint changes with every part of the request") {
    auto body_hash = proxy::sha256_hex("body");   // the input holds views: the hash must outlive it
    proxy::fingerprint_input base{"PUT", "res", body_hash, "\"v1\"", "", "", ""};
    auto fp = proxy::request_fingerprint(base);
    CHECK(fp == proxy::request_fingerprint(base));
    CHECK(proxy::sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    auto differs = [&](proxy::fingerprint_input in) { return proxy::request_fingerprint(in) != fp; };
    auto m = base; m.method = "PATCH"; CHECK(differs(m));
    auto r = base; r.resource = "res2"; CHECK(differs(r));
    auto b = base; auto other = proxy::sha256_hex("body2"); b.body_sha256 = other; CHECK(differs(b));
    auto im = base; im.if_match = "\"v2\""; CHECK(differs(im));
    // Fields cannot bleed into each other.
    auto shift = base; shift.if_match = ""; shift.if_none_match = "\"v1\""; CHECK(differs(shift));
}

TEST_CASE("idempotency: a stored response decodes to itself") {
    proxy::stored_response r{201, "\"abc\"", "/docs/7", "application/json", true, "{\"a\":\n1}\r\n"};
    CHECK(proxy::decode_response(proxy::encode_response(r)) == r);
    proxy::stored_response empty{204, "", "", "", false, ""};
    CHECK(proxy::decode_response(proxy::encode_response(empty)) == empty);
    CHECK(!proxy::decode_response("v2\n200\n\n\n\nb\n"));
    CHECK(!proxy::decode_response("v1\n99\n\n\n\nb\n"));
    CHECK(!proxy::decode_response("v1\n200\n\n\n"));
}

TEST_CASE("idempotency: the memory store reserves, refuses, completes, forgets and expires records") {
    auto t = cache::memory_backend::clock::now();
    cache::memory_backend b([&] { return t; });
    using st = cache::idem_status;
    CHECK(b.idem_begin("k", "fp", "o1", 1000ms).status == st::reserved);
    CHECK(b.idem_begin("k", "fp", "o2", 1000ms).status == st::in_flight);
    CHECK(b.idem_begin("k", "other", "o2", 1000ms).status == st::mismatch);
    CHECK(!b.idem_complete("k", "o2", "resp", 60s));   // not the owner
    CHECK(b.idem_complete("k", "o1", "resp", 60s));
    auto done = b.idem_begin("k", "fp", "o3", 1000ms);
    CHECK(done.status == st::completed);
    CHECK(done.response == "resp");
    CHECK(b.idem_begin("k", "other", "o3", 1000ms).status == st::mismatch);
    t += 59s;
    CHECK(b.idem_begin("k", "fp", "o3", 1000ms).status == st::completed);
    t += 1s;   // ttl over: the key is free again
    CHECK(b.idem_begin("k", "other", "o4", 1000ms).status == st::reserved);
    CHECK(!b.idem_forget("k", "o1"));
    CHECK(b.idem_forget("k", "o4"));
    CHECK(b.idem_begin("k", "fp", "o5", 1000ms).status == st::reserved);
    // An in-flight record whose writer died expires after its own (short) TTL.
    t += 1000ms;
    CHECK(b.idem_begin("k", "fp", "o6", 1000ms).status == st::reserved);
    CHECK(!b.idem_complete("k", "o5", "late", 60s));   // the dead writer's completion is ignored
    // Keys are independent.
    CHECK(b.idem_begin("k2", "fp", "o7", 1000ms).status == st::reserved);
}

TEST_CASE("idempotency: route settings, defaults and errors with path and line") {
    std::string base =
        "listen: 127.0.0.1:8080\n"
        "store: { kind: memory }\n"
        "upstreams:\n"
        "  legacy: { address: 127.0.0.1:9000 }\n"
        "routes:\n"
        "  - match: { path_prefix: / }\n"
        "    upstream: legacy\n";
    auto def = config::load_string(base);
    REQUIRE(def.has_value());
    CHECK(!def->routes[0].idempotency.enabled);
    CHECK(def->routes[0].idempotency.ttl == 24h);
    CHECK(def->routes[0].idempotency.max_response_bytes == 64 * 1024);
    auto on = config::load_string(base + "    idempotency: { enabled: true, ttl: 10m, max_response_bytes: 1KiB }\n");
    REQUIRE(on.has_value());
    CHECK(on->routes[0].idempotency.enabled);
    CHECK(on->routes[0].idempotency.ttl == 10min);
    CHECK(on->routes[0].idempotency.max_response_bytes == 1024);

    auto bad = config::load_string(base + "    idempotency:\n      enabled: true\n      ttl: 10ms\n      max_bytes: 1\n");
    REQUIRE(!bad);
    REQUIRE(bad.error().size() == 2);
    CHECK(bad.error()[0].path == "routes[0].idempotency.ttl");
    CHECK(bad.error()[0].line == 10);
    CHECK(bad.error()[1].path == "routes[0].idempotency");   // an unknown key is reported on its map
    CHECK(bad.error()[1].message.find("max_bytes") != std::string::npos);
    CHECK(bad.error()[1].line == 11);
    auto untracked = config::load_string(base + "    track: false\n    idempotency: { enabled: true }\n");
    REQUIRE(!untracked);
    CHECK(untracked.error()[0].path == "routes[0].idempotency.enabled");
    CHECK(untracked.error()[0].message.find("track") != std::string::npos);
}
