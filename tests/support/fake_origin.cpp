#include "tests/support/fake_origin.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <ctime>
#include <map>
#include <mutex>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

namespace ifm::test {
namespace net = boost::asio;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && lower(a) == lower(b);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::uint64_t to_u64(std::string_view s, std::uint64_t fallback) {
  s = trim(s);
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc{} && p == s.data() + s.size() ? v : fallback;
}

using header_list = std::vector<std::pair<std::string, std::string>>;

// A response as bytes; head and body kept apart so x-fake-close: mid can cut the body.
struct wire_response {
  std::string head, body;
  bool close = false;
};

bool bodyless_status(unsigned status) { return status < 200 || status == 204 || status == 304; }

wire_response serialize(unsigned status, const header_list& headers, std::string_view body,
                        bool chunked, bool head_request, bool close) {
  wire_response out;
  out.close = close;
  out.head = "HTTP/1.1 " + std::to_string(status) + " " +
             std::string(http::obsolete_reason(static_cast<http::status>(status))) + "\r\n";
  for (auto& [n, v] : headers) out.head += n + ": " + v + "\r\n";
  if (!bodyless_status(status)) {
    if (chunked)
      out.head += "Transfer-Encoding: chunked\r\n";
    else
      out.head += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  if (close) out.head += "Connection: close\r\n";
  out.head += "\r\n";
  if (head_request || bodyless_status(status)) return out;
  if (!chunked) {
    out.body = body;
    return out;
  }
  constexpr std::size_t chunk = 4096;  // several chunks, so a client really has to reassemble
  for (std::size_t off = 0; off < body.size(); off += chunk) {
    auto part = body.substr(off, chunk);
    char hex[32];
    auto [p, ec] = std::to_chars(hex, hex + sizeof hex, part.size(), 16);
    out.body.append(hex, p).append("\r\n").append(part).append("\r\n");
  }
  out.body += "0\r\n\r\n";
  return out;
}

struct resource {
  std::string body, content_type;
  std::time_t mtime = 0;
};

struct version_info {  // survives DELETE, so tags never repeat after re-creation
  std::uint64_t version = 0, sticky = 0;
  std::optional<std::size_t> last_size;
};

}  // namespace

std::string http_date(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buf;
}

std::string fake_body(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 26) % 26);
  return s;
}

std::string recorded_request::header(std::string_view name) const {
  for (auto& [n, v] : headers)
    if (iequals(n, name)) return v;
  return {};
}

bool recorded_request::has_header(std::string_view name) const {
  return std::any_of(headers.begin(), headers.end(), [&](auto& h) { return iequals(h.first, name); });
}

struct fake_origin::impl {
  std::optional<net::io_context> ioc;
  std::vector<std::thread> threads;
  std::uint16_t port = 0;
  std::atomic<bool> stopped{false};
  std::atomic<std::uint64_t> accepted{0}, open{0};

  mutable std::mutex mu;
  mutable std::condition_variable recorded;
  std::vector<recorded_request> records;
  std::map<std::string, resource> store;
  std::map<std::string, version_info> versions;
  std::map<std::string, std::vector<std::string>> composites;
  etag_style style = etag_style::none;
  bool last_modified = false, etag_on_write = true, host_aware = false;
  std::chrono::milliseconds kv_delay{0}, idle_timeout{0};

  // Caller holds mu.
  void write_locked(const std::string& target, std::string body, std::string content_type) {
    auto& v = versions[target];
    ++v.version;
    if (!v.last_size || *v.last_size != body.size()) ++v.sticky;
    v.last_size = body.size();
    store[target] = resource{std::move(body), std::move(content_type), std::time(nullptr)};
  }

  std::string etag_locked(const std::string& target) const {
    auto it = versions.find(target);
    if (it == versions.end() || !store.count(target)) return {};
    switch (style) {
      case etag_style::none: return {};
      case etag_style::weak: return "W/\"" + std::to_string(it->second.version) + "\"";
      case etag_style::strong: return "\"" + std::to_string(it->second.version) + "\"";
      case etag_style::strong_sticky: {
        char hex[32];
        auto [p, ec] = std::to_chars(hex, hex + sizeof hex, *it->second.last_size, 16);
        return "\"" + std::to_string(it->second.sticky) + "-" + std::string(hex, p) + "\"";
      }
    }
    return {};
  }

