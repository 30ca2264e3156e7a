// Issue 13 (operations), without sockets: JSON escaping of arbitrary bytes, request ids, the
// access log's timestamp, JSON spdlog lines, and the metrics that must not need a live proxy.
#include "proxy/access_log.hpp"
#include "proxy/metrics.hpp"
#include "proxy/problem.hpp"
#include "proxy/request_id.hpp"
#include "proxy/runtime.hpp"
#include "tests/support/json.hpp"

#include <doctest/doctest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <random>
#include <regex>
#include <set>
#include <sstream>

using namespace ifm::proxy;
using ifm::test::json_string;
using ifm::test::parse_json;

namespace {
std::string json_of(std::string_view s) {
    std::string out;
    append_json_string(out, s);
    return out;
}
}  // namespace

TEST_CASE("JSON strings: well-formed UTF-8 passes, every other byte becomes \\ufffd") {
    CHECK(json_of("plain") == "\"plain\"");
    CHECK(json_of("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") == "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
    CHECK(json_of("a\xff" "b") == "\"a\\ufffdb\"");                  // never valid
    CHECK(json_of("\x80") == "\"\\ufffd\"");                           // stray continuation
    CHECK(json_of("\xc0\xaf") == "\"\\ufffd\\ufffd\"");                // overlong '/'
    CHECK(json_of("\xe0\x80\xaf") == "\"\\ufffd\\ufffd\\ufffd\"");     // overlong, 3 bytes
    CHECK(json_of("\xed\xa0\x80") == "\"\\ufffd\\ufffd\\ufffd\"");     // UTF-16 surrogate
    CHECK(json_of("\xf4\x90\x80\x80") == "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");   // past U+10FFFF
    CHECK(json_of("\xe2\x82") == "\"\\ufffd\\ufffd\"");                // truncated at the end
    CHECK(json_of("\xe2\x82x") == "\"\\ufffd\\ufffdx\"");              // truncated before ASCII
    CHECK(json_of(std::string("\0\x1f\x7f\"\\\n", 6)) == "\"\\u0000\\u001f\\u007f\\\"\\\\\\n\"");
    CHECK(utf8_sequence_length("\xf0\x9f\x98\x80") == 4);
    CHECK(utf8_sequence_length("\xc3") == 0);

    // Whatever the bytes, a strict parser accepts the result and reads back valid text.
    std::string every;
    for (int i = 0; i < 256; ++i) every += static_cast<char>(i);
    for (int i = 0; i < 256; ++i) every += static_cast<char>(255 - i);
    std::string err;
    auto v = parse_json(json_of(every), &err);
    INFO(err);
    REQUIRE(v);
    CHECK(v->is_string());
}

// The escaping as first written, one character at a time: the reference for the one that copies
// runs whole.
std::string json_reference(std::string_view s) {
    std::string out = "\"";
    for (std::size_t i = 0; i < s.size();) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x80) {
            if (auto n = utf8_sequence_length(s.substr(i))) {
                out.append(s.data() + i, n);
                i += n;
            } else {
                out += "\\ufffd";
                ++i;
            }
            continue;
        }
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (c < 0x20 || c == 0x7f) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", c);
                out += buf;
            } else {
                out += static_cast<char>(c);
            }
        }
        ++i;
    }
    return out + "\"";
}

TEST_CASE("JSON strings: a byte that needs care is found in every lane of the 8-byte scan") {
    // Plain runs are looked at 8 bytes at a time: every byte value at every offset of a plain
    // string, so that each lane of the word sees each value (and the tail after the last word).
    for (int c = 0; c < 256; ++c) {
        for (std::size_t at = 0; at < 19; ++at) {
            std::string s(19, 'a');
            s[at] = static_cast<char>(c);
            INFO(c);
            INFO(at);
            CHECK(json_of(s) == json_reference(s));
        }
    }
}

