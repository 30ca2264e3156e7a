#pragma once
// Blocking HTTP/1.1 client and raw-socket helpers for tests. Every operation has a timeout and
// throws std::runtime_error when it expires, so a hung proxy fails a test instead of hanging it.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ifm::test {

using namespace std::chrono_literals;

struct response {
  unsigned status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // as received
  std::string body;

  std::string header(std::string_view name) const;  // first value, case-insensitive; "" if absent
  bool has_header(std::string_view name) const;
  std::size_t header_count(std::string_view name) const;
};

// A problem+json response's `type` member ("" when there is none).
std::string problem_type(const response& r);

class http_client {
 public:
  using response = ifm::test::response;

  explicit http_client(std::uint16_t port, std::string host = "127.0.0.1");
  ~http_client();
  http_client(const http_client&) = delete;
  http_client& operator=(const http_client&) = delete;

  // Reuses one keep-alive connection; reconnects first if the server has closed it. Sets Host
  // and Content-Length unless given (a given Transfer-Encoding: chunked makes Beast chunk the body).
  // 1xx interim responses are skipped. Throws on timeout or a broken response.
  response request(std::string method, std::string target,
                   std::vector<std::pair<std::string, std::string>> headers = {},
                   std::string body = {});
  response request(std::string method, std::string target,
                   std::vector<std::pair<std::string, std::string>> headers, std::string body,
                   bool head_response);

  void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }
  bool connected();  // open and not closed by the peer
  void close();
  std::uint64_t connects() const { return connects_; }  // how many TCP connections were made

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
  std::uint16_t port_;
  std::string host_;
  std::chrono::milliseconds timeout_ = 10s;
  std::uint64_t connects_ = 0;
};

// A bare TCP connection for request-smuggling and framing tests.
class raw_connection {
 public:
  explicit raw_connection(std::uint16_t port, std::string host = "127.0.0.1");
  ~raw_connection();
  raw_connection(const raw_connection&) = delete;
  raw_connection& operator=(const raw_connection&) = delete;

  void send(std::string_view bytes);
  void shutdown_send();  // half-close: the peer sees EOF after what was sent
  // What arrives first within the timeout ("" on timeout or EOF).
  std::string read_some(std::chrono::milliseconds timeout = 2s);
  // Everything until the peer closes or the timeout expires.
  std::string read_until_closed(std::chrono::milliseconds timeout = 2s);
  // True if the peer closes (EOF or reset) within the timeout; data read meanwhile is kept for
  // the next read_*.
  bool closed_by_peer(std::chrono::milliseconds timeout = 2s);

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

// Connect, send, return everything read until the peer closes or the timeout expires.
std::string raw_exchange(std::uint16_t port, std::string_view bytes,
                         std::chrono::milliseconds timeout = 2s);

// ifmatch_precondition_outcomes_total{outcome="<outcome>"} from the /metrics of an admin
// listener, -1 when the series is absent.
long outcome_count(std::uint16_t admin_port, const std::string& outcome);

}  // namespace ifm::test