  void validators_locked(const std::string& target, header_list& h, bool with_etag) const {
    if (auto tag = etag_locked(target); with_etag && !tag.empty()) h.emplace_back("ETag", tag);
    if (auto it = store.find(target); last_modified && it != store.end())
      h.emplace_back("Last-Modified", http_date(it->second.mtime));
  }

  // The store key of a request: its target, or "host/target" for virtual hosts.
  std::string key_of(const recorded_request& r) const {
    if (!host_aware) return r.target;
    auto host = lower(r.header("host"));
    if (auto colon = host.rfind(':'); colon != std::string::npos) host.resize(colon);
    return host + r.target;
  }

  // Caller holds mu.
  wire_response composite(const recorded_request& r, const std::vector<std::string>& children, bool close) {
    header_list h;
    h.emplace_back("Content-Type", "text/plain");
    if (r.method == "GET" || r.method == "HEAD") {
      std::string body;
      for (std::size_t i = 0; i < children.size(); ++i) {
        if (i) body += '\n';
        if (auto it = store.find(children[i]); it != store.end()) body += it->second.body;
      }
      return serialize(200, h, body, false, r.method == "HEAD", close);
    }
    if (r.method != "PUT") return serialize(405, h, "composite: GET, HEAD or PUT\n", false, false, close);
    std::vector<std::string> lines;
    std::string_view rest = r.body;
    for (;;) {
      auto nl = rest.find('\n');
      lines.emplace_back(rest.substr(0, nl));
      if (nl == std::string_view::npos) break;
      rest.remove_prefix(nl + 1);
    }
    if (lines.size() != children.size()) return serialize(400, h, "composite: one line per part\n", false, false, close);
    for (std::size_t i = 0; i < children.size(); ++i) write_locked(children[i], std::move(lines[i]), "text/plain");
    return serialize(204, h, {}, false, false, close);
  }

  wire_response kv(const recorded_request& in, bool close) {
    std::lock_guard lock(mu);
    recorded_request r = in;
    r.target = key_of(in);
    header_list h;
    auto it = store.find(r.target);
    const bool exists = it != store.end();
    auto plain = [&](unsigned status, std::string_view body = {}) {
      if (!body.empty()) h.emplace_back("Content-Type", "text/plain");
      return serialize(status, h, body, false, r.method == "HEAD", close);
    };
    if (auto c = composites.find(r.target); c != composites.end()) return composite(r, c->second, close);
    if (r.method == "GET" || r.method == "HEAD") {
      if (!exists) return plain(404, "not found\n");
      h.emplace_back("Content-Type", it->second.content_type.empty() ? "application/octet-stream"
                                                                     : it->second.content_type);
      validators_locked(r.target, h, true);
      return serialize(200, h, it->second.body, false, r.method == "HEAD", close);
    }
    if (r.method == "PUT") {
      write_locked(r.target, r.body, r.header("content-type"));
      validators_locked(r.target, h, etag_on_write);
      return plain(exists ? 204 : 201);
    }
    if (r.method == "PATCH") {
      if (!exists) return plain(404, "not found\n");
      write_locked(r.target, it->second.body + r.body, it->second.content_type);
      validators_locked(r.target, h, etag_on_write);
      return plain(204);
    }
    if (r.method == "DELETE") {
      if (!exists) return plain(404, "not found\n");
      store.erase(it);
      return plain(204);
    }
    if (r.method == "POST") return plain(201);
    h.emplace_back("Allow", "GET, HEAD, PUT, PATCH, DELETE, POST");
    return plain(405);
  }
};

