#include "cache/redis_connection.hpp"

#include "cache/memory_store.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/container/small_vector.hpp>

#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace ifm::cache {

namespace {

using clock = std::chrono::steady_clock;
using boost::system::error_code;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

error_code errc(store_errc e) { return make_error_code(e); }

// Servers that refused INFO server (restart_detection_off()): every worker's connection to one.
std::mutex blind_mutex;
std::set<std::string> blind_targets;
std::atomic<std::size_t> blind_count{0};

// Per server: how many of our scripts its ifmatch module runs, as last said (note_module), and
// how many servers run some (module_servers()).
std::mutex module_mutex;
std::map<std::string, std::size_t> module_said;
std::atomic<std::size_t> module_count{0};

// Says once per server and process (not once per worker and connection) which scripts its
// ifmatch module runs: true when `used` differs from what was last said for `target`.
bool note_module(const std::string& target, std::size_t used) {
    std::lock_guard lock(module_mutex);
    auto [it, fresh] = module_said.try_emplace(target, used);
    if (!fresh && it->second == used) return false;
    it->second = used;
    module_count.store(static_cast<std::size_t>(std::count_if(module_said.begin(), module_said.end(),
                                                              [](const auto& e) { return e.second > 0; })),
                       std::memory_order_relaxed);
    return true;
}

// Records whether `target` answers INFO with a run_id; true when it newly stopped answering
// (the caller warns: once per server, not per worker).
bool note_restart_detection(const std::string& target, bool on) {
    std::lock_guard lock(blind_mutex);
    bool changed = on ? blind_targets.erase(target) > 0 : blind_targets.insert(target).second;
    blind_count.store(blind_targets.size(), std::memory_order_relaxed);
    return changed && !on;
}

std::optional<std::string> percent_decode(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out.push_back(s[i]);
            continue;
        }
        if (i + 2 >= s.size()) return std::nullopt;
        unsigned v = 0;
        auto [p, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
        if (ec != std::errc{} || p != s.data() + i + 3) return std::nullopt;
        out.push_back(static_cast<char>(v));
        i += 2;
    }
    return out;
}

template <class Int>
bool parse_int(std::string_view s, Int& out) {
    if (s.empty()) return false;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && p == s.data() + s.size();
}

// The value of one "name:value" line of an INFO reply; "" if absent.
std::string_view info_field(std::string_view info, std::string_view name) {
    for (std::size_t pos = 0; pos < info.size();) {
        auto end = std::min(info.find('\n', pos), info.size());
        auto line = info.substr(pos, end - pos);
        if (line.ends_with('\r')) line.remove_suffix(1);
        if (line.size() > name.size() && line.starts_with(name) && line[name.size()] == ':')
            return line.substr(name.size() + 1);
        pos = end + 1;
    }
    return {};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// URL, scripts

std::size_t module_servers() {
    return module_count.load(std::memory_order_relaxed);
}

std::size_t restart_detection_off() {
    return blind_count.load(std::memory_order_relaxed);
}

std::string redis_endpoint::describe() const {
    if (unix_socket) return "unix://" + path + (db ? "?db=" + std::to_string(db) : "");
    auto h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return "redis://" + h + ":" + std::to_string(port) + "/" + std::to_string(db);
}

boost::system::result<redis_endpoint, std::string> parse_redis_url(std::string_view url) {
    redis_endpoint ep;
    auto parse_db = [&](std::string_view text) -> bool {
        return parse_int(text, ep.db) && ep.db >= 0;
    };
    if (url.starts_with("unix://")) {
        ep.unix_socket = true;
        auto rest = url.substr(7);
        auto q = rest.find('?');
        ep.path = std::string(rest.substr(0, q));
        if (ep.path.empty() || ep.path.front() != '/')
            return std::string("unix socket URL needs an absolute path: unix:///path/to.sock");
        if (q != std::string_view::npos) {
            auto query = rest.substr(q + 1);
            if (!query.starts_with("db=") || !parse_db(query.substr(3)))
                return std::string("unix socket URL: expected ?db=N after the path");
        }
        return ep;
    }
    if (url.starts_with("rediss://")) return std::string("rediss:// (TLS) is not supported");
    if (!url.starts_with("redis://"))
        return std::string("expected redis://host:port/db or unix:///path");
    auto rest = url.substr(8);
    auto slash = rest.find('/');
    auto authority = rest.substr(0, slash);
    if (slash != std::string_view::npos) {
        auto path = rest.substr(slash + 1);
        if (!path.empty() && !parse_db(path))
            return std::string("the path of a redis:// URL is the database number");
    }
    if (auto at = authority.rfind('@'); at != std::string_view::npos) {
        auto userinfo = authority.substr(0, at);
        authority = authority.substr(at + 1);
        auto colon = userinfo.find(':');
        // "user:password", ":password", or (Redis < 6 style) a bare password
        auto user = colon == std::string_view::npos ? std::string_view{} : userinfo.substr(0, colon);
        auto password = colon == std::string_view::npos ? userinfo : userinfo.substr(colon + 1);
        auto u = percent_decode(user);
        auto p = percent_decode(password);
        if (!u || !p) return std::string("bad percent-encoding in the URL's user or password");
        ep.user = *u;
        ep.password = *p;
    }
    std::string_view port_text;
    if (authority.starts_with("[")) {
        auto close = authority.find(']');
        if (close == std::string_view::npos) return std::string("unterminated [IPv6] host");
        ep.host = std::string(authority.substr(1, close - 1));
        auto after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') return std::string("garbage after [IPv6] host");
            port_text = after.substr(1);
        }
    } else {
        auto colon = authority.find(':');
        ep.host = std::string(authority.substr(0, colon));
        if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
    }
    if (ep.host.empty()) return std::string("missing host");
    if (!port_text.empty() || authority.ends_with(":")) {
        unsigned port = 0;
        if (!parse_int(port_text, port) || port == 0 || port > 65535)
            return std::string("bad port");
        ep.port = static_cast<std::uint16_t>(port);
    }
    return ep;
}

