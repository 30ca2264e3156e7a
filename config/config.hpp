// Configuration: plain structs (the schema of SPEC §7) and a YAML loader that reports every
// error with its path and line. Defaults live here, in one place.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ifm::config {

using duration = std::chrono::milliseconds;
using namespace std::chrono_literals;

struct endpoint {
    std::string host = "0.0.0.0";
    std::uint16_t port = 8080;
    bool operator==(const endpoint&) const = default;
};

enum class store_kind { memory, redis };

struct store_config {
    store_kind kind = store_kind::memory;
    // redis://[:password@]host:port/db or unix:///path/to.sock[?db=N] (one server),
    // redis-sentinel://host:port,host:port/master-name[/db], redis-cluster://host:port,host:port
    std::string url = "redis://127.0.0.1:6379/0";
    // From the URL, or overridden by the environment variable IFM_REDIS_PASSWORD.
    std::string password;
    // redis-sentinel:// only: AUTH sent to each sentinel (Redis 6+ `requirepass` or an ACL user
    // in sentinel.conf); empty: none. The URL's credentials are the data nodes'.
    std::string sentinel_username;
    std::string sentinel_password;
    std::string key_prefix = "ifm";
    duration timeout = 50ms;          // per store command
    duration connect_timeout = 1s;
    // Replicas that must confirm a write lease (WAIT) before the write is forwarded;
    // unset: 1 with redis-sentinel://, else 0.
    std::optional<unsigned> wait_replicas;
    duration wait_timeout = 100ms;    // how long WAIT may take; unconfirmed: 503
    // A Redis up for less than a write lease when this proxy first reaches it may have been
    // restarted empty while writes were at the origin: judged writes wait until it is that old.
    bool young_server_wait = true;
    // How long a resource's validators are kept after their last change (SPEC §4: bounded memory,
    // bounded staleness); at least twice the longest write_lease.
    duration validator_ttl = 1h;
    // How long a worker reuses a resource's last snapshot for its next reads instead of asking
    // the store before each one (proxy/write_protocol.hpp, snapshot_cache); 0: every read asks.
    duration snapshot_reuse = 1s;

    bool operator==(const store_config&) const = default;
};

// TLS to one origin (https:// upstreams). Files are read when the configuration is loaded (and
// again on reload); paths are taken as written (relative ones from the working directory).
struct upstream_tls_config {
    bool enabled = false;
    std::string ca_file;              // PEM trust anchors; empty: the system's default store
    bool verify = true;               // false: any certificate is accepted (testing only)
    std::string server_name;          // SNI and the name verified; empty: the host of `address`
    std::string client_certificate;   // PEM chain presented to the origin; needs client_key
    std::string client_key;
    bool operator==(const upstream_tls_config&) const = default;
};

// TLS on `listen` (listen_tls): clients connect with https://. Files are read at start and again
// on every reload (SIGHUP), so a renewed certificate is picked up without a restart.
struct listen_tls_config {
    std::string certificate;   // PEM chain, leaf first
    std::string key;           // PEM private key of the leaf
    bool enabled() const { return !certificate.empty(); }
    bool operator==(const listen_tls_config&) const = default;
};

struct upstream_config {
    std::string name;
    std::string host;                 // IPv4/IPv6 literal or name (resolved at start)
    std::uint16_t port = 0;
    duration connect_timeout = 1s;
    duration request_timeout = 10s;   // whole origin response, from the request's last byte
    // Longest wait for a connection slot when max_connections are in use; then 503.
    duration pool_wait = 1s;
    std::size_t max_connections = 256;     // concurrent origin connections per worker
    std::size_t max_idle_connections = 64; // pooled keep-alive connections per worker
    duration idle_timeout = 30s;      // pooled connection lifetime while unused
    // Host header sent to the origin; empty keeps the client's Host.
    std::string host_header;
    upstream_tls_config tls;
    bool operator==(const upstream_config&) const = default;
};

