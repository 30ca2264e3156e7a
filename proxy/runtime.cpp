#include "proxy/runtime.hpp"

#include "proxy/http_util.hpp"

#include <boost/asio/io_context.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <stdexcept>

namespace ifm::proxy {

namespace {

// Built with the runtime, so a reload (SIGHUP) reads certificates and keys again.
std::shared_ptr<boost::asio::ssl::context> make_tls_context(const config::upstream_config& u) {
    namespace ssl = boost::asio::ssl;
    if (!u.tls.enabled) return nullptr;
    const auto& t = u.tls;
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
    auto fail = [&](const char* key, const std::string& file, const boost::system::error_code& ec) {
        throw std::runtime_error("upstreams." + u.name + ".tls." + key + ": cannot use '" + file + "': " + ec.message());
    };
    boost::system::error_code ec;
    SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
    if (t.ca_file.empty()) {
        ctx->set_default_verify_paths(ec);
        if (ec) fail("ca_file", "(the system's default store)", ec);
    } else if (ctx->load_verify_file(t.ca_file, ec); ec) {
        fail("ca_file", t.ca_file, ec);
    }
    if (!t.client_certificate.empty()) {
        if (ctx->use_certificate_chain_file(t.client_certificate, ec); ec)
            fail("client_certificate", t.client_certificate, ec);
        if (ctx->use_private_key_file(t.client_key, ssl::context::pem, ec); ec) fail("client_key", t.client_key, ec);
        if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
            throw std::runtime_error("upstreams." + u.name + ".tls.client_key: '" + t.client_key +
                                     "' does not match " + t.client_certificate);
    }
    ctx->set_verify_mode(t.verify ? ssl::verify_peer : ssl::verify_none);
    return ctx;
}

// ALPN: only HTTP/1.1 is served. A client offering h2 and http/1.1 gets http/1.1; one offering
// neither gets no ALPN answer (RFC 7301 §3.2 allows it) and decides itself.
int select_http11(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                  unsigned int inlen, void*) {
    static constexpr unsigned char http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    unsigned char* selected = nullptr;
    if (SSL_select_next_proto(&selected, outlen, http11, sizeof http11, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

std::shared_ptr<boost::asio::ssl::context> make_listen_tls_context(const config::listen_tls_config& t) {
    namespace ssl = boost::asio::ssl;
    if (!t.enabled()) return nullptr;
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
    auto fail = [&](const char* key, const std::string& file, const std::string& why) {
        throw std::runtime_error(std::string("listen_tls.") + key + ": cannot use '" + file + "': " + why);
    };
    SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
    // No renegotiation (a client-driven CPU sink), no compression (CRIME).
    SSL_CTX_set_options(ctx->native_handle(), SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                                  SSL_OP_CIPHER_SERVER_PREFERENCE);
    boost::system::error_code ec;
    if (ctx->use_certificate_chain_file(t.certificate, ec); ec) fail("certificate", t.certificate, ec.message());
    if (ctx->use_private_key_file(t.key, ssl::context::pem, ec); ec) fail("key", t.key, ec.message());
    if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
        fail("key", t.key, "it does not match the certificate " + t.certificate);
    SSL_CTX_set_alpn_select_cb(ctx->native_handle(), select_http11, nullptr);
    return ctx;
}

}  // namespace

int runtime::match(std::string_view host, std::string_view path, std::string_view method) const {
    // The port is not part of the route's host: "example.com:8080" matches "example.com".
    auto host_name = host;
    if (auto colon = host_name.rfind(':'); colon != std::string_view::npos && host_name.find(']') == std::string_view::npos)
        host_name = host_name.substr(0, colon);
    else if (auto bracket = host_name.find(']'); bracket != std::string_view::npos)
        host_name = host_name.substr(0, bracket + 1);
    for (std::size_t i = 0; i < cfg.routes.size(); ++i) {
        const auto& m = cfg.routes[i].match;
        if (!path.starts_with(m.path_prefix)) continue;
        if (!m.host.empty() && !iequals(m.host, host_name)) continue;
        if (!m.methods.empty() &&
            std::find(m.methods.begin(), m.methods.end(), method) == m.methods.end())
            continue;
        return static_cast<int>(i);
    }
    return -1;
}

std::shared_ptr<const runtime> make_runtime(config::config cfg) {
    auto rt = std::make_shared<runtime>();
    for (const auto& t : cfg.headers.trusted_proxies)
        if (auto n = config::parse_cidr(t)) rt->trusted_proxies.push_back(*n);   // checked by the loader
    rt->listen_tls = make_listen_tls_context(cfg.listen_tls);
    boost::asio::io_context ioc;
    tcp::resolver resolver(ioc);
    for (const auto& u : cfg.upstreams) {
        rt->upstream_tls.push_back(make_tls_context(u));
        boost::system::error_code ec;
        auto results = resolver.resolve(u.host, std::to_string(u.port), ec);
        std::vector<tcp::endpoint> eps;
        if (ec || results.empty()) {
            // Not fatal: DNS may lag behind a deployment. The pools resolve again on connect
            // (requests get 502 meanwhile) and /readyz fails until the name resolves.
            spdlog::warn("upstreams.{}: cannot resolve '{}' yet: {}; retrying on each connection attempt", u.name,
                         u.host, ec ? ec.message() : std::string("no address"));
            rt->upstream_endpoints.push_back(std::move(eps));
            continue;
        }
        for (const auto& r : results) eps.push_back(r.endpoint());
        rt->upstream_endpoints.push_back(std::move(eps));
    }
    for (const auto& r : cfg.routes) {
        auto it = std::find_if(cfg.upstreams.begin(), cfg.upstreams.end(),
                               [&](const auto& u) { return u.name == r.upstream; });
        if (it == cfg.upstreams.end())
            throw std::runtime_error("route " + r.name + ": unknown upstream '" + r.upstream + "'");
        rt->route_upstream.push_back(static_cast<std::size_t>(it - cfg.upstreams.begin()));
    }
    rt->cfg = std::move(cfg);
    return rt;
}

}  // namespace ifm::proxy
