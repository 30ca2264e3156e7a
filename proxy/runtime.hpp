// A configuration made ready to serve: upstreams resolved, routes bound to upstream indexes.
// Immutable once built and shared by the workers (a reload swaps in a new one).
#pragma once

#include "config/config.hpp"

#include <boost/asio/ip/tcp.hpp>

#include <memory>
#include <string_view>
#include <vector>

namespace ifm::proxy {

using tcp = boost::asio::ip::tcp;

struct runtime {
    config::config cfg;
    std::vector<std::vector<tcp::endpoint>> upstream_endpoints;  // aligned with cfg.upstreams
    std::vector<std::size_t> route_upstream;                      // aligned with cfg.routes

    // The first route (file order) matching host, normalized path and method; -1 if none.
    int match(std::string_view host, std::string_view path, std::string_view method) const;
};

// Resolves every upstream address (blocking; done at start and on reload, never per request).
// Throws std::runtime_error naming the upstream when an address cannot be resolved.
std::shared_ptr<const runtime> make_runtime(config::config cfg);

}  // namespace ifm::proxy
