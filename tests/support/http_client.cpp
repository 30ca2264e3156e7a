#include "tests/support/http_client.hpp"

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <sys/socket.h>

#include <boost/asio.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

namespace ifm::test {
namespace net = boost::asio;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;
using boost::system::error_code;
using clock_type = std::chrono::steady_clock;

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](unsigned char x, unsigned char y) {
           return std::tolower(x) == std::tolower(y);
         });
}

// Runs the io_context until `done`; at the deadline cancels the socket's operations and drains
// them. Returns false on timeout. Async ops + a deadline, because Beast's sync calls cannot time out.
bool run_until(net::io_context& ioc, tcp::socket& sock, clock_type::time_point deadline, const bool& done) {
  ioc.restart();
  while (!done && ioc.run_one_until(deadline) > 0) {
  }
  if (done) return true;
  error_code ignored;
  sock.cancel(ignored);
  ioc.restart();
  ioc.run();
  return false;
}

tcp::socket connect(net::io_context& ioc, const std::string& host, std::uint16_t port,
                    clock_type::time_point deadline) {
  tcp::resolver resolver(ioc);
  auto endpoints = resolver.resolve(host, std::to_string(port));
  tcp::socket sock(ioc);
  error_code ec;
  bool done = false;
  net::async_connect(sock, endpoints, [&](error_code e, const tcp::endpoint&) { ec = e, done = true; });
  if (!run_until(ioc, sock, deadline, done))
    throw std::runtime_error("connect to " + host + ":" + std::to_string(port) + ": timeout");
  if (ec) throw std::runtime_error("connect to " + host + ":" + std::to_string(port) + ": " + ec.message());
  sock.set_option(tcp::no_delay(true));
  return sock;
}

// A peeked EOF or error means the server closed the idle connection.
bool peer_closed(tcp::socket& sock) {
  char c;
  auto n = ::recv(sock.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;
  return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK;
}

}  // namespace

std::string response::header(std::string_view name) const {
  for (auto& [n, v] : headers)
    if (iequals(n, name)) return v;
  return {};
}

bool response::has_header(std::string_view name) const { return header_count(name) > 0; }

std::size_t response::header_count(std::string_view name) const {
  return std::count_if(headers.begin(), headers.end(), [&](auto& h) { return iequals(h.first, name); });
}

std::string problem_type(const response& r) {
  static constexpr std::string_view key = "\"type\":\"";
  auto at = r.body.find(key);
  if (at == std::string::npos) return {};
  at += key.size();
  auto end = r.body.find('"', at);
  return end == std::string::npos ? std::string{} : r.body.substr(at, end - at);
}

struct http_client::impl {
  net::io_context ioc{1};
  std::optional<tcp::socket> sock;
  boost::beast::flat_buffer buf;

  void close() {
    if (sock) {
      error_code ignored;
      sock->shutdown(tcp::socket::shutdown_both, ignored);
      sock->close(ignored);
    }
    sock.reset();
    buf.clear();
  }
};

http_client::http_client(std::uint16_t port, std::string host)
    : impl_(std::make_unique<impl>()), port_(port), host_(std::move(host)) {}

http_client::~http_client() { close(); }

void http_client::close() { impl_->close(); }

bool http_client::connected() {
  if (!impl_->sock || !impl_->sock->is_open()) return false;
  if (peer_closed(*impl_->sock)) {
    impl_->close();
    return false;
  }
  return true;
}

response http_client::request(std::string method, std::string target,
                              std::vector<std::pair<std::string, std::string>> headers, std::string body) {
  const bool head = method == "HEAD";
  return request(std::move(method), std::move(target), std::move(headers), std::move(body), head);
}