namespace {

enum class close_mode { none, before, mid, after };

struct steering {
  unsigned status = 200;
  std::chrono::milliseconds delay{0};
  std::optional<std::chrono::milliseconds> apply;   // x-fake-apply
  close_mode close = close_mode::none;
  wire_response response;
};

steering steer(const recorded_request& r, bool close) {
  steering s;
  std::string body;
  bool chunked = false, echo = false;
  header_list h;
  for (auto& [n, v] : r.headers) {
    if (n == "x-fake-status") s.status = static_cast<unsigned>(to_u64(v, 200));
    else if (n == "x-fake-delay-ms") s.delay = std::chrono::milliseconds(to_u64(v, 0));
    else if (n == "x-fake-body-size") body = fake_body(to_u64(v, 0));
    else if (n == "x-fake-chunked") chunked = trim(v) == "1";
    else if (n == "x-fake-echo") echo = trim(v) == "1";
    else if (n == "x-fake-apply") s.apply = std::chrono::milliseconds(trim(v) == "now" ? 0 : to_u64(v, 0));
    else if (n == "x-fake-etag") h.emplace_back("ETag", std::string(trim(v)));
    else if (n == "x-fake-close") {
      auto m = trim(v);
      s.close = m == "before" ? close_mode::before : m == "mid" ? close_mode::mid
              : m == "after"  ? close_mode::after  : close_mode::none;
    } else if (n == "x-fake-header") {
      auto colon = v.find(':');
      if (colon != std::string::npos)
        h.emplace_back(std::string(trim(std::string_view(v).substr(0, colon))),
                       std::string(trim(std::string_view(v).substr(colon + 1))));
    }
  }
  if (echo) body = r.body;
  if (std::none_of(h.begin(), h.end(), [](auto& x) { return iequals(x.first, "content-type"); }))
    h.emplace_back("Content-Type", "application/octet-stream");
  s.response = serialize(s.status, h, body, chunked, r.method == "HEAD",
                         close || s.close == close_mode::after);
  return s;
}

struct open_guard {
  std::atomic<std::uint64_t>& n;
  ~open_guard() { --n; }
};

net::awaitable<void> run_session(fake_origin::impl* self, tcp::socket socket, std::uint64_t id) {
  open_guard guard{self->open};
  boost::beast::tcp_stream sock(std::move(socket));  // for the idle timeout on reads
  boost::beast::flat_buffer buf;
  auto tuple = net::as_tuple(net::use_awaitable);
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(1 << 20);
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    std::chrono::milliseconds idle;
    {
      std::lock_guard lock(self->mu);
      idle = self->idle_timeout;
    }
    if (idle.count() > 0)
      sock.expires_after(idle);
    else
      sock.expires_never();
    auto [ec, n] = co_await http::async_read_header(sock, buf, parser, tuple);
    sock.expires_never();
    if (ec) break;
    if (iequals(parser.get()[http::field::expect], "100-continue")) {
      static constexpr std::string_view go_on = "HTTP/1.1 100 Continue\r\n\r\n";
      auto [cec, cn] = co_await net::async_write(sock, net::buffer(go_on), tuple);
      if (cec) break;
    }
    if (!parser.is_done()) {
      auto [bec, bn] = co_await http::async_read(sock, buf, parser, tuple);
      if (bec) break;
    }
    auto& req = parser.get();
    recorded_request r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    for (auto& f : req) r.headers.emplace_back(lower(f.name_string()), std::string(f.value()));
    r.body = req.body();
    r.connection_id = id;
    const bool close = !req.keep_alive();
    const bool steered = std::any_of(r.headers.begin(), r.headers.end(),
                                     [](auto& h) { return h.first.starts_with("x-fake-"); });
    {
      std::lock_guard lock(self->mu);
      self->records.push_back(r);
    }
    self->recorded.notify_all();

    steering s;
    if (steered) {
      s = steer(r, close);
      if (s.apply) {
        // The write lands at the store as an unsteered one would, now or later.
        recorded_request plain = r;
        std::erase_if(plain.headers, [](auto& h) { return h.first.starts_with("x-fake-"); });
        if (s.apply->count() == 0) {
          self->kv(plain, false);
        } else {
          auto timer = std::make_shared<net::steady_timer>(sock.get_executor(), *s.apply);
          timer->async_wait([self, plain, timer](boost::system::error_code) { self->kv(plain, false); });
        }
      }
    } else {
      std::lock_guard lock(self->mu);
      s.delay = self->kv_delay;
    }
    if (s.delay.count() > 0) {
      net::steady_timer timer(sock.get_executor(), s.delay);
      co_await timer.async_wait(tuple);
    }
    if (!steered) s.response = self->kv(r, close);  // after the delay: a slow write lands late
    if (s.close == close_mode::before) break;

    std::string out = s.response.head;
    if (s.close == close_mode::mid)
      out += s.response.body.substr(0, s.response.body.size() / 2);
    else
      out += s.response.body;
    auto [wec, wn] = co_await net::async_write(sock, net::buffer(out), tuple);
    if (wec || s.close == close_mode::mid || s.response.close) break;
  }
  boost::system::error_code ignored;
  sock.socket().shutdown(tcp::socket::shutdown_send, ignored);
  sock.socket().close(ignored);
}

