#include "proxy/access_log.hpp"

#include "proxy/problem.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <iterator>
#include <mutex>
#include <stop_token>
#include <thread>

#include <unistd.h>

namespace ifm::proxy {

namespace {
std::atomic<bool> json_format{false};
std::atomic<bool> access_enabled{true};

// Access lines go to stdout in batches: spdlog's stdout sink flushes every line (one write(2)
// per request, under a lock every worker shares). A line waits at most `flush_delay`; a full
// buffer is written at once by the worker that filled it, so a stalled stdout still holds the
// workers back instead of growing memory.
class access_writer {
public:
    static constexpr auto flush_delay = std::chrono::milliseconds(20);
    static constexpr std::size_t max_buffered = 64 * 1024;

    access_writer() : flusher_([this](std::stop_token st) { run(st); }) {}
    ~access_writer() {
        flusher_.request_stop();
        flusher_.join();
        std::lock_guard lk(mu_);
        write_out();
    }

    void append(std::string_view line) {
        std::lock_guard lk(mu_);
        bool was_empty = buf_.empty();
        buf_.append(line);
        buf_ += '\n';
        if (buf_.size() >= max_buffered)
            write_out();
        else if (was_empty)
            cv_.notify_one();
    }

private:
    void run(std::stop_token st) {
        std::unique_lock lk(mu_);
        while (!st.stop_requested()) {
            if (!cv_.wait(lk, st, [&] { return !buf_.empty(); })) break;
            // Let the lines of the next few milliseconds join this write.
            cv_.wait_for(lk, st, flush_delay, [] { return false; });
            write_out();
        }
    }

    // Called with mu_ held.
    void write_out() {
        std::size_t done = 0;
        while (done < buf_.size()) {
            auto n = ::write(STDOUT_FILENO, buf_.data() + done, buf_.size() - done);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;   // stdout closed or failing: drop the lines rather than spin
            done += static_cast<std::size_t>(n);
        }
        buf_.clear();
    }

    std::mutex mu_;
    std::condition_variable_any cv_;
    std::string buf_;
    std::jthread flusher_;   // last: started once the members it uses exist
};

access_writer& writer() {
    static access_writer w;
    return w;
}

void append_escaped(std::string& out, std::string_view s) {
    static constexpr char hex[] = "0123456789abcdef";
    for (unsigned char c : s) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c < 0x20 || c >= 0x7f || c == '"') {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xf];
        } else {
            out += static_cast<char>(c);
        }
    }
}
}  // namespace

std::string escape_for_log(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    append_escaped(out, s);
    return out;
}

void append_timestamp(std::string& out, std::chrono::system_clock::time_point t) {
    using namespace std::chrono;
    auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count();
    auto secs = static_cast<std::time_t>(ms / 1000);
    // gmtime_r and strftime once per second and thread, not once per line.
    thread_local std::time_t cached = -1;
    thread_local char prefix[32];
    if (secs != cached) {
        std::tm tm{};
        ::gmtime_r(&secs, &tm);
        std::strftime(prefix, sizeof prefix, "%Y-%m-%dT%H:%M:%S", &tm);
        cached = secs;
    }
    out += prefix;
    char frac[8];
    std::snprintf(frac, sizeof frac, ".%03dZ", static_cast<int>(ms % 1000));
    out += frac;
}

namespace {

constexpr std::string_view ecs_version = "8.11.0";

// spdlog's own lines as ECS JSON, so that log.json makes every line of stdout one JSON object.
class json_formatter final : public spdlog::formatter {
public:
    void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
        std::string line;
        line.reserve(128 + msg.payload.size());
        line += "{\"@timestamp\":\"";
        append_timestamp(line, msg.time);
        line += "\",\"log.level\":";
        auto level = spdlog::level::to_string_view(msg.level);
        append_json_string(line, std::string_view(level.data(), level.size()));
        line += ",\"log.logger\":";
        append_json_string(line, msg.logger_name.size() ? std::string_view(msg.logger_name.data(), msg.logger_name.size())
                                                        : std::string_view("ifmatch-proxy"));
        line += ",\"message\":";
        append_json_string(line, std::string_view(msg.payload.data(), msg.payload.size()));
        fmt::format_to(std::back_inserter(line), ",\"process.thread.id\":{},\"ecs.version\":\"{}\"}}\n", msg.thread_id,
                       ecs_version);
        dest.append(line.data(), line.data() + line.size());
    }
    std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<json_formatter>(); }
};

