// One worker thread: its own io_context, origin pools, store connection and sessions
// (nghttpx's model: nothing mutable is shared between workers on the hot path).
#pragma once

#include "cache/store.hpp"
#include "proxy/metrics.hpp"
#include "proxy/origin_pool.hpp"
#include "proxy/runtime.hpp"
#include "proxy/write_protocol.hpp"

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <list>
#include <memory>
#include <memory_resource>
#include <unordered_set>
#include <vector>

namespace ifm::proxy {

class client_session;

// A kept-alive client connection between two requests, without a session (nginx's model): its
// socket waits for the next request with no coroutine, buffer or timer of its own, so an idle
// connection costs a few hundred bytes. The next byte starts a new session.
struct parked_connection {
    tcp::socket socket;
    std::uint64_t served;   // requests served on it so far (max_requests_per_connection)
    std::chrono::steady_clock::time_point deadline;   // idle_timeout
};

// A session waiting for its next request (client_session::read_some_until), linked into its
// worker's list while the read is pending: one timer serves every wait.
struct waiting_node {
    waiting_node* prev = nullptr;
    waiting_node* next = nullptr;
    std::chrono::steady_clock::time_point deadline;
    net::cancellation_signal cancel;   // emitted by the worker at the deadline
    bool linked = false;
    bool expired = false;              // the worker cancelled the read at the deadline
};

// A client hang-up watch not started yet (client_session::read_origin_header), linked into its
// worker's list while the session waits for the origin's response header. Most origins answer
// within a tick, and their requests never pay for a watch; a tick starts (`arm`) the watches
// that have waited a whole tick.
struct deferred_watch {
    deferred_watch* prev = nullptr;
    deferred_watch* next = nullptr;
    std::uint64_t tick = 0;   // the worker's tick count when linked
    bool linked = false;
    void (*arm)(deferred_watch&) = nullptr;
};

struct worker {
    worker(std::shared_ptr<const runtime> rt, cache::store_factory& stores, metrics& m, unsigned index);
    ~worker();

    // Swaps in a new runtime (reload): new pools for the new upstreams; sessions pick the new
    // runtime at their next request. Runs on this worker's thread.
    void apply(std::shared_ptr<const runtime> rt);
    // Stops taking requests: idle keep-alive sessions are closed, busy ones finish their request.
    void begin_drain();

    // Parked connections' list nodes and waits come from a pool of their own: from the heap they
    // landed among the freed sessions' chunks and kept those pages resident (fragmentation).
    // First member: it outlives ioc, whose destruction frees the waits still pending.
    std::pmr::unsynchronized_pool_resource park_pool;
    // Sessions waiting for a next request; before ioc, whose destruction ends them (each unlinks
    // itself).
    waiting_node* waiting_head = nullptr;
    // Watches to start late (defer_watch), oldest first; before ioc, like waiting_head.
    deferred_watch* watch_head = nullptr;
    deferred_watch* watch_tail = nullptr;
    net::io_context ioc{1};
    std::shared_ptr<const runtime> rt;
    // Aligned with rt->cfg.upstreams. Shared so that a request in flight during a reload keeps
    // the pools of the runtime it started with.
    std::shared_ptr<std::vector<std::unique_ptr<origin_pool>>> pools;
    std::unique_ptr<cache::validator_store> store;
    // Snapshots reused by the next reads of a resource (store.snapshot_reuse).
    snapshot_cache snapshots{std::chrono::milliseconds(0)};
    metrics& stats;
    unsigned index;
    std::unordered_set<client_session*> sessions;
    // Relay buffers of finished requests, handed to the next ones: a 16 KiB malloc and free per
    // request showed in profiles (malloc_consolidate). At most max_spare_buffers are kept.
    static constexpr std::size_t max_spare_buffers = 64;
    std::vector<std::unique_ptr<char[]>> spare_buffers;
    bool draining = false;
    std::uint64_t next_token = 0;

    // Takes over an idle keep-alive connection until its next request or `deadline`. It stays
    // counted in stats.client_connections.
    void park(tcp::socket socket, std::uint64_t served, std::chrono::steady_clock::time_point deadline);
    std::size_t parked_count() const { return parked.size(); }

    // One timer for every session waiting for its next request, instead of a timer raced with
    // each read: that timer was the earliest of the worker's about every other GET (the timerfd
    // re-armed: a system call), and with the race it cost 6 % of a GET's instructions in user
    // space (bench/run --instructions get: 68.7k -> 64.7k).
    // add_waiting links `n` (its deadline set); at the deadline the worker unlinks it, marks it
    // expired and emits its cancel. remove_waiting unlinks it (a no-op when not linked).
    void add_waiting(waiting_node& n);
    void remove_waiting(waiting_node& n);

    // A client hang-up watch costs a system call (its peek's first try), an operation and its
    // cancellation: one of a GET's 6.6 system calls and 4 % of its instructions. It is started
    // only for requests whose origin has not answered after one to two ticks of watch_delay:
    // defer_watch links `n`; a tick unlinks it and calls n.arm(n). cancel_watch unlinks it (a
    // no-op when not linked or already started).
    static constexpr std::chrono::milliseconds watch_delay{20};
    void defer_watch(deferred_watch& n);
    void cancel_watch(deferred_watch& n);

    // Asio's reactor gives every socket a state (168 bytes) when it opens and, after it closes,
    // keeps that state for the next socket, never freeing it. Allocated one at a time, between a
    // session's allocations, each state later pinned a page of the session memory freed around it:
    // 10,000 idle connections opened at once cost 2.92 KiB each in bench/run, 0.57 with the states
    // allocated beforehand. The acceptor calls this before each accept: while the connections of
    // this worker approach the states it made, it makes more at once (open and close a batch of
    // sockets), half as many again as it has, so that they sit together on their own pages.
    void reserve_socket_states();
    std::size_t socket_states() const { return socket_states_; }

private:
    using parked_list = std::pmr::list<parked_connection>;
    void on_parked_ready(parked_list::iterator it, boost::system::error_code ec);
    void sweep_parked();
    void arm_wait_timer(std::chrono::steady_clock::time_point at);
    void sweep_waiting();
    // Gives freed session memory back to the system once parking has been quiet for a moment.
    void trim_after_parks();
    void arm_trim_timer();
    static constexpr auto trim_quiet = std::chrono::milliseconds(250);
    static constexpr std::size_t trim_min_parks = 64;
    // Oldest first: with one idle_timeout, deadlines are in order (after a reload that changes
    // it, a shorter one may wait behind a longer one: closed late, never early).
    parked_list parked{&park_pool};
    net::steady_timer park_timer{ioc};
    bool park_timer_armed = false;
    net::steady_timer wait_timer{ioc};
    net::steady_timer watch_timer{ioc};
    bool watch_timer_armed = false;
    std::uint64_t watch_ticks = 0;
    void arm_watch_timer();
    // When wait_timer fires; max(): not armed.
    std::chrono::steady_clock::time_point wait_timer_at = std::chrono::steady_clock::time_point::max();
    std::size_t socket_states_ = 0;   // states made by reserve_socket_states
    std::size_t parked_since_trim = 0;
    std::chrono::steady_clock::time_point last_trim{};
    net::steady_timer trim_timer{ioc};
    bool trim_timer_armed = false;
    std::chrono::steady_clock::time_point last_park{};
};

}  // namespace ifm::proxy
