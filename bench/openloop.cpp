// Open-loop HTTP/1.1 load generator for bench/run (its latency part).
//
// wrk is closed-loop: a connection sends its next request only when the previous answer is in,
// so a slow server is offered less load and its queueing never shows. Here request i is due at
// t0 + i/rate whatever the server does. Requests go out over a fixed pool of keep-alive
// connections (no pipelining); a request due while every connection is busy waits in a queue,
// and its latency is measured from the time it was due (its intended send time), so the wait in
// the queue counts (no coordinated omission).
//
//   openloop --port P --path /x --rate R --duration S [--connections 32] [--warmup 1]
//            [--drain 2] [--lag-ms 2] [--host 127.0.0.1]
//
// Prints one JSON line. Latencies are over the requests due in the measured window (after the
// warm-up). "achieved_rps" is the responses received within the window per second;
// "over_capacity" is set when that falls below 97 % of the offered rate (the queue grew).
// "generator_limited" is set when more than 1 % of the requests were noticed by this program more
// than --lag-ms after they were due (it was short of CPU, not the server). Requests still
// unanswered --drain seconds after the window are counted in "unfinished" and enter the
// percentiles with their age then (a lower bound).
//
// Single-threaded, epoll. Build: g++ -O2 -std=c++20 -o openloop openloop.cpp
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace {

int64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "openloop: %s: %s\n", what, std::strerror(errno));
    std::exit(2);
}

struct Options {
    std::string host = "127.0.0.1";
    int port = 0;
    std::string path = "/";
    double rate = 0;
    double duration = 3;
    double warmup = 1;
    double drain = 2;
    double lag_ms = 2;
    int connections = 32;
};

struct Job {
    int64_t due;
    bool recorded;
};

struct Conn {
    int fd = -1;
    bool busy = false;
    bool want_out = false;   // EPOLLOUT watched: the request did not go out in one send
    Job job{};
    size_t written = 0;
    std::string in;
};

struct Stats {
    std::vector<int64_t> latency;   // ns, recorded requests
    std::vector<int64_t> lag;       // ns, how late the loop noticed each recorded request
    uint64_t sent = 0, completed = 0, status_errors = 0, errors = 0, in_window = 0, reconnects = 0;
    size_t queue_max = 0;
};

// Result of parsing a response at the start of `in`: 0 incomplete, -1 malformed, else the bytes
// it takes. `status` and `close` are filled in when complete.
long parse_response(const std::string& in, int& status, bool& close) {
    size_t head_end = in.find("\r\n\r\n");
    if (head_end == std::string::npos)
        return in.size() > 65536 ? -1 : 0;
    std::string_view head(in.data(), head_end);
    if (head.size() < 12 || head.substr(0, 5) != "HTTP/")
        return -1;
    status = std::atoi(std::string(head.substr(9, 3)).c_str());
    long length = -1;
    bool chunked = false;
    close = head.substr(0, 8) == "HTTP/1.0";
    size_t pos = head.find("\r\n");
    while (pos != std::string_view::npos && pos < head.size()) {
        size_t next = head.find("\r\n", pos + 2);
        std::string_view line = head.substr(pos + 2, (next == std::string_view::npos ? head.size() : next) - pos - 2);
        pos = next;
        size_t colon = line.find(':');
        if (colon == std::string_view::npos)
            continue;
        std::string name(line.substr(0, colon));
        for (auto& c : name)
            c = char(std::tolower(static_cast<unsigned char>(c)));
        std::string_view value = line.substr(colon + 1);
        while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
            value.remove_prefix(1);
        std::string v(value);
        for (auto& c : v)
            c = char(std::tolower(static_cast<unsigned char>(c)));
        if (name == "content-length")
            length = std::atol(v.c_str());
        else if (name == "transfer-encoding")
            chunked = v.find("chunked") != std::string::npos;
        else if (name == "connection")
            close = v.find("close") != std::string::npos ? true : (v.find("keep-alive") != std::string::npos ? false : close);
    }
    size_t body = head_end + 4;
    if (status == 204 || status == 304 || (status >= 100 && status < 200))
        return long(body);
    if (chunked) {
        size_t p = body;
        for (;;) {
            size_t eol = in.find("\r\n", p);
            if (eol == std::string::npos)
                return 0;
            long size = std::strtol(in.c_str() + p, nullptr, 16);
            if (size < 0)
                return -1;
            p = eol + 2;
            if (size == 0) {   // trailers, then an empty line
                for (;;) {
                    size_t e = in.find("\r\n", p);
                    if (e == std::string::npos)
                        return 0;
                    if (e == p)
                        return long(e + 2);
                    p = e + 2;
                }
            }
            if (in.size() < p + size_t(size) + 2)
                return 0;
            p += size_t(size) + 2;
        }
    }
    if (length < 0)
        return -1;   // body delimited by the close: not used by the bench's servers
    return in.size() >= body + size_t(length) ? long(body + size_t(length)) : 0;
}