std::string sha1_hex(std::string_view data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(data.data(), data.size(), md, &len, EVP_sha1(), nullptr);
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(2 * len);
    for (unsigned i = 0; i < len; ++i) {
        out.push_back(digits[md[i] >> 4]);
        out.push_back(digits[md[i] & 0xf]);
    }
    return out;
}

lua_script::lua_script(std::string_view n, std::string_view src, std::string_view module_cmd)
    : name(n), source(src), sha1(sha1_hex(src)), module_command(module_cmd) {}

// ---------------------------------------------------------------------------------------------
// The transport. One `link` per connection made: its socket, the bytes to write and the bytes
// read, and one `slot` per command sent and not answered yet, in the order sent (Redis answers
// in order). Handlers hold the link, so its buffers outlive the operations that use them after
// the connection dropped it.

// In the frame of the command's coroutine: where its reply goes.
struct redis_connection::waiter {
    std::optional<redis_reply> reply;   // empty: answered by the connection going away
    error_code ec;
    result<redis_reply> take();         // what the command returns
};

struct redis_connection::slot {
    // The command's coroutine: where its reply goes, and how to resume it. Null once it gave up
    // (timed out) or for a command whose reply nobody wants (ASKING): the reply is read and
    // dropped.
    waiter* w = nullptr;
    clock::time_point deadline{};
    // Moved out (constructed from) only: Boost 1.81's move assignment recurses (async_send).
    net::any_completion_handler<void()> resume;
};

struct redis_connection::link {
    explicit link(const net::any_io_executor& ex) : sock(ex) {}
    net::generic::stream_protocol::socket sock;
    std::string out;            // commands queued this turn (written at its end)
    std::string writing;        // what an async_write under way writes
    bool flush_posted = false;
    bool write_pending = false;
    bool dead = false;
    std::string in;             // bytes read, [in_begin, in_end) not parsed yet
    std::size_t in_begin = 0, in_end = 0;
    std::deque<slot> pending;   // one per command sent and not answered, in order
};

namespace {

constexpr std::size_t read_chunk = 16 * 1024;
constexpr std::string_view asking_command = "*1\r\n$6\r\nASKING\r\n";

// TCP keep-alive as hiredis set it (redisKeepAlive: idle 15 s, then 3 probes 5 s apart), and no
// Nagle delay: a command must not wait for the previous one's acknowledgement.
void tune_tcp(int fd) {
    int on = 1, idle = 15, interval = 5, count = 3;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    if (::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) != 0) return;
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}

}  // namespace

void redis_connection::drop_link() {
    ready_ = false;
    if (auto l = std::move(link_)) {
        l->dead = true;
        error_code ignored;
        l->sock.close(ignored);   // aborts the pending read wait and write
        // Every waiting command fails with `unavailable`, resumed through the executor: this
        // may run inside a command's coroutine or in close(), never inline.
        for (auto& s : l->pending) {
            if (!s.w) continue;
            s.w->ec = errc(store_errc::unavailable);
            net::post(executor_, std::move(s.resume));
        }
        l->pending.clear();
    }
    wake_.cancel();   // the run loop notices the connection is gone
}