enum class etag_mode { origin, hash, auto_ };
enum class query_mode { keep, sorted, ignore };
enum class busy_policy { reject, wait };
enum class forwarded_style { x_forwarded, forwarded, none };
enum class store_error_policy { fail_closed, fail_open };
// Unsafe methods a tracked route does not judge (outside `methods`: WebDAV COPY/MOVE, extensions).
enum class unjudged_policy { lease, refuse };
// Report-only rollout (SPEC §9, README "Report-only rollout"): on refuses what fails, report
// forwards it and counts it as would_reject_*, off judges nothing (writes forwarded as unjudged).
enum class enforce_mode { off, report, on };

struct route_match {
    std::string path_prefix = "/";
    std::string host;                 // empty: any host (compared case-insensitively, port ignored)
    std::vector<std::string> methods; // empty: any method
    bool operator==(const route_match&) const = default;
};

// Idempotent retries (SPEC §9, README "Idempotent retries"): opt-in per route.
struct idempotency_config {
    bool enabled = false;
    duration ttl = 24h;                          // how long a completed write's response is replayed
    std::size_t max_response_bytes = 64 * 1024;  // larger bodies: replayed without a body
    bool operator==(const idempotency_config&) const = default;
};

// A resource dependency (SPEC §9): a committed write to a path matching `path` also changes the
// resources `invalidates` names, whose validators become unknown with it. Templates are absolute
// paths whose segments are literals or `{name}` (exactly one non-empty segment); every name in
// `invalidates` is bound by `path` (docs/configuration.md, "Resource dependencies").
struct dependency_rule {
    std::string path;
    std::vector<std::string> invalidates;
    bool operator==(const dependency_rule&) const = default;
};

// Most resources one dependency rule may name: each is leased along with the write.
inline constexpr std::size_t max_dependents = 8;

// The variable names of a path template ("/users/{id}" -> {"id"}), or nullopt when it is not one:
// an absolute path whose segments are literals (no "//", ".", "..", '?', '#', blanks) or exactly
// `{name}` (a C identifier, each name once).
std::optional<std::vector<std::string>> path_template_vars(std::string_view t);

struct route_config {
    std::string name;                 // default "route<i>" (route0, route1...); used in keys, logs and metrics
    route_match match;
    std::string upstream;
    // false: pure proxying, nothing tracked or judged on this route.
    bool track = true;
    etag_mode etag = etag_mode::hash;
    // Methods whose preconditions are judged (unsafe methods).
    std::vector<std::string> methods = {"PUT", "PATCH", "DELETE", "POST"};
    bool require_precondition = false;
    enforce_mode enforce = enforce_mode::on;
    unsigned reject_status = 409;     // 409 or 412
    duration write_lease = 15s;
    // Forward only while more than the origin's request_timeout plus this margin of the lease
    // remains: what a clock step between the proxy and Redis may eat (README, "Clocks").
    duration lease_margin = 1s;
    // How long a write whose outcome is unknown (5xx, 202, timeout, reset) keeps the lease;
    // unset: the rest of the lease (SPEC §5.4).
    std::optional<duration> settle_time;
    // lease: forwarded under the lease of its target and of its Destination, whose validators
    // it makes unknown; refuse: 405 (SPEC §5.5).
    unjudged_policy unjudged_writes = unjudged_policy::lease;
    busy_policy on_busy = busy_policy::reject;
    duration busy_wait = 200ms;
    bool revalidate_on_mismatch = false;
    bool refresh_after_write = false;
    std::vector<std::string> vary;    // request header names, lower-cased by the loader
    query_mode query = query_mode::keep;
    idempotency_config idempotency;
    std::vector<dependency_rule> dependencies;
    bool operator==(const route_config&) const = default;
};