net::awaitable<void> run_accept(fake_origin::impl* self, tcp::acceptor acceptor) {
  for (;;) {
    auto [ec, sock] = co_await acceptor.async_accept(net::as_tuple(net::use_awaitable));
    if (ec) {
      if (ec == net::error::operation_aborted || !acceptor.is_open()) co_return;
      continue;  // e.g. EMFILE under a connection storm: keep serving
    }
    sock.set_option(tcp::no_delay(true));
    const auto id = ++self->accepted;
    ++self->open;
    net::co_spawn(acceptor.get_executor(), run_session(self, std::move(sock), id), net::detached);
  }
}

}  // namespace

fake_origin::fake_origin(unsigned threads) : fake_origin("127.0.0.1", 0, threads) {}

fake_origin::fake_origin(const std::string& address, std::uint16_t port, unsigned threads)
    : impl_(std::make_unique<impl>()) {
  auto& ioc = impl_->ioc.emplace(static_cast<int>(std::max(1u, threads)));
  tcp::acceptor acceptor(ioc, tcp::endpoint(net::ip::make_address(address), port));
  impl_->port = acceptor.local_endpoint().port();
  net::co_spawn(ioc, run_accept(impl_.get(), std::move(acceptor)), net::detached);
  for (unsigned i = 0; i < std::max(1u, threads); ++i) impl_->threads.emplace_back([&ioc] { ioc.run(); });
}

fake_origin::~fake_origin() { stop(); }

void fake_origin::stop() {
  if (impl_->stopped.exchange(true)) return;
  impl_->ioc->stop();
  for (auto& t : impl_->threads) t.join();
  impl_->ioc.reset();  // destroys the suspended sessions (and their sockets) while impl is alive
}

std::uint16_t fake_origin::port() const { return impl_->port; }

std::vector<recorded_request> fake_origin::requests() const {
  std::lock_guard lock(impl_->mu);
  return impl_->records;
}

void fake_origin::clear() {
  std::lock_guard lock(impl_->mu);
  impl_->records.clear();
}

std::size_t fake_origin::count(std::string_view method) const {
  std::lock_guard lock(impl_->mu);
  return std::count_if(impl_->records.begin(), impl_->records.end(),
                       [&](auto& r) { return r.method == method; });
}

std::size_t fake_origin::count(std::string_view method, std::string_view target) const {
  std::lock_guard lock(impl_->mu);
  return std::count_if(impl_->records.begin(), impl_->records.end(),
                       [&](auto& r) { return r.method == method && r.target == target; });
}

bool fake_origin::wait_for_requests(std::size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mu);
  return impl_->recorded.wait_for(lock, timeout, [&] { return impl_->records.size() >= n; });
}

std::uint64_t fake_origin::connections_accepted() const { return impl_->accepted; }
std::uint64_t fake_origin::open_connections() const { return impl_->open; }

void fake_origin::set_etag_style(etag_style style) {
  std::lock_guard lock(impl_->mu);
  impl_->style = style;
}

void fake_origin::set_last_modified(bool on) {
  std::lock_guard lock(impl_->mu);
  impl_->last_modified = on;
}

void fake_origin::set_etag_on_write(bool on) {
  std::lock_guard lock(impl_->mu);
  impl_->etag_on_write = on;
}

void fake_origin::set_composite(const std::string& parent, std::vector<std::string> children) {
  std::lock_guard lock(impl_->mu);
  impl_->composites[parent] = std::move(children);
}

void fake_origin::set_kv_delay(std::chrono::milliseconds d) {
  std::lock_guard lock(impl_->mu);
  impl_->kv_delay = d;
}

void fake_origin::set_host_aware(bool on) {
  std::lock_guard lock(impl_->mu);
  impl_->host_aware = on;
}

void fake_origin::set_idle_timeout(std::chrono::milliseconds d) {
  std::lock_guard lock(impl_->mu);
  impl_->idle_timeout = d;
}

std::optional<std::string> fake_origin::get(const std::string& target) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->store.find(target);
  if (it == impl_->store.end()) return std::nullopt;
  return it->second.body;
}

void fake_origin::put(const std::string& target, std::string body, std::string content_type) {
  std::lock_guard lock(impl_->mu);
  impl_->write_locked(target, std::move(body), std::move(content_type));
}

bool fake_origin::erase(const std::string& target) {
  std::lock_guard lock(impl_->mu);
  return impl_->store.erase(target) > 0;
}

std::string fake_origin::etag(const std::string& target) const {
  std::lock_guard lock(impl_->mu);
  return impl_->etag_locked(target);
}

}  // namespace ifm::test