void redis_connection::lost(const std::shared_ptr<link>& l, std::string why) {
    if (l != link_) return;   // already dropped
    last_error_ = std::move(why);
    drop_link();
}

void redis_connection::flush_soon(const std::shared_ptr<link>& l) {
    if (l->flush_posted || l->write_pending) return;   // the flush or the write under way takes it
    l->flush_posted = true;
    net::post(executor_, [self = shared_from_this(), l] { self->flush(l); });
}

// Writes at once what the turn queued (the socket is non-blocking); only what the socket does
// not take goes through an asynchronous write, which waits for room.
void redis_connection::flush(const std::shared_ptr<link>& l) {
    l->flush_posted = false;
    if (l->dead || l->write_pending || l->out.empty()) return;
    error_code ec;
    const auto n = l->sock.write_some(net::buffer(l->out), ec);
    if (ec && ec != net::error::would_block && ec != net::error::try_again) {
        lost(l, "write failed: " + ec.message());
        return;
    }
    l->out.erase(0, ec ? 0 : n);
    if (l->out.empty()) return;
    l->write_pending = true;
    std::swap(l->writing, l->out);
    l->out.clear();
    net::async_write(l->sock, net::buffer(l->writing),
                     [self = shared_from_this(), l](const error_code& wec, std::size_t) {
                         l->write_pending = false;
                         // Kept for the next large write, unless it was very large.
                         if (l->writing.capacity() > 4 * read_chunk) std::string().swap(l->writing);
                         l->writing.clear();
                         if (l->dead) return;
                         if (wec) return self->lost(l, "write failed: " + wec.message());
                         if (!l->out.empty()) self->flush(l);
                     });
}

// Readiness, then reads until the socket has nothing more (would_block). Asio's epoll is
// edge-triggered: a wait completes once for what arrived, and the next one only for what comes
// after. A short read is not enough to stop at: a server's FIN that came with its last reply
// (CLIENT KILL, QUIT, a refusal) would then go unseen until the next command failed.
void redis_connection::wait_readable(const std::shared_ptr<link>& l) {
    l->sock.async_wait(net::socket_base::wait_read, [self = shared_from_this(), l](const error_code& ec) {
        if (l->dead) return;
        if (ec) return self->lost(l, "read failed: " + ec.message());
        self->on_readable(l);
    });
}

void redis_connection::on_readable(const std::shared_ptr<link>& l) {
    // Resumed after the parse: a resumed command may queue more, or drop the link.
    boost::container::small_vector<net::any_completion_handler<void()>, 8> answered;
    bool answered_any = false;
    for (;;) {
        if (l->in_begin == l->in_end) {
            l->in_begin = l->in_end = 0;
            // A large reply (INFO, a big value) grew the buffer: give it back once it is parsed.
            if (l->in.size() > 4 * read_chunk) std::string().swap(l->in);
        } else if (l->in_begin > 0 && l->in.size() - l->in_end < read_chunk / 4) {
            std::memmove(l->in.data(), l->in.data() + l->in_begin, l->in_end - l->in_begin);
            l->in_end -= l->in_begin;
            l->in_begin = 0;
        }
        if (l->in.size() - l->in_end < read_chunk / 4) l->in.resize(std::max(l->in.size() * 2, read_chunk));
        const std::size_t room = l->in.size() - l->in_end;
        error_code ec;
        const auto n = l->sock.read_some(net::buffer(l->in.data() + l->in_end, room), ec);
        if (ec == net::error::would_block || ec == net::error::try_again) break;
        if (ec) {
            lost(l, ec == net::error::eof ? std::string("connection closed by the server")
                                          : "read failed: " + ec.message());
            break;
        }
        l->in_end += n;
        // Every whole reply goes to the command at the front.
        bool bad = false;
        while (l->in_begin < l->in_end) {
            redis_reply reply;
            auto r = parse_reply(std::string_view(l->in.data() + l->in_begin, l->in_end - l->in_begin), reply);
            if (r.status == resp_status::incomplete) break;
            if (r.status == resp_status::bad || l->pending.empty()) {
                bad = true;
                break;
            }
            l->in_begin += r.used;
            answered_any = true;
            auto& s = l->pending.front();
            if (s.w) {
                s.w->reply = std::move(reply);
                answered.push_back(std::move(s.resume));
            }
            l->pending.pop_front();
        }
        if (bad) {
            lost(l, l->pending.empty() ? "a reply no command asked for" : "not a RESP reply");
            break;
        }
        // Even after a short read: the server's FIN may have come with its last reply, and an
        // edge-triggered wait would not see it again.
    }
    if (answered_any) last_progress_ = clock::now();   // once per read, not per reply
    if (!l->dead) wait_readable(l);
    for (auto& h : answered) std::move(h)();
}