TEST_CASE("JSON strings: runs copied whole give the bytes the one-at-a-time escaping gave") {
    std::mt19937 rng(12);
    // Bytes drawn mostly from the interesting ones: escapes, controls, UTF-8 leads and
    // continuations, DEL; runs of plain ASCII between them.
    static constexpr char special_bytes[] = "\"\\\n\r\t\x01\x1f\x7f\x80\xbf\xc2\xc3\xe2\x82\xac\xed\xa0\xf0\x9f\x98\xf4\x90\xff";
    const std::string special(special_bytes, sizeof special_bytes);   // with the final NUL
    for (int n = 0; n < 3000; ++n) {
        std::string s;
        const int len = static_cast<int>(rng() % 40);
        for (int i = 0; i < len; ++i) {
            if (rng() % 3 == 0)
                s += special[rng() % special.size()];
            else
                s.append(1 + rng() % 5, static_cast<char>('a' + rng() % 26));
        }
        INFO(s);
        CHECK(json_of(s) == json_reference(s));
    }
    // Appends to what is there.
    std::string out = "x";
    append_json_string(out, "caf\xc3\xa9\"");
    CHECK(out == "x\"caf\xc3\xa9\\\"\"");
}

TEST_CASE("problem+json carries request_id, and raw target bytes stay valid JSON") {
    problem p{409, "stale-precondition", "Stale", "d", "/caf\xe9\xff", std::string("\"abc\""), 0};
    auto res = make_problem_response(p, 11, true, false, "req-1");
    CHECK(res["X-Request-Id"] == "req-1");
    std::string err;
    auto v = parse_json(res.body(), &err);
    INFO(res.body() << " " << err);
    REQUIRE(v);
    CHECK(json_string(*v, "request_id") == "req-1");
    CHECK(json_string(*v, "instance") == "/caf\xef\xbf\xbd\xef\xbf\xbd");   // U+FFFD twice
    CHECK(json_string(*v, "current_etag") == "\"abc\"");
    // Without an id, neither the member nor the header.
    auto bare = make_problem_response(p, 11, true, false);
    CHECK(bare.find("X-Request-Id") == bare.end());
    CHECK(bare.body().find("request_id") == std::string::npos);
}

TEST_CASE("X-Request-Id: what is kept, what is generated; traceparent's trace id") {
    CHECK(valid_request_id("abc-123_XYZ.~!"));
    CHECK(valid_request_id(std::string(128, 'a')));
    CHECK_FALSE(valid_request_id(""));
    CHECK_FALSE(valid_request_id(std::string(129, 'a')));
    CHECK_FALSE(valid_request_id("has space"));
    CHECK_FALSE(valid_request_id("tab\there"));
    CHECK_FALSE(valid_request_id("caf\xc3\xa9"));
    CHECK_FALSE(valid_request_id("a\x7f"));

    std::set<std::string> seen;
    static const std::regex hex32("^[0-9a-f]{32}$");
    for (int i = 0; i < 1000; ++i) {
        auto id = generate_request_id();
        CHECK(std::regex_match(id, hex32));
        CHECK(valid_request_id(id));
        seen.insert(id);
    }
    CHECK(seen.size() == 1000);

    const std::string tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    CHECK(trace_id_of(tp) == "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK(trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01").empty());   // invalid id
    CHECK(trace_id_of("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").empty());   // upper case
    CHECK(trace_id_of("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").empty());   // unknown version
    CHECK(trace_id_of(tp.substr(0, 54)).empty());
}

TEST_CASE("access log timestamps are RFC 3339 UTC with milliseconds") {
    std::string out;
    append_timestamp(out, std::chrono::system_clock::time_point(std::chrono::milliseconds(1'700'000'000'123)));
    CHECK(out == "2023-11-14T22:13:20.123Z");
    out.clear();
    append_timestamp(out, std::chrono::system_clock::time_point(std::chrono::milliseconds(1'700'000'000'007)));
    CHECK(out == "2023-11-14T22:13:20.007Z");
}

