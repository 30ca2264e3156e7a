// One connection to Redis for one worker: RESP over an Asio socket of our own (TCP or a unix
// socket), with automatic pipelining.
//
// `run_connection` (started by `start()`) connects, authenticates, selects the database, loads
// the Lua scripts and reconnects with backoff after any loss. Commands are coroutines that fail
// with `store_errc::timeout` after `command_timeout`; while not connected they fail at once with
// `store_errc::unavailable`, so a request never waits for a reconnect.
//
// Every command queued during one turn of the worker's event loop goes out in one write at the
// end of that turn; replies are matched to commands in order. A waiting command costs no timer
// of its own: one timer per connection, armed for the earliest deadline, times them out, and a
// reply resumes its coroutine directly from the read that brought it.
//
// Single-threaded: every member is used from the connection's executor only (one io_context
// per worker), except the `connected()` / `reconnects()` gauges, which may be read anywhere.
#pragma once

#include "cache/resp.hpp"
#include "cache/store.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ifm::cache {

// Where to connect, parsed from store.url:
//   redis://[[user]:password@]host[:port][/db]   (host may be [v6-literal]; port 6379, db 0)
//   unix:///path/to.sock[?db=N]
struct redis_endpoint {
    bool unix_socket = false;
    std::string host;           // tcp: name or address literal (no brackets)
    std::uint16_t port = 6379;
    std::string path;           // unix
    std::string user;           // ACL user (Redis 6+); empty: AUTH with the password only
    std::string password;
    int db = 0;
    std::string describe() const;   // for logs; never contains the password
};
// Fails with a message saying what is wrong (for the config loader and the factory).
boost::system::result<redis_endpoint, std::string> parse_redis_url(std::string_view url);

// A Lua script, sent by EVALSHA with its SHA1 computed locally. `module_command`: the command of
// ifmatch_redis.so that does the same (cache/redis_module/ifm_module.cpp), sent instead where the
// server has the module and it names this script's SHA1 in IFM.PROTOCOL; empty if none.
struct lua_script {
    std::string name;
    std::string source;
    std::string sha1;           // lower-case hex
    std::string module_command;
    lua_script(std::string_view name, std::string_view source, std::string_view module_command = {});
};
std::string sha1_hex(std::string_view data);

// Says where to connect before each attempt (Sentinel: the master the sentinels name now).
class redis_locator {
public:
    virtual ~redis_locator() = default;
    // Host and port to try next; an error (the reason, for logs) skips the attempt: backoff,
    // then ask again.
    virtual net::awaitable<boost::system::result<redis_endpoint, std::string>> async_locate() = 0;
};

struct redis_options {
    redis_endpoint endpoint;    // with a locator: its auth and db; host and port come from it
    std::chrono::milliseconds command_timeout{50};
    std::chrono::milliseconds connect_timeout{1000};   // connect + handshake; also the stall limit
    std::chrono::milliseconds backoff_min{50};
    std::chrono::milliseconds backoff_max{2000};
    std::vector<lua_script> scripts;                    // loaded on every (re)connect
    std::string client_name = "ifmatch-proxy";
    std::shared_ptr<redis_locator> locator;             // asked before every connect attempt
    bool require_master = false;                        // ROLE after connecting: refuse a replica
    // On the first connection too, a server younger than a lease counts as a replacement
    // (store.young_server_wait): it may have restarted empty with writes in flight.
    bool young_server_wait = false;
    // A sentinel: no INFO (restart detection is for data nodes), and a refused AUTH says which
    // setting to check.
    bool sentinel = false;
};

// One command in RESP: `head` then every string of `parts`, as bulk strings.
std::string format_command(std::initializer_list<const std::vector<std::string>*> parts,
                           std::initializer_list<std::string_view> head);

class redis_connection : public std::enable_shared_from_this<redis_connection> {
public:
    static std::shared_ptr<redis_connection> create(net::any_io_executor ex, redis_options opts);
    ~redis_connection();
    redis_connection(const redis_connection&) = delete;
    redis_connection& operator=(const redis_connection&) = delete;

    // Spawns `run_connection` on the executor (once).
    void start();
    // Stops reconnecting; drops the connection, so pending commands fail with `unavailable`.
    // Safe to call while the io_context is stopped.
    void close();

    // Drops the current connection (if any) so that the run loop connects again, asking the
    // locator anew: a master that turned replica (READONLY), or a switch the sentinels announced.
    void reconnect(std::string reason);
    // Waits until the connection is ready (or `timeout`, or close()); returns connected().
    net::awaitable<bool> async_wait_ready(std::chrono::milliseconds timeout);

    // One command. Error replies are returned as replies (kind error); the error_code says
    // `unavailable` (not connected, or lost while waiting) or `timeout`. With `asking`, an ASKING
    // is sent first on the same connection (Redis Cluster ASK redirection).
    net::awaitable<result<redis_reply>> async_exec(std::vector<std::string> argv, bool asking = false);
    // One command with its own timeout, only if the connection is still `session` (else
    // `unavailable`): WAIT must run on the connection that made the writes it waits for.
    net::awaitable<result<redis_reply>> async_exec_in_session(
        std::uint64_t session, std::vector<std::string> argv, std::chrono::milliseconds timeout);
    // EVALSHA of `scripts[index]`, or its module command where the server has the module; on
    // NOSCRIPT (Redis restarted or flushed its scripts) the script is loaded again and the call
    // retried once, and on an unknown module command (the module was unloaded) it is sent by
    // EVALSHA from then on. `keys` and `args` must outlive the call (the caller co_awaits it).
    net::awaitable<result<redis_reply>> async_eval(
        std::size_t index, const std::vector<std::string>& keys, const std::vector<std::string>& args,
        bool asking = false);