void redis_connection::arm_deadline(clock::time_point at) {
    if (deadline_armed_ && deadline_at_ <= at) return;
    deadline_armed_ = true;
    deadline_at_ = at;
    deadline_.expires_at(at);
    deadline_.async_wait([w = weak_from_this(), at](const error_code& ec) {
        auto self = w.lock();
        if (!self || ec == net::error::operation_aborted || self->deadline_at_ != at) return;
        self->deadline_armed_ = false;
        self->on_deadline();
    });
}

// Times out every command past its deadline (its slot stays, to take the reply when it comes),
// then arms the timer for the next one.
void redis_connection::on_deadline() {
    auto l = link_;
    if (!l) return;
    const auto now = clock::now();
    boost::container::small_vector<net::any_completion_handler<void()>, 8> expired;
    auto next = clock::time_point::max();
    for (auto& s : l->pending) {
        if (!s.w) continue;
        if (s.deadline <= now) {
            s.w->ec = errc(store_errc::timeout);
            s.w = nullptr;
            expired.push_back(std::move(s.resume));
        } else {
            next = std::min(next, s.deadline);
        }
    }
    if (!expired.empty() && !l->pending.empty() && now - last_progress_ >= opts_.connect_timeout) {
        // A connection that answers nothing for this long is dead or wedged (a hung peer does
        // not close the socket): drop it so that the run loop reconnects.
        last_error_ = "no reply for " + std::to_string(opts_.connect_timeout.count()) + " ms";
        spdlog::warn("redis: {} from {}; dropping the connection", last_error_, opts_.endpoint.describe());
        drop_link();
    } else if (next != clock::time_point::max()) {
        arm_deadline(next);
    }
    for (auto& h : expired) std::move(h)();
}

std::shared_ptr<redis_connection> redis_connection::create(net::any_io_executor ex,
                                                           redis_options opts) {
    return std::shared_ptr<redis_connection>(new redis_connection(std::move(ex), std::move(opts)));
}

redis_connection::redis_connection(net::any_io_executor ex, redis_options opts)
    : executor_(std::move(ex)), opts_(std::move(opts)), wake_(executor_), deadline_(executor_) {}

redis_connection::~redis_connection() {
    close();
}

void redis_connection::start() {
    if (started_ || closed_) return;
    started_ = true;
    net::co_spawn(executor_, run_connection(shared_from_this()), [](std::exception_ptr e) {
        if (!e) return;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& x) {
            spdlog::error("redis: connection loop failed: {}", x.what());
        }
    });
}

void redis_connection::close() {
    if (closed_) return;
    closed_ = true;
    if (link_) spdlog::info("redis: closing the connection to {}", opts_.endpoint.describe());
    drop_link();
    deadline_.cancel();
    wake_.cancel();
    for (auto* t : ready_waiters_) t->cancel();
}

void redis_connection::reconnect(std::string reason) {
    if (closed_ || !link_) return;
    last_error_ = std::move(reason);
    drop_link();
}

net::awaitable<bool> redis_connection::async_wait_ready(std::chrono::milliseconds timeout) {
    auto self = shared_from_this();
    if (ready_ || closed_) co_return connected();
    net::steady_timer t(executor_);
    t.expires_after(timeout);
    // Unlisted however the frame ends (also destroyed unresumed with its io_context).
    struct listed {
        std::vector<net::steady_timer*>& list;
        net::steady_timer* timer;
        ~listed() { std::erase(list, timer); }
    } guard{ready_waiters_, &t};
    ready_waiters_.push_back(&t);
    co_await t.async_wait(use_tuple);
    co_return connected();
}

// ---------------------------------------------------------------------------------------------