void json_field(std::string& line, std::string_view name, std::string_view value) {
    line += ",\"";
    line += name;
    line += "\":";
    append_json_string(line, value);
}

void text_field(std::string& line, std::string_view name, std::string_view value) {
    line += ' ';
    line += name;
    line += '=';
    append_escaped(line, value);
}

double to_ms(std::chrono::microseconds d) { return static_cast<double>(d.count()) / 1000.0; }

}  // namespace

void setup_logging(const config::log_config& cfg) {
    spdlog::set_level(spdlog::level::from_str(cfg.level));
    if (cfg.json) spdlog::set_formatter(std::make_unique<json_formatter>());
    else spdlog::set_formatter(std::make_unique<spdlog::pattern_formatter>());   // spdlog's default
    json_format = cfg.json;
    access_enabled = cfg.access_log;
    if (cfg.access_log) writer();
}

void log_access(const access_entry& e) {
    // Access lines are info messages: a higher log.level silences them too.
    if (!access_enabled || !spdlog::default_logger_raw()->should_log(spdlog::level::info)) return;
    thread_local std::string line;   // reused: no allocation per request once warm
    line.clear();
    auto out = std::back_inserter(line);
    auto now = std::chrono::system_clock::now();
    if (json_format) {
        line += "{\"@timestamp\":\"";
        append_timestamp(line, now);
        line += "\",\"log.level\":\"info\",\"log.logger\":\"access\",\"message\":\"access\"";
        json_field(line, "client.address", e.client);
        json_field(line, "http.request.method", e.method);
        json_field(line, "url.original", e.target);
        if (!e.request_id.empty()) json_field(line, "http.request.id", e.request_id);
        if (!e.trace_id.empty()) json_field(line, "trace.id", e.trace_id);
        fmt::format_to(out, ",\"http.response.status_code\":{},\"http.response.body.bytes\":{},\"event.duration\":{}",
                       e.status, e.bytes, static_cast<std::int64_t>(e.duration.count()) * 1000);
        json_field(line, "ifmatch.route", e.route);
        json_field(line, "ifmatch.upstream", e.upstream);
        if (!e.key.empty()) json_field(line, "ifmatch.key", e.key);
        if (e.if_match) json_field(line, "ifmatch.if_match", *e.if_match);
        if (e.if_none_match) json_field(line, "ifmatch.if_none_match", *e.if_none_match);
        if (e.current_etag) json_field(line, "ifmatch.current_etag", *e.current_etag);
        json_field(line, "ifmatch.outcome", to_string(e.precondition));
        if (e.invalidated) fmt::format_to(out, ",\"ifmatch.invalidated\":{}", e.invalidated);
        fmt::format_to(out, ",\"ifmatch.store_ms\":{:.3f},\"ifmatch.origin_ms\":{:.3f},\"ifmatch.total_ms\":{:.3f},"
                            "\"ecs.version\":\"{}\"}}",
                       to_ms(e.store_time), to_ms(e.origin_time), to_ms(e.duration), ecs_version);
    } else {
        append_timestamp(line, now);
        line += ' ';
        append_escaped(line, e.client);
        line += " \"";
        append_escaped(line, e.method);
        line += ' ';
        append_escaped(line, e.target);
        fmt::format_to(out, "\" {} {} {:.3f}ms", e.status, e.bytes, to_ms(e.duration));
        text_field(line, "route", e.route);
        text_field(line, "upstream", e.upstream);
        text_field(line, "precondition", to_string(e.precondition));
        if (!e.request_id.empty()) text_field(line, "id", e.request_id);
        if (!e.trace_id.empty()) text_field(line, "trace", e.trace_id);
        if (!e.key.empty()) text_field(line, "key", e.key);
        if (e.if_match) text_field(line, "if_match", *e.if_match);
        if (e.if_none_match) text_field(line, "if_none_match", *e.if_none_match);
        if (e.current_etag) text_field(line, "current_etag", *e.current_etag);
        if (e.invalidated) fmt::format_to(out, " invalidated={}", e.invalidated);
        fmt::format_to(out, " store_ms={:.3f} origin_ms={:.3f}", to_ms(e.store_time), to_ms(e.origin_time));
    }
    writer().append(line);
}

}  // namespace ifm::proxy