class Generator {
public:
    explicit Generator(const Options& o) : o_(o) {
        request_ = "GET " + o.path + " HTTP/1.1\r\nHost: " + o.host + ":" + std::to_string(o.port) +
                   "\r\nUser-Agent: openloop\r\n\r\n";
        addr_.sin_family = AF_INET;
        addr_.sin_port = htons(uint16_t(o.port));
        if (inet_pton(AF_INET, o.host.c_str(), &addr_.sin_addr) != 1) {
            std::fprintf(stderr, "openloop: --host must be an IPv4 address\n");
            std::exit(2);
        }
        ep_ = epoll_create1(EPOLL_CLOEXEC);
        if (ep_ < 0)
            die("epoll_create1");
        conns_.resize(size_t(o.connections));
        for (size_t i = 0; i < conns_.size(); ++i) {
            if (!open(i))
                die("connect");
            idle_.push_back(i);
        }
    }

    void run() {
        const int64_t interval_ns_x1000 = int64_t(1e12 / o_.rate);   // ns per request, times 1000
        const uint64_t warm_n = uint64_t(std::llround(o_.warmup * o_.rate));
        const uint64_t total = warm_n + uint64_t(std::llround(o_.duration * o_.rate));
        const int64_t lag_limit = int64_t(o_.lag_ms * 1e6);
        s_.latency.reserve(total - warm_n);
        s_.lag.reserve(total - warm_n);
        const int64_t t0 = now_ns() + 1'000'000;
        auto due = [&](uint64_t i) { return t0 + int64_t(i) * interval_ns_x1000 / 1000; };
        w0_ = due(warm_n);
        w1_ = due(total);
        const int64_t drain_end = w1_ + int64_t(o_.drain * 1e9);
        uint64_t next = 0;
        epoll_event events[256];
        for (;;) {
            int64_t now = now_ns();
            while (next < total && due(next) <= now) {
                Job j{due(next), next >= warm_n};
                if (j.recorded)
                    s_.lag.push_back(now - j.due);
                queue_.push_back(j);
                ++next;
            }
            while (!queue_.empty() && !idle_.empty()) {
                size_t c = idle_.back();
                idle_.pop_back();
                Job j = queue_.front();
                queue_.pop_front();
                send_on(c, j);
            }
            s_.queue_max = std::max(s_.queue_max, queue_.size());
            if (now >= w1_ && !backlog_taken_) {
                backlog_at_end_ = queue_.size();
                backlog_taken_ = true;
            }
            if (next == total && (outstanding_recorded() == 0 || now >= drain_end))
                break;
            int64_t wake = next < total ? due(next) : std::min(drain_end, now + 10'000'000);
            if (!backlog_taken_)
                wake = std::min(wake, w1_);
            int64_t wait = std::max<int64_t>(wake - now, 0);
            timespec ts{time_t(wait / 1'000'000'000), long(wait % 1'000'000'000)};
            int n = epoll_pwait2(ep_, events, 256, &ts, nullptr);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                die("epoll_pwait2");
            }
            for (int k = 0; k < n; ++k) {
                size_t c = events[k].data.u64;
                if ((events[k].events & EPOLLOUT) && conns_[c].busy && conns_[c].want_out)
                    flush(c);
                if (events[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                    on_readable(c);
            }
        }
        // Whatever is still unanswered or unsent enters with its age now (a lower bound).
        const int64_t end = now_ns();
        for (auto& c : conns_)
            if (c.busy && c.job.recorded) {
                s_.latency.push_back(end - c.job.due);
                ++unfinished_;
            }
        for (auto& j : queue_)
            if (j.recorded) {
                s_.latency.push_back(end - j.due);
                ++unfinished_;
            }
        report(total - warm_n, lag_limit);
    }

private:
    // Recorded requests picked up (each has its lag entry) that neither completed nor failed.
    uint64_t outstanding_recorded() const { return s_.lag.size() - s_.completed - s_.errors; }

    bool open(size_t i) {
        Conn& c = conns_[i];
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            die("socket");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        // Blocking connect (loopback: immediate), then non-blocking I/O.
        if (connect(fd, reinterpret_cast<sockaddr*>(&addr_), sizeof addr_) != 0) {
            ::close(fd);
            return false;
        }
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
            die("fcntl");
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = i;
        if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0)
            die("epoll_ctl");
        c.fd = fd;
        c.busy = false;
        c.want_out = false;
        c.written = 0;
        c.in.clear();
        return true;
    }

