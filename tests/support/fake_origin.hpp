#pragma once
// In-process HTTP/1.1 origin for loopback tests (Envoy-style): steered by x-fake-* request
// headers, otherwise a legacy key-value backend with no conditional-request logic.
#include <chrono>
#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ifm::test {

struct recorded_request {
  std::string method, target;
  std::vector<std::pair<std::string, std::string>> headers;  // as received, names lower-cased
  std::string body;
  std::uint64_t connection_id = 0;  // 1, 2, ... in accept order

  std::string header(std::string_view name) const;  // first value, "" if absent
  bool has_header(std::string_view name) const;
};

// How the key-value store labels its representations.
enum class etag_style {
  none,           // no ETag (default)
  weak,           // W/"<version>"
  strong,         // "<version>", bumped on every write
  strong_sticky,  // "<version>-<hex size>", version bumped only when the size changes (nginx-like)
};

// The body sent for x-fake-body-size: N (deterministic, so tests can compare).
std::string fake_body(std::size_t n);

// IMF-fixdate (RFC 9110 §5.6.7), as the origin writes Last-Modified.
std::string http_date(std::time_t t);

// Steering headers (any x-fake-* header switches the request away from the store):
//   x-fake-status: N        x-fake-delay-ms: N      x-fake-body-size: N     x-fake-chunked: 1
//   x-fake-close: before|mid|after                  x-fake-header: Name: value (repeatable)
//   x-fake-etag: "..."      x-fake-echo: 1 (body = request body)
//   x-fake-apply: now|N     also apply the write to the store (now, or N ms later): a backend
//                           that applies a write, then answers 303/202/502 or hangs up
// Store: GET/HEAD 200|404, PUT 201 (new) | 204, DELETE 204|404, POST 201 (not stored),
// PATCH appends to an existing body (204) or 404, anything else 405.
class fake_origin {
 public:
  explicit fake_origin(unsigned threads = 1);
  // Listening on `address`:`port` (0: a free port), e.g. 127.0.0.2 and the port of another
  // origin, for a host name that moves to a new address.
  fake_origin(const std::string& address, std::uint16_t port, unsigned threads = 1);
  ~fake_origin();
  fake_origin(const fake_origin&) = delete;
  fake_origin& operator=(const fake_origin&) = delete;

  std::uint16_t port() const;
  void stop();  // closes every connection; idempotent

  // Recording (clear() forgets requests, not the store or connection counters).
  std::vector<recorded_request> requests() const;
  void clear();
  std::size_t count(std::string_view method) const;
  std::size_t count(std::string_view method, std::string_view target) const;  // e.g. PUTs to /doc
  std::uint64_t connections_accepted() const;
  std::uint64_t open_connections() const;
  // Blocks until at least n requests are recorded (e.g. "the slow write has reached the origin").
  bool wait_for_requests(std::size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(5)) const;

  // Store behaviour.
  void set_etag_style(etag_style style);
  void set_last_modified(bool on);
  void set_etag_on_write(bool on);               // ETag on PUT/PATCH responses (default on)
  void set_kv_delay(std::chrono::milliseconds d);  // before every store response (slow origin)
  // Close connections that wait longer than this for a request, without a word (like nginx's
  // keepalive_timeout); 0 = never. Exercises the stale pooled connection race.
  void set_idle_timeout(std::chrono::milliseconds d);
  // Virtual hosts: the store is keyed by the Host header's name (port dropped) and the target;
  // direct access then takes "host/target" ("a.example/doc").
  void set_host_aware(bool on);
  // A representation that embeds others (a record and its fields, a collection and its items):
  // GET `parent` answers the bodies of `children`, one per line ("" for a missing one); PUT
  // `parent` writes line i to children[i] (400 unless there are as many lines). The children stay
  // resources of their own.
  void set_composite(const std::string& parent, std::vector<std::string> children);

  // Direct store access, as if someone wrote to the origin behind the proxy's back.
  std::optional<std::string> get(const std::string& target) const;
  void put(const std::string& target, std::string body, std::string content_type = {});
  bool erase(const std::string& target);
  std::string etag(const std::string& target) const;  // what GET would send now; "" if none

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace ifm::test