response http_client::request(std::string method, std::string target,
                              std::vector<std::pair<std::string, std::string>> headers, std::string body,
                              bool head_response) {
  const auto deadline = clock_type::now() + timeout_;
  auto fail = [&](const std::string& what) -> response {
    impl_->close();
    throw std::runtime_error(method + " " + target + ": " + what);
  };
  if (!connected()) {
    impl_->sock.emplace(connect(impl_->ioc, host_, port_, deadline));
    ++connects_;
  }
  auto& sock = *impl_->sock;

  http::request<http::string_body> req;
  req.method_string(method);
  req.target(target);
  req.version(11);
  bool has_host = false, has_framing = false;
  for (auto& [n, v] : headers) {
    req.insert(n, v);
    has_host |= iequals(n, "host");
    has_framing |= iequals(n, "content-length") || iequals(n, "transfer-encoding");
  }
  if (!has_host) req.set(http::field::host, host_ + ":" + std::to_string(port_));
  req.body() = std::move(body);
  if (!has_framing) req.prepare_payload();

  error_code ec;
  bool done = false;
  http::async_write(sock, req, [&](error_code e, std::size_t) { ec = e, done = true; });
  if (!run_until(impl_->ioc, sock, deadline, done)) return fail("timeout writing the request");
  if (ec) return fail("write: " + ec.message());

  for (;;) {
    http::response_parser<http::string_body> parser;
    parser.skip(head_response);
    parser.header_limit(1 << 20);
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    done = false;
    http::async_read(sock, impl_->buf, parser, [&](error_code e, std::size_t) { ec = e, done = true; });
    if (!run_until(impl_->ioc, sock, deadline, done)) return fail("timeout reading the response");
    if (ec) return fail("read: " + ec.message());
    auto& res = parser.get();
    if (res.result_int() >= 100 && res.result_int() < 200 && res.result_int() != 101) continue;

    response out;
    out.status = res.result_int();
    for (auto& f : res) out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    out.body = std::move(res.body());
    if (!res.keep_alive()) impl_->close();
    return out;
  }
}

struct raw_connection::impl {
  net::io_context ioc{1};
  tcp::socket sock{ioc};
  std::string pending;  // read by closed_by_peer(), handed out by the next read_*
  bool eof = false;

  // One read with a deadline; false on timeout.
  bool read_once(clock_type::time_point deadline) {
    char data[16384];
    error_code ec;
    std::size_t n = 0;
    bool done = false;
    sock.async_read_some(net::buffer(data), [&](error_code e, std::size_t k) { ec = e, n = k, done = true; });
    if (!run_until(ioc, sock, deadline, done)) return false;
    pending.append(data, n);
    if (ec) eof = true;  // EOF or reset: either way the peer is gone
    return true;
  }
};

raw_connection::raw_connection(std::uint16_t port, std::string host) : impl_(std::make_unique<impl>()) {
  impl_->sock = connect(impl_->ioc, host, port, clock_type::now() + 10s);
}

raw_connection::~raw_connection() {
  error_code ignored;
  impl_->sock.close(ignored);
}

void raw_connection::send(std::string_view bytes) {
  error_code ec;
  bool done = false;
  net::async_write(impl_->sock, net::buffer(bytes), [&](error_code e, std::size_t) { ec = e, done = true; });
  if (!run_until(impl_->ioc, impl_->sock, clock_type::now() + 10s, done))
    throw std::runtime_error("raw send: timeout");
  if (ec) throw std::runtime_error("raw send: " + ec.message());
}

void raw_connection::shutdown_send() {
  error_code ignored;
  impl_->sock.shutdown(tcp::socket::shutdown_send, ignored);
}

std::string raw_connection::read_some(std::chrono::milliseconds timeout) {
  if (impl_->pending.empty() && !impl_->eof) impl_->read_once(clock_type::now() + timeout);
  return std::exchange(impl_->pending, {});
}

std::string raw_connection::read_until_closed(std::chrono::milliseconds timeout) {
  const auto deadline = clock_type::now() + timeout;
  while (!impl_->eof && impl_->read_once(deadline)) {
  }
  return std::exchange(impl_->pending, {});
}

bool raw_connection::closed_by_peer(std::chrono::milliseconds timeout) {
  const auto deadline = clock_type::now() + timeout;
  while (!impl_->eof && impl_->read_once(deadline)) {
  }
  return impl_->eof;
}

std::string raw_exchange(std::uint16_t port, std::string_view bytes, std::chrono::milliseconds timeout) {
  raw_connection c(port);
  c.send(bytes);
  return c.read_until_closed(timeout);
}

long outcome_count(std::uint16_t admin_port, const std::string& outcome) {
    http_client c(admin_port);
    auto body = c.request("GET", "/metrics").body;
    auto series = "ifmatch_precondition_outcomes_total{outcome=\"" + outcome + "\"} ";
    auto at = body.find(series);
    if (at == std::string::npos) return -1;
    return std::stol(body.substr(at + series.size()));
}

}  // namespace ifm::test