net::awaitable<void> redis_connection::run_connection(std::shared_ptr<redis_connection> self) {
    auto& c = *self;
    auto where = c.opts_.endpoint.describe();
    auto backoff = c.opts_.backoff_min;
    bool ever_connected = false;
    bool failing = false;
    for (std::size_t attempt = 0; !c.closed_; ++attempt) {
        c.refused_now_ = false;
        auto ec = co_await c.async_connect_once(attempt);
        if (c.closed_) break;
        if (!c.refused_now_) {
            c.refusal_.clear();
            c.refused_ = {};
        }
        if (auto now = c.opts_.endpoint.describe(); now != where) {
            // The locator named another server (a failover): try it without the old backoff.
            where = std::move(now);
            backoff = c.opts_.backoff_min;
            failing = false;
        }
        if (!ec) {
            if (ever_connected) {
                c.reconnects_.fetch_add(1, std::memory_order_relaxed);
                spdlog::info("redis: reconnected to {}", where);
            } else {
                spdlog::info("redis: connected to {}", where);
            }
            ever_connected = true;
            failing = false;
            backoff = c.opts_.backoff_min;
            ++c.session_;
            c.ready_ = true;
            for (auto* t : c.ready_waiters_) t->cancel();
            while (c.link_ && !c.closed_) {
                c.wake_.expires_at(clock::time_point::max());
                co_await c.wake_.async_wait(use_tuple);
            }
            c.ready_ = false;
            if (c.closed_) break;
            spdlog::warn("redis: lost the connection to {}{}{}; reconnecting", where,
                         c.last_error_.empty() ? "" : ": ", c.last_error_);
        } else if (!failing) {
            failing = true;
            spdlog::warn("redis: cannot connect to {}: {}; retrying (backoff up to {} ms)", where,
                         c.last_error_, c.opts_.backoff_max.count());
        } else {
            spdlog::debug("redis: cannot connect to {}: {}", where, c.last_error_);
        }
        c.last_error_.clear();
        c.wake_.expires_after(backoff);
        co_await c.wake_.async_wait(use_tuple);
        backoff = std::min(backoff * 2, c.opts_.backoff_max);
    }
    c.ready_ = false;
}

net::awaitable<error_code> redis_connection::async_connect_once(std::size_t attempt) {
    if (opts_.locator) {
        auto located = co_await opts_.locator->async_locate();
        if (closed_) co_return errc(store_errc::unavailable);
        if (!located) {
            last_error_ = located.error();
            co_return errc(store_errc::unavailable);
        }
        opts_.endpoint.unix_socket = false;
        opts_.endpoint.host = located->host;
        opts_.endpoint.port = located->port;
    }
    const auto& ep = opts_.endpoint;
    net::generic::stream_protocol::endpoint target;
    if (ep.unix_socket) {
        target = net::local::stream_protocol::endpoint(ep.path);
    } else {
        error_code aec;
        auto addr = net::ip::make_address(ep.host, aec);
        if (!aec) {
            target = net::ip::tcp::endpoint(addr, ep.port);
        } else {
            net::ip::tcp::resolver resolver(executor_);
            auto [rec, results] =
                co_await resolver.async_resolve(ep.host, std::to_string(ep.port), use_tuple);
            if (closed_) co_return errc(store_errc::unavailable);
            if (rec || results.empty()) {
                last_error_ = "cannot resolve " + ep.host + ": " + rec.message();
                co_return errc(store_errc::unavailable);
            }
            auto it = results.begin();
            std::advance(it, attempt % results.size());  // try each address in turn
            target = it->endpoint();
        }
    }
    auto l = std::make_shared<link>(executor_);
    error_code oec;
    l->sock.open(target.protocol(), oec);
    if (oec) {
        last_error_ = "cannot open a socket: " + oec.message();
        co_return errc(store_errc::unavailable);
    }
    link_ = l;   // close() and drop_link() abort the connect from here on
    // The connect raced against connect_timeout. The flag outlives this frame: a timer whose
    // handler is already queued when the connect completes still runs after we return.
    auto timed_out = std::make_shared<bool>(false);
    net::steady_timer timer(executor_);
    timer.expires_after(opts_.connect_timeout);
    timer.async_wait([timed_out, l](const error_code& ec) {
        if (ec) return;
        *timed_out = true;
        error_code ignored;
        l->sock.cancel(ignored);
    });
    auto [cec] = co_await l->sock.async_connect(target, use_tuple);
    timer.cancel();
    if (closed_ || link_ != l) co_return errc(store_errc::unavailable);
    if (*timed_out || cec) {
        last_error_ = *timed_out ? std::string("connect timed out") : cec.message();
        drop_link();
        co_return errc(*timed_out ? store_errc::timeout : store_errc::unavailable);
    }
    if (!ep.unix_socket) tune_tcp(l->sock.native_handle());
    // Reads and writes are made when the socket is ready, and must never block.
    l->sock.non_blocking(true, oec);
    if (oec) {
        last_error_ = "cannot make the socket non-blocking: " + oec.message();
        drop_link();
        co_return errc(store_errc::unavailable);
    }
    wait_readable(l);
    auto hec = co_await async_handshake();
    if (hec) {
        drop_link();
        co_return hec;
    }
    if (closed_ || link_ != l) co_return errc(store_errc::unavailable);
    co_return error_code{};
}