struct limits_config {
    std::size_t max_header_bytes = 16 * 1024;
    std::size_t max_body_bytes = 8 * 1024 * 1024;
    std::size_t max_hash_body = 8 * 1024 * 1024;
    // Response bodies held in memory for hashing, per process; over it: streamed untracked.
    std::size_t max_buffered_bytes = 256 * 1024 * 1024;
    // Streamed response bodies a client reads slower than the origin sends wait in a temporary
    // file (in spool_dir; empty: $TMPDIR, else /tmp), so that the origin connection is freed when
    // the origin is done: at most this much per process, and per response (0: no spooling).
    std::size_t max_spooled_bytes = std::size_t{1} << 30;
    std::size_t max_spooled_response = 256 * 1024 * 1024;
    std::string spool_dir;
    // Write bodies up to this Content-Length are read whole (within max_buffered_bytes) before
    // the write lease is taken, so that a slow upload cannot hold the resource (0: never).
    std::size_t max_prebuffered_body = 1024 * 1024;
    std::size_t max_target_bytes = 8 * 1024;
    duration idle_timeout = 60s;      // client keep-alive idle
    duration header_timeout = 10s;    // whole request header (slowloris)
    duration body_timeout = 60s;      // gap between two reads of a request body
    duration tunnel_idle_timeout = 300s;   // an upgraded (WebSocket) connection with no byte either way
    std::size_t min_body_rate = 512;  // bytes/s a request body must average after body_timeout; 0: off
    std::size_t max_header_fields = 100;            // request header fields; more: 431
    std::size_t max_connections = 10000;            // client connections per process
    std::size_t max_requests_per_connection = 0;    // 0: unlimited
    // SIGTERM: /readyz fails at once, but the listener keeps accepting this long, while
    // Kubernetes removes the Pod from its Services' endpoints (clients may still connect).
    duration drain_delay = 5s;
    duration drain_timeout = 30s;     // SIGTERM: time given to in-flight requests
    bool operator==(const limits_config&) const = default;
};

struct headers_config {
    forwarded_style forwarded = forwarded_style::x_forwarded;
    bool via = true;
    // Peers (CIDRs; a bare address is one host) whose X-Forwarded-* / Forwarded are kept and
    // extended; from any other peer they are replaced.
    std::vector<std::string> trusted_proxies;
    bool operator==(const headers_config&) const = default;
};

struct log_config {
    std::string level = "info";       // trace|debug|info|warn|error|critical|off
    bool json = false;
    bool access_log = true;
    bool operator==(const log_config&) const = default;
};

struct config {
    endpoint listen;
    listen_tls_config listen_tls;           // certificate empty: plain HTTP on `listen`
    std::optional<endpoint> admin_listen;   // absent: no admin listener
    unsigned workers = 0;                   // 0: hardware threads
    store_config store;
    std::vector<upstream_config> upstreams;
    std::vector<route_config> routes;
    limits_config limits;
    headers_config headers;
    store_error_policy on_store_error = store_error_policy::fail_closed;
    log_config log;

    const upstream_config* find_upstream(std::string_view name) const;
    bool operator==(const config&) const = default;
};

// One problem found in a configuration file.
struct error {
    std::string path;   // e.g. "routes[2].etag"
    int line = 0;       // 1-based; 0 when the file could not be read or parsed at all
    std::string message;

    // "FILE:LINE: routes[2].etag: expected one of origin|hash|auto"
    std::string format(std::string_view file) const;
};

using load_result = boost::system::result<config, std::vector<error>>;

// Parses YAML text; every error found is reported, not just the first.
load_result load_string(std::string_view yaml);
load_result load_file(const std::string& path);

// Every dotted key the loader accepts ("listen", "routes[].etag", "upstreams.<name>.address"),
// sections excluded; the unit tests compare it with the table in docs/configuration.md.
std::vector<std::string> known_keys();

// A JSON Schema (draft 2020-12) of the file, built from the same tables as known_keys(); each
// key's description is what the loader expects of it. docs/config.schema.json is its output
// (`ifmatch-proxy --print-config-schema`); a unit test keeps them equal.
std::string json_schema();

// "50ms", "15s", "2m", "1h", "250us" -> duration; nullopt when malformed.
std::optional<duration> parse_duration(std::string_view text);
// "16KiB", "8MiB", "1GiB", "512", "10kB"... -> bytes; nullopt when malformed.
std::optional<std::size_t> parse_size(std::string_view text);
// "host:port", "[::1]:8080" -> endpoint; nullopt when malformed.
std::optional<endpoint> parse_endpoint(std::string_view text);

// An IP network, "10.0.0.0/8", "fd00::/8", or one address ("::1": /128).
struct cidr {
    boost::asio::ip::address network;
    unsigned prefix = 0;
    // IPv4-mapped IPv6 peers (a dual-stack listener) are compared as IPv4.
    bool contains(const boost::asio::ip::address& a) const;
};
std::optional<cidr> parse_cidr(std::string_view text);

}  // namespace ifm::config
