#include "tests/support/raw_origin.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio.hpp>

namespace ifm::test {
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

constexpr std::size_t npos = std::string_view::npos;

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](unsigned char x, unsigned char y) {
           return std::tolower(x) == std::tolower(y);
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::optional<std::uint64_t> parse_number(std::string_view s, int base) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (s.empty() || ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

std::size_t raw_request_length(std::string_view buf) {
  auto header_end = buf.find("\r\n\r\n");
  if (header_end == npos) return 0;
  bool chunked = false;
  std::optional<std::uint64_t> length;
  auto headers = buf.substr(0, header_end + 2);
  for (auto pos = headers.find("\r\n") + 2; pos < headers.size();) {  // skip the request line
    auto eol = headers.find("\r\n", pos);
    auto line = headers.substr(pos, eol - pos);
    pos = eol + 2;
    auto colon = line.find(':');
    if (colon == npos) continue;
    auto name = line.substr(0, colon);
    auto value = trim(line.substr(colon + 1));
    if (iequals(name, "transfer-encoding")) {
      std::string v(value);
      std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
      chunked |= v.find("chunked") != std::string::npos;
    } else if (iequals(name, "content-length")) {
      length = parse_number(value, 10);
      if (!length) return npos;
    }
  }
  std::size_t pos = header_end + 4;
  if (!chunked) {
    const auto total = pos + length.value_or(0);
    return buf.size() >= total ? total : 0;
  }
  for (;;) {
    auto eol = buf.find("\r\n", pos);
    if (eol == npos) return 0;
    auto size_field = trim(buf.substr(pos, eol - pos).substr(0, buf.substr(pos, eol - pos).find(';')));
    auto size = parse_number(size_field, 16);
    if (!size) return npos;
    pos = eol + 2;
    if (*size == 0) {
      for (;;) {  // trailers up to an empty line
        auto end = buf.find("\r\n", pos);
        if (end == npos) return 0;
        if (end == pos) return pos + 2;
        pos = end + 2;
      }
    }
    if (buf.size() < pos + *size + 2) return 0;
    if (buf.substr(pos + *size, 2) != "\r\n") return npos;
    pos += *size + 2;
  }
}

struct raw_origin::impl {
  std::optional<net::io_context> ioc;
  std::thread thread;
  std::uint16_t port = 0;
  std::atomic<bool> stopped{false};
  std::atomic<std::uint64_t> accepted{0};

  mutable std::mutex mu;
  std::map<std::uint64_t, std::string> bytes;  // by connection id
  std::size_t requests = 0;
};

namespace {

net::awaitable<void> run_session(raw_origin::impl* self, tcp::socket sock, std::uint64_t id) {
  static constexpr std::string_view ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  auto tuple = net::as_tuple(net::use_awaitable);
  std::string unparsed;
  bool broken = false;  // unparseable framing: keep recording, stop answering
  char data[16384];
  for (;;) {
    auto [ec, n] = co_await sock.async_read_some(net::buffer(data), tuple);
    if (n > 0) {
      std::lock_guard lock(self->mu);
      self->bytes[id].append(data, n);
    }
    if (ec) break;
    if (broken) continue;
    unparsed.append(data, n);
    std::size_t answers = 0;
    for (;;) {
      auto len = raw_request_length(unparsed);
      if (len == 0) break;
      if (len == npos) {
        broken = true;
        break;
      }
      unparsed.erase(0, len);
      ++answers;
    }
    if (answers == 0) continue;
    {
      std::lock_guard lock(self->mu);
      self->requests += answers;
    }
    std::string out;
    for (std::size_t i = 0; i < answers; ++i) out += ok;
    auto [wec, wn] = co_await net::async_write(sock, net::buffer(out), tuple);
    if (wec) break;
  }
  boost::system::error_code ignored;
  sock.close(ignored);
}

net::awaitable<void> run_accept(raw_origin::impl* self, tcp::acceptor acceptor) {
  for (;;) {
    auto [ec, sock] = co_await acceptor.async_accept(net::as_tuple(net::use_awaitable));
    if (ec) {
      if (ec == net::error::operation_aborted || !acceptor.is_open()) co_return;
      continue;
    }
    net::co_spawn(acceptor.get_executor(), run_session(self, std::move(sock), ++self->accepted), net::detached);
  }
}

}  // namespace

raw_origin::raw_origin() : impl_(std::make_unique<impl>()) {
  auto& ioc = impl_->ioc.emplace(1);
  tcp::acceptor acceptor(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  impl_->port = acceptor.local_endpoint().port();
  net::co_spawn(ioc, run_accept(impl_.get(), std::move(acceptor)), net::detached);
  impl_->thread = std::thread([&ioc] { ioc.run(); });
}

raw_origin::~raw_origin() { stop(); }

void raw_origin::stop() {
  if (impl_->stopped.exchange(true)) return;
  impl_->ioc->stop();
  impl_->thread.join();
  impl_->ioc.reset();
}

std::uint16_t raw_origin::port() const { return impl_->port; }

std::string raw_origin::bytes_received() const {
  std::lock_guard lock(impl_->mu);
  std::string all;
  for (auto& [id, b] : impl_->bytes) all += b;
  return all;
}

std::vector<std::string> raw_origin::bytes_per_connection() const {
  std::lock_guard lock(impl_->mu);
  std::vector<std::string> out;
  for (auto& [id, b] : impl_->bytes) out.push_back(b);
  return out;
}

std::size_t raw_origin::request_count() const {
  std::lock_guard lock(impl_->mu);
  return impl_->requests;
}

std::uint64_t raw_origin::connections_accepted() const { return impl_->accepted; }

void raw_origin::clear() {
  std::lock_guard lock(impl_->mu);
  impl_->bytes.clear();
  impl_->requests = 0;
}

}  // namespace ifm::test
