#include "proxy/access_log.hpp"

#include "proxy/problem.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
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

void setup_logging(const config::log_config& cfg) {
    spdlog::set_level(spdlog::level::from_str(cfg.level));
    json_format = cfg.json;
    access_enabled = cfg.access_log;
    if (cfg.access_log) writer();
}

void log_access(const access_entry& e) {
    // Access lines are info messages: a higher log.level silences them too.
    if (!access_enabled || !spdlog::default_logger_raw()->should_log(spdlog::level::info)) return;
    auto ms = static_cast<double>(e.duration.count()) / 1000.0;
    thread_local std::string line;   // reused: no allocation per request once warm
    line.clear();
    auto out = std::back_inserter(line);
    if (json_format) {
        line += "{\"client\":";
        append_json_string(line, e.client);
        line += ",\"method\":";
        append_json_string(line, e.method);
        line += ",\"target\":";
        append_json_string(line, e.target);
        line += ",\"route\":";
        append_json_string(line, e.route);
        line += ",\"upstream\":";
        append_json_string(line, e.upstream);
        fmt::format_to(out, ",\"status\":{},\"bytes\":{},\"duration_ms\":{:.3f},\"precondition\":", e.status,
                       e.bytes, ms);
        append_json_string(line, to_string(e.precondition));
        line += '}';
    } else {
        append_escaped(line, e.client);
        line += " \"";
        append_escaped(line, e.method);
        line += ' ';
        append_escaped(line, e.target);
        fmt::format_to(out, "\" {} {} {:.3f}ms route=", e.status, e.bytes, ms);
        append_escaped(line, e.route);
        line += " upstream=";
        append_escaped(line, e.upstream);
        line += " precondition=";
        line += to_string(e.precondition);
    }
    writer().append(line);
}

}  // namespace ifm::proxy
