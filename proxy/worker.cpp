#include "proxy/worker.hpp"

#include "proxy/frame_pool.hpp"
#include "proxy/memory_budget.hpp"
#include "proxy/response_spool.hpp"
#include "proxy/session.hpp"

#include <boost/asio/bind_allocator.hpp>

#include <malloc.h>

#include <algorithm>

namespace ifm::proxy {

namespace {
// After a burst: the coroutine frames this thread keeps for reuse, then the heap's free pages.
void give_memory_back() {
    frame_pool::release_thread_pool();
    ::malloc_trim(0);
}

std::chrono::milliseconds longest_lease(const runtime& rt) {
    std::chrono::milliseconds longest{0};
    for (const auto& route : rt.cfg.routes)
        if (route.track) longest = std::max(longest, route.write_lease);   // untracked routes take none
    return longest;
}

std::shared_ptr<std::vector<std::unique_ptr<origin_pool>>> make_pools(net::any_io_executor ex, const runtime& rt,
                                                                      metrics& m) {
    auto pools = std::make_shared<std::vector<std::unique_ptr<origin_pool>>>();
    for (std::size_t i = 0; i < rt.cfg.upstreams.size(); ++i)
        pools->push_back(std::make_unique<origin_pool>(ex, rt.cfg.upstreams[i], rt.upstream_endpoints[i], &m,
                                                      rt.upstream_tls[i]));
    return pools;
}
}  // namespace

worker::worker(std::shared_ptr<const runtime> r, cache::store_factory& stores, metrics& m, unsigned i)
    : rt(std::move(r)), stats(m), index(i) {
    pools = make_pools(ioc.get_executor(), *rt, stats);
    buffered_budget().set_limit(rt->cfg.limits.max_buffered_bytes);
    spooled_budget().set_limit(rt->cfg.limits.max_spooled_bytes);
    store = stores.make(ioc.get_executor());
    store->expect_leases_up_to(longest_lease(*rt));
    snapshots.set_ttl(rt->cfg.store.snapshot_reuse);
}

worker::~worker() {
    sessions.clear();
    pools.reset();
    store.reset();
}

void worker::apply(std::shared_ptr<const runtime> r) {
    pools = make_pools(ioc.get_executor(), *r, stats);
    buffered_budget().set_limit(r->cfg.limits.max_buffered_bytes);
    spooled_budget().set_limit(r->cfg.limits.max_spooled_bytes);
    store->expect_leases_up_to(longest_lease(*r));
    snapshots.set_ttl(r->cfg.store.snapshot_reuse);
    rt = std::move(r);
}

void worker::begin_drain() {
    draining = true;
    for (auto* s : sessions) s->close_if_idle();
    for (auto& p : parked) {
        // Closed now: the drain may stop the event loop before the wait's handler runs (which
        // then only erases the entry and counts it out).
        boost::system::error_code ec;
        p.socket.close(ec);
    }
    for (auto& p : *pools) p->close_idle();
    trim_timer.cancel();
}

void worker::park(tcp::socket socket, std::uint64_t served, std::chrono::steady_clock::time_point deadline) {
    parked.push_back(parked_connection{std::move(socket), served, deadline});
    // After a burst (thousands of connections served at once, then idle), the sessions' memory
    // is free but glibc keeps the pages: give them back, at most once a second during a long
    // burst, and once more when the parking has been quiet for trim_quiet (the last ones'
    // sessions would otherwise stay resident until the next burst: 5.37 -> 4.98 KiB per idle
    // connection with 10,000 opened at once through bench/hostile's harness).
    ++parked_since_trim;
    if (parked_since_trim >= 1024) {
        auto now = std::chrono::steady_clock::now();
        if (now - last_trim >= std::chrono::seconds(1)) {
            parked_since_trim = 0;
            last_trim = now;
            give_memory_back();
        }
    }
    trim_after_parks();
    auto it = std::prev(parked.end());
    // A plain handler, not a coroutine: the wait is all an idle connection holds. It always runs
    // (readable, or cancelled by the sweep or the drain) and is the only one to erase the entry.
    it->socket.async_wait(tcp::socket::wait_read,
                          net::bind_allocator(std::pmr::polymorphic_allocator<std::byte>(&park_pool),
                                              [this, it](boost::system::error_code ec) { on_parked_ready(it, ec); }));
    if (!park_timer_armed) {
        park_timer_armed = true;
        park_timer.expires_at(deadline);
        park_timer.async_wait([this](boost::system::error_code ec) {
            park_timer_armed = false;
            if (!ec) sweep_parked();
        });
    }
}

void worker::reserve_socket_states() {
    // A client connection can hold an origin connection too; 64 for the store's and the pools'
    // others.
    const std::size_t needed = 2 * sessions.size() + parked.size() + 64;
    if (needed <= socket_states_) return;
    const std::size_t batch = std::max({needed - socket_states_, socket_states_ / 2, std::size_t{256}});
    std::vector<tcp::socket> made;
    made.reserve(batch);
    boost::system::error_code ec;
    for (std::size_t i = 0; i < batch; ++i) {
        tcp::socket s(ioc);
        s.open(tcp::v4(), ec);
        if (ec) break;   // out of descriptors: Asio makes the rest one at a time
        made.push_back(std::move(s));
    }
    socket_states_ += made.size();
    for (auto& s : made) s.close(ec);   // their states go to the reactor's free list
    if (made.size() < batch) socket_states_ = needed + batch;   // not again before `batch` more connections
}

void worker::add_waiting(waiting_node& n) {
    n.expired = false;
    n.prev = nullptr;
    n.next = waiting_head;
    if (waiting_head) waiting_head->prev = &n;
    waiting_head = &n;
    n.linked = true;
    // Deadlines mostly come later than the armed one (the same park_after from a later now):
    // the timer is re-armed only for an earlier one.
    if (n.deadline < wait_timer_at) arm_wait_timer(n.deadline);
}

void worker::remove_waiting(waiting_node& n) {
    if (!n.linked) return;
    if (n.prev) n.prev->next = n.next;
    else waiting_head = n.next;
    if (n.next) n.next->prev = n.prev;
    n.prev = n.next = nullptr;
    n.linked = false;
}

void worker::arm_wait_timer(std::chrono::steady_clock::time_point at) {
    wait_timer_at = at;
    wait_timer.expires_at(at);   // cancels a pending wait, whose handler then does nothing
    wait_timer.async_wait([this](boost::system::error_code ec) {
        if (ec) return;
        wait_timer_at = std::chrono::steady_clock::time_point::max();
        sweep_waiting();
    });
}

// Every waiting session is looked at: the first request's deadline (header_timeout) and a kept
// connection's (park_after, idle_timeout) differ, so the list is not in deadline order.
void worker::sweep_waiting() {
    const auto now = std::chrono::steady_clock::now();
    std::optional<std::chrono::steady_clock::time_point> next;
    for (auto* n = waiting_head; n;) {
        auto* following = n->next;
        if (n->deadline <= now) {
            remove_waiting(*n);
            n->expired = true;
            // The read completes with operation_aborted, posted: nothing runs here.
            n->cancel.emit(net::cancellation_type::terminal);
        } else if (!next || n->deadline < *next) {
            next = n->deadline;
        }
        n = following;
    }
    if (next) arm_wait_timer(*next);
}

void worker::defer_watch(deferred_watch& n) {
    n.tick = watch_ticks;
    n.next = nullptr;
    n.prev = watch_tail;
    if (watch_tail)
        watch_tail->next = &n;
    else
        watch_head = &n;
    watch_tail = &n;
    n.linked = true;
    if (!watch_timer_armed) arm_watch_timer();
}

void worker::cancel_watch(deferred_watch& n) {
    if (!n.linked) return;
    (n.prev ? n.prev->next : watch_head) = n.next;
    (n.next ? n.next->prev : watch_tail) = n.prev;
    n.prev = n.next = nullptr;
    n.linked = false;
}

// Not cancelled when the list empties: it fires once more, finds nothing and stays unarmed (a
// steady load keeps one tick per watch_delay, an idle worker none).
void worker::arm_watch_timer() {
    watch_timer_armed = true;
    watch_timer.expires_after(watch_delay);
    watch_timer.async_wait([this](boost::system::error_code ec) {
        watch_timer_armed = false;
        if (ec) return;
        ++watch_ticks;
        // Linked before the previous tick: waited at least one whole watch_delay.
        while (watch_head && watch_head->tick + 2 <= watch_ticks) {
            auto& n = *watch_head;
            cancel_watch(n);
            n.arm(n);   // starts an asynchronous peek: nothing completes here
        }
        if (watch_head) arm_watch_timer();
    });
}

void worker::trim_after_parks() {
    last_park = std::chrono::steady_clock::now();
    if (!trim_timer_armed) arm_trim_timer();   // an armed one looks at last_park when it fires
}

// Fires trim_quiet after the last park known now; if more came meanwhile, waits again.
void worker::arm_trim_timer() {
    trim_timer_armed = true;
    trim_timer.expires_at(last_park + trim_quiet);
    trim_timer.async_wait([this](boost::system::error_code ec) {
        trim_timer_armed = false;
        if (ec || draining) return;
        if (std::chrono::steady_clock::now() < last_park + trim_quiet) return arm_trim_timer();
        if (parked_since_trim < trim_min_parks) return;   // a trickle frees too little to walk the heap for
        parked_since_trim = 0;
        last_trim = std::chrono::steady_clock::now();
        give_memory_back();
    });
}

void worker::on_parked_ready(parked_list::iterator it, boost::system::error_code ec) {
    auto p = std::move(*it);
    parked.erase(it);
    if (parked.empty()) park_pool.release();   // a burst's blocks go back once it is over
    if (ec || draining || std::chrono::steady_clock::now() >= p.deadline) {
        boost::system::error_code ignored;
        p.socket.close(ignored);   // idle timeout or drain: nothing to answer
        stats.client_connections.fetch_sub(1, std::memory_order_relaxed);
        return;
    }
    resume_session(*this, std::move(p.socket), p.served);
}

void worker::sweep_parked() {
    auto now = std::chrono::steady_clock::now();
    for (auto& p : parked) {
        if (p.deadline > now) {
            park_timer_armed = true;
            park_timer.expires_at(p.deadline);
            park_timer.async_wait([this](boost::system::error_code ec) {
                park_timer_armed = false;
                if (!ec) sweep_parked();
            });
            return;
        }
        boost::system::error_code ec;
        p.socket.cancel(ec);   // its handler closes it (cancelled twice if the handler is late: harmless)
    }
}

}  // namespace ifm::proxy
