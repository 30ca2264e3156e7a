// Logging: one access-log line per request (text or JSON), control characters escaped so a
// request can never forge a log line.
#pragma once

#include "config/config.hpp"
#include "proxy/precondition.hpp"

#include <chrono>
#include <cstdint>
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
};

// Sets the default logger's level and the access log's format. Safe to call again on reload.
void setup_logging(const config::log_config& cfg);

void log_access(const access_entry& e);

// Escapes bytes outside printable ASCII as \xNN (and backslash as \\) for text logs.
std::string escape_for_log(std::string_view s);

}  // namespace ifm::proxy
