// Logging: one access-log line per request (text or JSON), control characters escaped so a
// request can never forge a log line. With log.json every line is one JSON object whose field
// names follow the Elastic Common Schema (ECS 8.x, flat dotted keys as ecs-logging writes them;
// ours under `ifmatch.*`), the application's own spdlog lines included.
#pragma once

#include "config/config.hpp"
#include "proxy/precondition.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ifm::proxy {

struct access_entry {
    std::string_view client;
    std::string_view method;
    std::string_view target;
    std::string_view route;      // "-" when no route matched
    std::string_view upstream;   // "-" when nothing was forwarded
    unsigned status = 0;
    std::uint64_t bytes = 0;     // response body bytes sent to the client
    std::chrono::microseconds duration{0};
    outcome precondition = outcome::not_judged;
    // Correlation and the story of a judged write (why a 409): absent ones are left out.
    std::string_view request_id;
    std::string_view trace_id;                      // from traceparent, when well-formed
    std::string_view key;                           // resource key; empty when untracked
    std::optional<std::string_view> if_match;       // as the client sent them
    std::optional<std::string_view> if_none_match;
    std::optional<std::string_view> current_etag;   // the validator a rejection named
    std::chrono::microseconds store_time{0};        // summed over the request's store calls
    std::chrono::microseconds origin_time{0};       // summed over its origin exchanges
    // Other resources the write made unknown (its WebDAV Destination, the route's dependencies).
    std::size_t invalidated = 0;
};

// Sets the default logger's level and the access log's format. Safe to call again on reload.
void setup_logging(const config::log_config& cfg);

void log_access(const access_entry& e);

// RFC 3339 UTC with milliseconds ("2026-12-04T17:33:07.123Z").
void append_timestamp(std::string& out, std::chrono::system_clock::time_point t);

// Escapes bytes outside printable ASCII as \xNN (and backslash as \\) for text logs.
std::string escape_for_log(std::string_view s);

}  // namespace ifm::proxy