net::awaitable<error_code> redis_connection::async_handshake() {
    const auto& ep = opts_.endpoint;
    const auto timeout = opts_.connect_timeout;
    std::vector<std::vector<std::string>> steps;
    if (!ep.password.empty()) {
        if (ep.user.empty())
            steps.push_back(detail::argv_of("AUTH", ep.password));
        else
            steps.push_back(detail::argv_of("AUTH", ep.user, ep.password));
    }
    if (ep.db != 0) steps.push_back(detail::argv_of("SELECT", std::to_string(ep.db)));
    // A sentinel is sent no INFO: PING tells whether it wants a password we did not give.
    if (opts_.sentinel) steps.push_back(detail::argv_of("PING"));
    for (auto& argv : steps) {
        auto what = argv[0];
        auto r = co_await async_send(std::move(argv), timeout);
        if (!r) {
            last_error_ = what + ": " + r.error().message();
            co_return r.error();
        }
        if (r->is_error()) {
            last_error_ = what + ": " + r->str;
            if (what == "AUTH" || r->str.starts_with("NOAUTH") || r->str.starts_with("WRONGPASS")) {
                refusal_ = r->str;
                refused_now_ = true;
                last_error_ = (opts_.sentinel ? "the sentinel refused auth (" : "the server refused auth (") +
                              r->str + (opts_.sentinel ? "): check store.sentinel_password and store.sentinel_username"
                                                       : "): check the user and password of store.url");
            }
            co_return errc(store_errc::protocol);
        }
    }
    if (!opts_.client_name.empty()) {
        // Only for operators' CLIENT LIST; an old or restricted server may refuse it.
        auto r = co_await async_send(detail::argv_of("CLIENT", "SETNAME", opts_.client_name), timeout);
        if (!r) co_return r.error();
    }
    if (opts_.require_master) {
        // A sentinel's answer can be stale (a failover in progress, or a sentinel on the wrong
        // side of a partition): never write to a replica.
        auto role = detail::argv_of("ROLE");
        auto r = co_await async_send(std::move(role), timeout);
        if (!r) {
            last_error_ = "ROLE: " + r.error().message();
            co_return r.error();
        }
        if (r->kind != redis_reply::type::array || r->elements.empty() || r->elements[0].str != "master") {
            last_error_ = "not a master (ROLE: " +
                          (r->is_error() ? r->str : r->elements.empty() ? "?" : r->elements[0].str) + ")";
            co_return errc(store_errc::unavailable);
        }
    }
    if (!opts_.sentinel) {
        // Another run_id than last time: the server was restarted (without persistence it lost
        // the write leases, whose writes may still be at the origin) or replaced. The store waits
        // such writes out (redis_store.cpp). Where INFO is denied we cannot tell.
        auto argv = detail::argv_of("INFO", "server");
        auto info = co_await async_send(std::move(argv), timeout);
        if (!info) co_return info.error();
        auto run_id = std::string(info_field(info->str, "run_id"));
        if (note_restart_detection(opts_.endpoint.describe(), !run_id.empty())) {
            // Restart detection by run_id is off; the epoch key (cache/lua/prelude.lua) still
            // detects a server that lost its data, but not one that restarted from a stale dump.
            // Said once per server, not once per worker.
            spdlog::warn("redis: {} did not answer INFO server with a run_id ({}): restarts from a "
                         "persisted dump that lost recent leases cannot be detected; grant +info to the "
                         "proxy's ACL user (README, \"Redis ACL\")",
                         opts_.endpoint.describe(), info->is_error() ? info->str : "no run_id field");
        }
        if (!run_id.empty()) {
            long long uptime = 0;
            parse_int(info_field(info->str, "uptime_in_seconds"), uptime);
            if (server_run_id_.empty() && opts_.young_server_wait) {
                // First sight: a restarted-empty server looks like a new one. Its start counts
                // as a replacement; the store refuses leases until it is a lease old.
                replacement_started_at_ = clock::now() - std::chrono::seconds(uptime);
            } else if (!server_run_id_.empty() && run_id != server_run_id_) {
                replacement_started_at_ = clock::now() - std::chrono::seconds(uptime);
                spdlog::warn("redis: {} is not the server we used before (restarted or replaced, up {} s): "
                             "writes whose leases it lost may still be in flight",
                             opts_.endpoint.describe(), uptime);
            }
            server_run_id_ = std::move(run_id);
        }
    }
    for (const auto& script : opts_.scripts) {
        auto r = co_await async_send(detail::argv_of("SCRIPT", "LOAD", script.source), timeout);
        if (!r) {
            last_error_ = "SCRIPT LOAD " + script.name + ": " + r.error().message();
            co_return r.error();
        }
        if (r->is_error() && r->str.starts_with("NOPERM")) {
            // Without scripts no request can be judged: say what to fix (every request gets 503
            // with this reason until the ACL is changed).
            refusal_ = r->str;
            refused_now_ = true;
            refused_ = errc(store_errc::scripts_denied);
            last_error_ = "SCRIPT LOAD " + script.name + ": " + r->str + ": " + refused_.message();
            co_return refused_;
        }
        if (r->is_error() || r->kind != redis_reply::type::string) {
            last_error_ = "SCRIPT LOAD " + script.name + ": " + r->str;
            co_return errc(store_errc::protocol);
        }
        if (r->str != script.sha1)
            spdlog::error("redis: script {}: server SHA1 {} differs from ours {}", script.name,
                          r->str, script.sha1);
    }
    co_return co_await async_find_module(timeout);
}