    void close_conn(size_t i) {
        Conn& c = conns_[i];
        if (c.fd >= 0) {
            epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
            ::close(c.fd);
        }
        c.fd = -1;
        c.busy = false;
    }

    // The request on connection i failed: count it, reconnect, and give the connection back.
    void fail(size_t i) {
        Conn& c = conns_[i];
        if (c.busy && c.job.recorded)
            ++s_.errors;
        close_conn(i);
        reopen(i);
    }

    void reopen(size_t i) {
        ++s_.reconnects;
        open(i);   // if it fails the connection stays closed: send_on() tries again
        idle_.push_back(i);
    }

    void send_on(size_t i, const Job& j) {
        Conn& c = conns_[i];
        if (c.fd < 0 && !open(i)) {
            if (j.recorded)
                ++s_.errors;
            idle_.push_back(i);
            return;
        }
        c.busy = true;
        c.job = j;
        c.written = 0;
        if (j.recorded)
            ++s_.sent;
        flush(i);
    }

    void flush(size_t i) {
        Conn& c = conns_[i];
        while (c.written < request_.size()) {
            ssize_t n = ::send(c.fd, request_.data() + c.written, request_.size() - c.written, MSG_NOSIGNAL);
            if (n > 0) {
                c.written += size_t(n);
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                watch_out(i, true);
                return;
            }
            fail(i);
            return;
        }
        watch_out(i, false);
    }

    void watch_out(size_t i, bool on) {
        Conn& c = conns_[i];
        if (c.want_out == on)
            return;
        epoll_event ev{};
        ev.events = on ? EPOLLIN | EPOLLOUT : EPOLLIN;
        ev.data.u64 = i;
        epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
        c.want_out = on;
    }

    void on_readable(size_t i) {
        Conn& c = conns_[i];
        if (c.fd < 0)
            return;
        char buf[16384];
        for (;;) {
            ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            if (n <= 0 || !c.busy) {
                // Closed, failed, or bytes nobody asked for. An idle connection is just reopened.
                if (c.busy) {
                    fail(i);
                } else {
                    close_conn(i);
                    std::erase(idle_, i);
                    reopen(i);
                }
                return;
            }
            c.in.append(buf, size_t(n));
            int status = 0;
            bool close = false;
            long used = parse_response(c.in, status, close);
            if (used == 0)
                continue;   // more to come (one response at a time: stop reading once it is in)
            if (used < 0 || size_t(used) != c.in.size()) {
                fail(i);
                return;
            }
            complete(i, status, close);
            return;
        }
    }

    void complete(size_t i, int status, bool close) {
        Conn& c = conns_[i];
        const int64_t t = now_ns();
        if (t >= w0_ && t <= w1_)
            ++s_.in_window;
        if (c.job.recorded) {
            ++s_.completed;
            if (status < 200 || status >= 400)
                ++s_.status_errors;
            s_.latency.push_back(t - c.job.due);
        }
        c.busy = false;
        c.in.clear();
        if (close) {
            close_conn(i);
            reopen(i);
        } else {
            idle_.push_back(i);
        }
    }

