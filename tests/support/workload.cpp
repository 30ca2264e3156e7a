#include "tests/support/workload.hpp"

#include "tests/support/http_client.hpp"
#include "tests/support/nginx.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <sstream>
#include <thread>

namespace ifm::test {

std::string format_counter_doc(const counter_doc& doc) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%010ld", doc.value);
  std::string out = buf;
  for (const auto& id : doc.history) out += " " + id;
  return out;
}

std::optional<counter_doc> parse_counter_doc(const std::string& body) {
  std::istringstream in(body);
  std::string first;
  if (!(in >> first) || first.size() != 10 || first.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  counter_doc doc;
  doc.value = std::stol(first);
  for (std::string id; in >> id;) doc.history.push_back(id);
  return doc;
}

std::string workload_proxy_yaml(const workload_proxy_config& c) {
  return "listen: 127.0.0.1:" + std::to_string(c.port) + "\n"
         "workers: 2\n"
         "store: { kind: redis, url: \"" + c.redis_url + "\", timeout: " + c.store_timeout +
         ", young_server_wait: " + (c.young_server_wait ? "true" : "false") + " }\n"
         "upstreams:\n"
         "  dav: { address: 127.0.0.1:" + std::to_string(c.origin_port) + ", connect_timeout: 500ms, "
         "request_timeout: " + c.request_timeout + " }\n"
         "routes:\n"
         "  - match: { path_prefix: / }\n"
         "    upstream: dav\n"
         "    etag: " + c.etag + "\n"
         "    methods: [PUT, DELETE]\n"
         "    require_precondition: true\n"
         "    write_lease: " + c.write_lease + "\n"
         "log: { level: warn, access_log: false }\n" + c.extra;
}

namespace {

bool proxy_made(const response& r) { return r.header("Content-Type") == "application/problem+json"; }

// What one client saw; merged into the result at the end.
struct client_tally {
  workload_result r;
  int mine = 0;
};

void run_client(int index, const std::vector<std::uint16_t>& ports, const workload_options& opts,
                std::chrono::steady_clock::time_point deadline, client_tally& t) {
  std::mt19937 rng(static_cast<unsigned>(index));
  std::vector<std::unique_ptr<http_client>> conns;
  for (auto p : ports) {
    conns.push_back(std::make_unique<http_client>(p));
    conns.back()->set_timeout(opts.request_timeout);
  }
  auto note = [&](const std::string& what) {
    if (what.find("timeout") != std::string::npos) ++t.r.hung;
    if (t.r.errors.size() < 5 && std::find(t.r.errors.begin(), t.r.errors.end(), what) == t.r.errors.end())
      t.r.errors.push_back(what);
  };
  auto pause = [&] { std::this_thread::sleep_for(std::chrono::milliseconds(1 + rng() % 10)); };
  for (int attempt = 1;; ++attempt) {
    if (opts.writes_per_client > 0 && t.mine >= opts.writes_per_client) return;
    if (std::chrono::steady_clock::now() > deadline) {
      if (opts.writes_per_client > 0) t.r.all_finished = false;
      return;
    }
    auto& c = *conns[rng() % conns.size()];
    response g;
    try {
      g = c.request("GET", opts.target);
    } catch (const std::exception& e) {
      ++t.r.read_failures;
      note(e.what());
      pause();
      continue;
    }
    auto doc = g.status == 200 ? parse_counter_doc(g.body) : std::nullopt;
    if (!doc) {
      ++t.r.read_failures;
      pause();
      continue;
    }
    if (!doc->history.empty()) t.r.observed.emplace(doc->history.size(), doc->history.back());
    auto id = "c" + std::to_string(index) + "." + std::to_string(attempt);
    ++doc->value;
    if (opts.fixed_size)
      doc->history.clear();
    else
      doc->history.push_back(id);
    try {
      auto w = c.request("PUT", opts.target, {{"If-Match", g.header("ETag")}}, format_counter_doc(*doc));
      ++t.r.write_statuses[w.status];
      if (w.status / 100 == 2) {
        ++t.mine;
        ++t.r.accepted;
        t.r.accepted_ids.insert(id);
        t.r.accepted_values.push_back(doc->value);
        continue;
      }
      // The proxy's own answers (problem+json) are given before anything is forwarded, except a
      // 502/504 about the write itself, whose outcome is unknown.
      bool definitive = w.status < 500 || (proxy_made(w) && w.status == 503);
      if (definitive) {
        ++t.r.rejected;
      } else {
        ++t.r.unknown;
        t.r.unknown_ids.insert(id);
      }
    } catch (const std::exception& e) {
      ++t.r.unknown;
      t.r.unknown_ids.insert(id);
      note(e.what());
    }
    pause();
  }
}

}  // namespace

workload_result run_workload(const std::vector<std::uint16_t>& ports, const workload_options& opts) {
  const auto deadline = std::chrono::steady_clock::now() + opts.run_for;
  std::vector<client_tally> tallies(static_cast<std::size_t>(opts.clients));
  std::vector<std::thread> threads;
  for (int i = 0; i < opts.clients; ++i)
    threads.emplace_back(run_client, i, std::cref(ports), std::cref(opts), deadline,
                         std::ref(tallies[static_cast<std::size_t>(i)]));
  for (auto& t : threads) t.join();

  workload_result r;
  for (auto& t : tallies) {
    r.accepted += t.r.accepted;
    r.rejected += t.r.rejected;
    r.unknown += t.r.unknown;
    r.read_failures += t.r.read_failures;
    r.hung += t.r.hung;
    r.accepted_ids.merge(t.r.accepted_ids);
    r.unknown_ids.merge(t.r.unknown_ids);
    r.accepted_values.insert(r.accepted_values.end(), t.r.accepted_values.begin(), t.r.accepted_values.end());
    r.observed.merge(t.r.observed);
    for (auto [status, n] : t.r.write_statuses) r.write_statuses[status] += n;
    for (auto& e : t.r.errors)
      if (r.errors.size() < 10 && std::find(r.errors.begin(), r.errors.end(), e) == r.errors.end())
        r.errors.push_back(e);
    r.all_finished = r.all_finished && t.r.all_finished;
  }
  return r;
}

std::optional<counter_doc> read_counter_doc(std::uint16_t port, const std::string& target) {
  try {
    http_client direct(port);
    auto g = direct.request("GET", target);
    return g.status == 200 ? parse_counter_doc(g.body) : std::nullopt;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::vector<std::string> lost_update_violations(const workload_result& r) {
  std::vector<std::string> out;
  if (!r.final_doc) return {"the final document cannot be read or parsed"};
  const auto& doc = *r.final_doc;
  std::set<std::string> applied;
  for (const auto& id : doc.history) {
    if (!applied.insert(id).second) out.push_back("write " + id + " applied twice");
    if (!r.accepted_ids.count(id) && !r.unknown_ids.count(id))
      out.push_back("write " + id + " applied but answered as rejected");
  }
  for (const auto& id : r.accepted_ids)
    if (!applied.count(id)) out.push_back("accepted write " + id + " was lost (overwritten)");
  for (const auto& [n, id] : r.observed)
    if (n > doc.history.size() || doc.history[n - 1] != id)
      out.push_back("write " + id + " was read as write #" + std::to_string(n) + ", then overwritten");
  if (doc.value != static_cast<long>(doc.history.size()))
    out.push_back("counter " + std::to_string(doc.value) + " but " + std::to_string(doc.history.size()) +
                  " writes in the document");
  return out;
}

long applied_unknown(const workload_result& r) {
  long n = 0;
  if (r.final_doc)
    for (const auto& id : r.final_doc->history) n += r.unknown_ids.count(id) ? 1 : 0;
  return n;
}

std::vector<std::string> fixed_size_violations(const workload_result& r) {
  std::vector<std::string> out;
  if (!r.final_doc) return {"the final document cannot be read or parsed"};
  if (r.unknown != 0)
    out.push_back(std::to_string(r.unknown) + " writes of unknown outcome: a fixed-size run cannot account for them");
  std::map<long, int> written;
  for (long v : r.accepted_values) ++written[v];
  for (const auto& [v, n] : written)
    if (n > 1) out.push_back(std::to_string(n) + " accepted writes all wrote " + std::to_string(v) + " (read the same state)");
  for (long v = 1; v <= r.accepted; ++v)
    if (!written.count(v)) out.push_back("no accepted write wrote " + std::to_string(v));
  if (r.final_doc->value != r.accepted)
    out.push_back("final counter " + std::to_string(r.final_doc->value) + " but " + std::to_string(r.accepted) +
                  " accepted writes");
  if (out.size() > 20) out.resize(20);
  return out;
}

bool eventually(const std::function<bool()>& f, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (f()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

bool judges_writes(std::uint16_t port, std::chrono::milliseconds timeout) {
  // Every worker must judge, not just the one a first connection lands on: each worker has its
  // own Redis connection, and the young-server wait (whole seconds of Redis's uptime) can end a
  // second later on one than on another. The kernel spreads new connections over the workers'
  // SO_REUSEPORT listeners, so 16 fresh connections in a row that all get a judgment miss a
  // worker of two with odds of 2^-15.
  auto target = "/warm-up-" + std::to_string(port);
  return eventually([&] {
    for (int i = 0; i < 16; ++i) {
      http_client c(port);
      if (c.request("PUT", target, {{"If-None-Match", "*"}}, "w").status == 503) return false;
    }
    return true;
  }, timeout);
}

pid_t nginx_pid(const nginx_webdav& nginx) {
  auto dir = std::filesystem::path(nginx.root()).parent_path().string();
  std::ifstream in(dir + "/nginx.pid");  // `pid` in tests/support/nginx.cpp's config
  pid_t pid = 0;
  if (!(in >> pid) || pid <= 0) return 0;
  // The file may still name an nginx that was killed: only our running nginx will do.
  std::ifstream cmd("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string cmdline((std::istreambuf_iterator<char>(cmd)), std::istreambuf_iterator<char>());
  return cmdline.find(dir + "/nginx.conf") != std::string::npos ? pid : 0;
}

}  // namespace ifm::test