// ifmatch_redis.so (cache/redis_module/ifm_module.cpp): IFM.PROTOCOL lists the SHA1s of the
// scripts its commands mirror; a script is sent as its module command only if its SHA1 is there
// (a module built from other scripts is not used for them). No module, or a user not allowed to
// call it: the scripts, as before. Only a lost connection fails the handshake.
net::awaitable<error_code> redis_connection::async_find_module(std::chrono::milliseconds timeout) {
    module_.assign(opts_.scripts.size(), false);
    const bool wanted = std::any_of(opts_.scripts.begin(), opts_.scripts.end(),
                                    [](const lua_script& s) { return !s.module_command.empty(); });
    if (!wanted || opts_.sentinel) co_return error_code{};
    auto r = co_await async_send(detail::argv_of("IFM.PROTOCOL"), timeout);
    if (!r) co_return r.error();
    if (r->kind != redis_reply::type::array) {
        spdlog::debug("redis: {}: no ifmatch module ({}): judged writes run as Lua scripts",
                      opts_.endpoint.describe(), r->is_error() ? r->str : "unexpected reply");
        co_return error_code{};
    }
    std::vector<std::string_view> used;
    for (std::size_t i = 0; i < opts_.scripts.size(); ++i) {
        const auto& script = opts_.scripts[i];
        if (script.module_command.empty()) continue;
        module_[i] = std::any_of(r->elements.begin(), r->elements.end(),
                                 [&](const redis_reply& e) { return e.str == script.sha1; });
        if (module_[i]) used.push_back(script.name);
    }
    if (note_module(opts_.endpoint.describe(), used.size()))
        spdlog::info("redis: {} has the ifmatch module: {} of its scripts run as module commands{}",
                     opts_.endpoint.describe(), used.size(),
                     used.empty() ? " (it was built from other scripts than this proxy's: rebuild it)" : "");
    co_return error_code{};
}

// RESP, as hiredis' redisFormatCommandArgv writes it: an array of bulk strings.
std::string format_command(std::initializer_list<const std::vector<std::string>*> parts,
                           std::initializer_list<std::string_view> head) {
    std::string out;
    append_command(out, parts, head);
    return out;
}

net::awaitable<result<redis_reply>> redis_connection::async_send(const std::vector<std::string>& argv,
                                                                 std::chrono::milliseconds timeout,
                                                                 bool asking) {
    auto command = format_command({&argv}, {});
    co_return co_await async_send(command, timeout, asking);
}

redis_connection::slot* redis_connection::enqueue(
    waiter& w, std::chrono::milliseconds timeout, bool asking,
    std::initializer_list<const std::vector<std::string>*> parts, std::initializer_list<std::string_view> head,
    std::string_view resp) {
    auto* l = link_.get();
    if (!l || closed_) return nullptr;
    const auto now = clock::now();
    if (l->pending.empty()) last_progress_ = now;
    // ASKING applies to the next command of this connection only; its reply ("OK") is dropped,
    // and nothing can come between the two.
    if (asking) {
        l->out.append(asking_command);
        l->pending.emplace_back();
    }
    if (resp.empty())
        append_command(l->out, parts, head);
    else
        l->out.append(resp);
    // A deque's elements stay where they are as others are added behind them.
    auto& s = l->pending.emplace_back();
    s.w = &w;
    s.deadline = now + timeout;
    arm_deadline(s.deadline);
    flush_soon(link_);
    return &s;
}