    static double pct(const std::vector<int64_t>& sorted, double p) {
        if (sorted.empty())
            return 0;
        size_t rank = size_t(std::ceil(p / 100.0 * double(sorted.size())));
        return double(sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1]) / 1000.0;
    }

    void report(uint64_t scheduled, int64_t lag_limit) {
        auto& l = s_.latency;
        std::sort(l.begin(), l.end());
        std::sort(s_.lag.begin(), s_.lag.end());
        double mean = 0;
        for (auto v : l)
            mean += double(v);
        mean = l.empty() ? 0 : mean / double(l.size()) / 1000.0;
        uint64_t late = uint64_t(s_.lag.end() - std::upper_bound(s_.lag.begin(), s_.lag.end(), lag_limit));
        double late_fraction = s_.lag.empty() ? 0 : double(late) / double(s_.lag.size());
        double window_s = double(w1_ - w0_) / 1e9;
        double achieved = double(s_.in_window) / window_s;
        bool over = achieved < 0.97 * o_.rate || unfinished_ > 0;
        std::printf(
            "{\"target_rps\":%.1f,\"duration_s\":%.3f,\"connections\":%d,\"scheduled\":%llu,\"sent\":%llu,"
            "\"completed\":%llu,\"status_errors\":%llu,\"errors\":%llu,\"unfinished\":%llu,\"reconnects\":%llu,"
            "\"achieved_rps\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
            "\"max_us\":%.1f,\"mean_us\":%.1f,\"lag_p99_us\":%.1f,\"lag_max_us\":%.1f,\"late_fraction\":%.5f,"
            "\"queue_max\":%zu,\"backlog_at_end\":%zu,\"over_capacity\":%s,\"generator_limited\":%s}\n",
            o_.rate, window_s, o_.connections, (unsigned long long)scheduled, (unsigned long long)s_.sent,
            (unsigned long long)s_.completed, (unsigned long long)s_.status_errors, (unsigned long long)s_.errors,
            (unsigned long long)unfinished_, (unsigned long long)(s_.reconnects), achieved, pct(l, 50), pct(l, 90),
            pct(l, 99), pct(l, 99.9), l.empty() ? 0.0 : double(l.back()) / 1000.0, mean, pct(s_.lag, 99),
            s_.lag.empty() ? 0.0 : double(s_.lag.back()) / 1000.0, late_fraction, s_.queue_max, backlog_at_end_,
            over ? "true" : "false", late_fraction > 0.01 ? "true" : "false");
    }

    Options o_;
    std::string request_;
    sockaddr_in addr_{};
    int ep_ = -1;
    std::vector<Conn> conns_;
    std::vector<size_t> idle_;
    std::deque<Job> queue_;
    Stats s_;
    int64_t w0_ = 0, w1_ = 0;
    uint64_t unfinished_ = 0;
    size_t backlog_at_end_ = 0;
    bool backlog_taken_ = false;
};

void usage() {
    std::fprintf(stderr,
                 "usage: openloop --port P --rate R [--path /x] [--duration S] [--connections C] [--warmup S]\n"
                 "                [--drain S] [--lag-ms MS] [--host IPv4]\n");
    std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (i + 1 >= argc)
            usage();
        const char* v = argv[++i];
        if (a == "--port") o.port = std::atoi(v);
        else if (a == "--path") o.path = v;
        else if (a == "--rate") o.rate = std::atof(v);
        else if (a == "--duration") o.duration = std::atof(v);
        else if (a == "--warmup") o.warmup = std::atof(v);
        else if (a == "--drain") o.drain = std::atof(v);
        else if (a == "--lag-ms") o.lag_ms = std::atof(v);
        else if (a == "--connections") o.connections = std::atoi(v);
        else if (a == "--host") o.host = v;
        else usage();
    }
    if (o.port <= 0 || o.rate <= 0 || o.duration <= 0 || o.connections <= 0 || o.warmup < 0)
        usage();
    // Wake-ups on time: the default 50 µs timer slack would be a sizeable part of a loopback
    // request's latency.
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    Generator(o).run();
    return 0;
}
