#include "proxy/access_log.hpp"

#include "proxy/problem.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>

namespace ifm::proxy {

namespace {
std::atomic<bool> json_format{false};
std::atomic<bool> access_enabled{true};

std::shared_ptr<spdlog::logger> access_logger() {
    static auto logger = [] {
        auto l = spdlog::stdout_logger_mt("access");
        l->set_pattern("%v");
        return l;
    }();
    return logger;
}
}  // namespace

std::string escape_for_log(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (unsigned char c : s) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c < 0x20 || c >= 0x7f || c == '"') {
            char buf[5];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

void setup_logging(const config::log_config& cfg) {
    spdlog::set_level(spdlog::level::from_str(cfg.level));
    json_format = cfg.json;
    access_enabled = cfg.access_log;
    access_logger();
}

void log_access(const access_entry& e) {
    if (!access_enabled) return;
    auto ms = static_cast<double>(e.duration.count()) / 1000.0;
    if (json_format) {
        std::string line = "{\"client\":";
        append_json_string(line, e.client);
        line += ",\"method\":";
        append_json_string(line, e.method);
        line += ",\"target\":";
        append_json_string(line, e.target);
        line += ",\"route\":";
        append_json_string(line, e.route);
        line += ",\"upstream\":";
        append_json_string(line, e.upstream);
        line += ",\"status\":" + std::to_string(e.status) + ",\"bytes\":" + std::to_string(e.bytes);
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.3f", ms);
        line += ",\"duration_ms\":";
        line += buf;
        line += ",\"precondition\":";
        append_json_string(line, to_string(e.precondition));
        line += '}';
        access_logger()->info(line);
    } else {
        access_logger()->info("{} \"{} {}\" {} {} {:.3f}ms route={} upstream={} precondition={}",
                              escape_for_log(e.client), escape_for_log(e.method),
                              escape_for_log(e.target), e.status, e.bytes, ms,
                              escape_for_log(e.route), escape_for_log(e.upstream),
                              to_string(e.precondition));
    }
}

}  // namespace ifm::proxy