TEST_CASE("log.json makes the application's own lines ECS JSON too, whatever bytes they carry") {
    std::ostringstream captured;
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(captured);
    auto previous = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("", sink));
    ifm::config::log_config cfg;
    cfg.level = "info";
    cfg.json = true;
    cfg.access_log = false;
    setup_logging(cfg);
    spdlog::warn("upstream \"{}\" said {}", "a\xff\n", "b\x01");
    spdlog::info("plain");
    spdlog::debug("not logged at info");
    cfg.json = false;
    setup_logging(cfg);
    spdlog::info("text again");
    spdlog::set_default_logger(previous);
    ifm::config::log_config quiet;
    quiet.level = "warn";
    quiet.access_log = false;
    setup_logging(quiet);

    std::istringstream lines(captured.str());
    std::vector<std::string> all;
    for (std::string line; std::getline(lines, line);) all.push_back(line);
    REQUIRE(all.size() == 3);
    for (int i = 0; i < 2; ++i) {
        std::string err;
        auto v = parse_json(all[i], &err);
        INFO(all[i] << " " << err);
        REQUIRE(v);
        CHECK(std::regex_match(json_string(*v, "@timestamp"),
                               std::regex(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$)")));
        CHECK(!json_string(*v, "log.level").empty());
        CHECK(json_string(*v, "ecs.version").starts_with("8."));
    }
    auto first = parse_json(all[0]);
    CHECK(json_string(*first, "log.level") == "warning");
    CHECK(json_string(*first, "message") == "upstream \"a\xef\xbf\xbd\n\" said b\x01");
    CHECK(json_string(*parse_json(all[1]), "message") == "plain");
    CHECK(all[2].find("text again") != std::string::npos);   // spdlog's own pattern once more
    CHECK(all[2].front() == '[');
}

TEST_CASE("metrics: outcomes and origin errors by route and upstream; histograms reach 60 s; process_*") {
    ifm::config::config cfg;
    ifm::config::upstream_config up;
    up.name = "legacy";
    up.host = "127.0.0.1";
    up.port = 1;
    cfg.upstreams.push_back(up);
    ifm::config::route_config route;
    route.name = "api";
    route.upstream = "legacy";
    cfg.routes.push_back(route);
    auto rt = make_runtime(cfg);
    metrics m;
    m.bind_routes(*rt);
    m.count_outcome(rt.get(), &rt->cfg.routes[0], outcome::rejected_stale);
    m.count_outcome(rt.get(), &rt->cfg.routes[0], outcome::rejected_stale);
    m.count_outcome(rt.get(), nullptr, outcome::missing);   // no route: the total only
    m.count_origin_error(rt.get(), &rt->cfg.routes[0]);
    m.count_reload(false);
    m.count_problem("lease-too-short");
    m.count_problem("not-a-known-slug");
    auto text = m.render();
    INFO(text);
    CHECK(text.find("ifmatch_route_precondition_outcomes_total{route=\"api\",upstream=\"legacy\",outcome=\"rejected_stale\"} 2\n") !=
          std::string::npos);
    CHECK(text.find("ifmatch_route_precondition_outcomes_total{route=\"api\",upstream=\"legacy\",outcome=\"missing\"} 0\n") !=
          std::string::npos);
    CHECK(text.find("ifmatch_precondition_outcomes_total{outcome=\"rejected_stale\"} 2\n") != std::string::npos);
    CHECK(text.find("ifmatch_precondition_outcomes_total{outcome=\"missing\"} 1\n") != std::string::npos);
    CHECK(text.find("ifmatch_route_origin_errors_total{route=\"api\",upstream=\"legacy\"} 1\n") != std::string::npos);
    CHECK(text.find("ifmatch_origin_errors_total 1\n") != std::string::npos);
    CHECK(text.find("ifmatch_config_last_reload_successful 0\n") != std::string::npos);
    CHECK(text.find("ifmatch_problems_total{type=\"lease-too-short\"} 1\n") != std::string::npos);
    CHECK(text.find("ifmatch_problems_total{type=\"other\"} 1\n") != std::string::npos);
    CHECK(text.find("ifmatch_problems_total{type=\"stale-precondition\"} 0\n") != std::string::npos);
    CHECK(text.find("ifmatch_config_last_reload_success_timestamp_seconds ") != std::string::npos);
    CHECK(text.find("le=\"60\"}") != std::string::npos);
    CHECK(histogram::bounds_us.back() >= 60'000'000);
    for (auto name : {"process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds ",
                      "process_max_fds ", "process_start_time_seconds "})
        CHECK_MESSAGE(text.find(std::string("\n") + name) != std::string::npos, name);
    // The start time is this process's, within a day of now.
    auto at = text.find("\nprocess_start_time_seconds ");
    REQUIRE(at != std::string::npos);
    auto start = std::strtod(text.c_str() + at + 28, nullptr);
    auto now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    CHECK(start <= now + 1);
    CHECK(start > now - 86400);
}