    // Connected and ready (handshake and script loading done).
    bool connected() const { return ready_.load(std::memory_order_relaxed); }
    // Whether `scripts[index]` goes to the server as its module command (executor only).
    bool uses_module(std::size_t index) const { return index < module_.size() && module_[index]; }
    // Counts successful connections: a reply and a later command with the same session went
    // over the same connection. Executor only.
    std::uint64_t session() const { return session_; }
    // Successful connections after the first one.
    std::uint64_t reconnects() const { return reconnects_.load(std::memory_order_relaxed); }
    // When the server we talk to started, if it is not the one we talked to before (another
    // run_id: restarted, so without persistence it lost the write leases, or replaced);
    // time_point::min() while it is the first server seen. Executor only.
    std::chrono::steady_clock::time_point replacement_started_at() const { return replacement_started_at_; }
    const redis_options& options() const { return opts_; }
    // Why the server refused us at the last attempt (AUTH, NOAUTH, NOPERM), for the locator's
    // messages; "" once connected. Executor only.
    const std::string& refusal() const { return refusal_; }

private:
    struct link;
    struct waiter;
    struct slot;

    redis_connection(net::any_io_executor ex, redis_options opts);

    static net::awaitable<void> run_connection(std::shared_ptr<redis_connection> self);
    net::awaitable<boost::system::error_code> async_connect_once(std::size_t attempt);
    net::awaitable<boost::system::error_code> async_handshake();
    net::awaitable<boost::system::error_code> async_find_module(std::chrono::milliseconds timeout);
    // `command`: one command in RESP (append_command), written as it is.
    net::awaitable<result<redis_reply>> async_send(const std::string& command,
                                                   std::chrono::milliseconds timeout,
                                                   bool asking = false);
    net::awaitable<result<redis_reply>> async_send(const std::vector<std::string>& argv,
                                                   std::chrono::milliseconds timeout,
                                                   bool asking = false);
    // Queues one command on the connection, its reply to go to `w`: the RESP of `head` then
    // `parts`, or `resp` (a command in RESP already) when that is not empty. Null when there
    // is no connection. Then `co_await reply_to(*slot)`.
    slot* enqueue(waiter& w, std::chrono::milliseconds timeout, bool asking,
                  std::initializer_list<const std::vector<std::string>*> parts,
                  std::initializer_list<std::string_view> head, std::string_view resp = {});
    static net::awaitable<void> reply_to(slot& s);
    // What a command fails with at once while the connection is not ready (empty when it is ready).
    boost::system::error_code not_ready() const;
    // async_exec of a command already formatted; the caller keeps `command` alive and holds
    // a reference to this connection.
    net::awaitable<result<redis_reply>> exec_formatted(const std::string& command, bool asking);

    // The transport (redis_connection.cpp): one `link` per connection made.
    void drop_link();                                     // closes it; pending commands: unavailable
    void lost(const std::shared_ptr<link>& l, std::string why);   // the peer closed it or failed
    void flush_soon(const std::shared_ptr<link>& l);
    void flush(const std::shared_ptr<link>& l);
    void wait_readable(const std::shared_ptr<link>& l);
    void on_readable(const std::shared_ptr<link>& l);
    void arm_deadline(std::chrono::steady_clock::time_point at);
    void on_deadline();

    net::any_io_executor executor_;
    redis_options opts_;
    net::steady_timer wake_;                 // run loop's sleep; cancelled to wake it
    net::steady_timer deadline_;             // the earliest deadline of a waiting command
    bool deadline_armed_ = false;
    std::chrono::steady_clock::time_point deadline_at_{};
    std::shared_ptr<link> link_;             // null when no connection exists
    bool started_ = false;
    bool closed_ = false;
    std::string last_error_;                 // why the last attempt failed or the connection was lost
    std::string refusal_;                    // see refusal()
    boost::system::error_code refused_;      // what commands fail with meanwhile (else unavailable)
    std::chrono::steady_clock::time_point last_progress_{};  // last reply, or first send after idle
    std::uint64_t session_ = 0;
    bool refused_now_ = false;               // the last attempt was refused (refusal_ is its reason)
    std::string server_run_id_;              // INFO server's run_id of the last server
    std::vector<bool> module_;               // per script: sent as its module command (handshake)
    std::chrono::steady_clock::time_point replacement_started_at_ = std::chrono::steady_clock::time_point::min();
    std::vector<net::steady_timer*> ready_waiters_;  // async_wait_ready timers, cancelled when ready
    std::atomic<bool> ready_{false};
    std::atomic<std::uint64_t> reconnects_{0};
};

}  // namespace ifm::cache
