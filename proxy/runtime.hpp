// A configuration made ready to serve: upstreams resolved, routes bound to upstream indexes.
// Immutable once built and shared by the workers (a reload swaps in a new one).
#pragma once

#include "config/config.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include <memory>
#include <string_view>
#include <vector>

namespace ifm::proxy {

using tcp = boost::asio::ip::tcp;

struct runtime {
    config::config cfg;
    std::vector<std::vector<tcp::endpoint>> upstream_endpoints;  // aligned with cfg.upstreams
    // TLS client context of each upstream (null: plain TCP), shared by the workers' pools.
    std::vector<std::shared_ptr<boost::asio::ssl::context>> upstream_tls;  // aligned with cfg.upstreams
    // TLS server context for `listen` (null: plain HTTP). A connection keeps the one it was
    // accepted with; a reload builds a new one from the files.
    std::shared_ptr<boost::asio::ssl::context> listen_tls;
    std::vector<std::size_t> route_upstream;                      // aligned with cfg.routes
    std::vector<config::cidr> trusted_proxies;                    // cfg.headers.trusted_proxies, parsed

    // Is `peer` one whose X-Forwarded-* / Forwarded are kept and extended?
    bool trusted_proxy(const boost::asio::ip::address& peer) const {
        for (const auto& n : trusted_proxies)
            if (n.contains(peer)) return true;
        return false;
    }

    // The first route (file order) matching host, normalized path and method; -1 if none.
    int match(std::string_view host, std::string_view path, std::string_view method) const;
};

// Resolves every upstream address (blocking; done at start and on reload, never per request).
// A name that does not resolve is logged and left with no endpoints: the origin pools resolve
// it again when they connect. Throws std::runtime_error for a route naming an unknown upstream,
// or for TLS files OpenSSL cannot use (not PEM, a key that does not match its certificate).
std::shared_ptr<const runtime> make_runtime(config::config cfg);

}  // namespace ifm::proxy
