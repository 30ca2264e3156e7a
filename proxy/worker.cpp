#include "proxy/worker.hpp"

#include "proxy/memory_budget.hpp"
#include "proxy/session.hpp"

namespace ifm::proxy {

namespace {
std::chrono::milliseconds longest_lease(const runtime& rt) {
    std::chrono::milliseconds longest{0};
    for (const auto& route : rt.cfg.routes) longest = std::max(longest, route.write_lease);
    return longest;
}

std::shared_ptr<std::vector<std::unique_ptr<origin_pool>>> make_pools(net::any_io_executor ex, const runtime& rt,
                                                                      metrics& m) {
    auto pools = std::make_shared<std::vector<std::unique_ptr<origin_pool>>>();
    for (std::size_t i = 0; i < rt.cfg.upstreams.size(); ++i)
        pools->push_back(std::make_unique<origin_pool>(ex, rt.cfg.upstreams[i], rt.upstream_endpoints[i], &m));
    return pools;
}
}  // namespace

worker::worker(std::shared_ptr<const runtime> r, cache::store_factory& stores, metrics& m, unsigned i)
    : rt(std::move(r)), stats(m), index(i) {
    pools = make_pools(ioc.get_executor(), *rt, stats);
    buffered_budget().set_limit(rt->cfg.limits.max_buffered_bytes);
    store = stores.make(ioc.get_executor());
    store->expect_leases_up_to(longest_lease(*rt));
}

worker::~worker() {
    sessions.clear();
    pools.reset();
    store.reset();
}

void worker::apply(std::shared_ptr<const runtime> r) {
    pools = make_pools(ioc.get_executor(), *r, stats);
    buffered_budget().set_limit(r->cfg.limits.max_buffered_bytes);
    store->expect_leases_up_to(longest_lease(*r));
    rt = std::move(r);
}

void worker::begin_drain() {
    draining = true;
    for (auto* s : sessions) s->close_if_idle();
    for (auto& p : *pools) p->close_idle();
}

}  // namespace ifm::proxy