// Resumed by the reply (on_readable), the deadline (on_deadline) or the connection's end
// (drop_link); the handler is stored when the coroutine has suspended, before anything else runs.
net::awaitable<void> redis_connection::reply_to(slot& s) {
    return net::async_initiate<decltype(net::use_awaitable), void()>(
        [&s](auto handler) {
            // Not `s.resume = ...`: Boost 1.81's move assignment of any_completion_handler wraps
            // the handler in itself, recursively (fixed in 1.82).
            net::any_completion_handler<void()>(std::move(handler)).swap(s.resume);
        },
        net::use_awaitable);
}

result<redis_reply> redis_connection::waiter::take() {
    if (ec) return ec;
    if (!reply) return errc(store_errc::unavailable);
    return std::move(*reply);
}

net::awaitable<result<redis_reply>> redis_connection::async_send(const std::string& command,
                                                                 std::chrono::milliseconds timeout,
                                                                 bool asking) {
    waiter w;
    auto* s = enqueue(w, timeout, asking, {}, {}, command);
    if (!s) co_return errc(store_errc::unavailable);
    co_await reply_to(*s);
    co_return w.take();
}

net::awaitable<result<redis_reply>> redis_connection::async_exec(std::vector<std::string> argv,
                                                                 bool asking) {
    auto self = shared_from_this();  // the frame may outlive the store that owns us
    const auto command = format_command({&argv}, {});
    co_return co_await exec_formatted(command, asking);
}

boost::system::error_code redis_connection::not_ready() const {
    if (ready_ && !closed_) return {};
    return refused_ && !closed_ ? refused_ : errc(store_errc::unavailable);
}

net::awaitable<result<redis_reply>> redis_connection::exec_formatted(const std::string& command, bool asking) {
    if (auto e = not_ready()) co_return e;
    co_return co_await async_send(command, opts_.command_timeout, asking);
}

net::awaitable<result<redis_reply>> redis_connection::async_exec_in_session(
    std::uint64_t session, std::vector<std::string> argv, std::chrono::milliseconds timeout) {
    auto self = shared_from_this();
    if (!ready_ || closed_ || session != session_) co_return errc(store_errc::unavailable);
    co_return co_await async_send(std::move(argv), timeout);
}

net::awaitable<result<redis_reply>> redis_connection::async_eval(
    std::size_t index, const std::vector<std::string>& keys, const std::vector<std::string>& args, bool asking) {
    auto self = shared_from_this();
    const auto& script = opts_.scripts.at(index);
    // exec_formatted's check without its coroutine frame (two scripts per judged write).
    if (auto e = not_ready()) co_return e;
    if (uses_module(index)) {
        // The module's command takes the script's keys and arguments, without SHA1 and count;
        // written straight into the connection's output, and waited for here (no frame of
        // async_send's: two of these per judged write).
        waiter w;
        auto* s = enqueue(w, opts_.command_timeout, asking, {&keys, &args}, {script.module_command});
        if (!s) co_return errc(store_errc::unavailable);
        co_await reply_to(*s);
        auto r = w.take();
        if (!(r && r->is_error() && (r->str.starts_with("ERR unknown command") || r->str.starts_with("NOPERM"))))
            co_return r;
        // MODULE UNLOAD since we connected, or an ACL that lets the user ask IFM.PROTOCOL but not
        // run the command: not run, so the script may run instead (and say what it lacks).
        spdlog::warn("redis: {} refused the ifmatch module's {} ({}); judged writes run as Lua scripts",
                     opts_.endpoint.describe(), script.module_command, r->str);
        module_.assign(module_.size(), false);
        note_module(opts_.endpoint.describe(), 0);
        if (auto e = not_ready()) co_return e;
    }
    // Formatted once, straight from the arguments (no argument vector, no copy for the retry).
    const auto nkeys = std::to_string(keys.size());
    const auto command = format_command({&keys, &args}, {"EVALSHA", script.sha1, nkeys});
    auto r = co_await async_send(command, opts_.command_timeout, asking);
    if (r && r->is_error() && r->str.starts_with("NOSCRIPT")) {
        // Redis restarted, failed over or ran SCRIPT FLUSH since we connected.
        spdlog::info("redis: script {} is missing on {}; loading it again", script.name,
                     opts_.endpoint.describe());
        auto loaded = co_await async_exec(detail::argv_of("SCRIPT", "LOAD", script.source));
        if (!loaded) co_return loaded;
        if (loaded->is_error()) co_return loaded;
        r = co_await exec_formatted(command, asking);
    }
    co_return r;
}

}  // namespace ifm::cache
