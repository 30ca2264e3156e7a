#pragma once
// The lost-update workload (I1): clients run read–modify–write increments of one counter document
// through one or more proxies, each write conditioned on the tag its read returned.
//
// The document is "<counter, 10 digits>" followed by " <write id>" for every write applied so far,
// so the final document names exactly the writes whose effect survived. A lost update shows as an
// accepted write missing from it; a write whose outcome the client could not learn (502/504, a
// dropped connection) may or may not appear, and is accounted for separately.
//
// With workload_options::fixed_size the document is the counter alone: every write has the same
// size, the case nginx's "mtime-size" ETag cannot tell apart within one second (what `hash`
// mode exists for). The history is then gone; the values the accepted writes wrote stand in
// for it (fixed_size_violations).
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace ifm::test {

struct counter_doc {
  long value = 0;
  std::vector<std::string> history;  // write ids, oldest first
};
std::string format_counter_doc(const counter_doc& doc);
std::optional<counter_doc> parse_counter_doc(const std::string& body);

// A proxy process config for the workload: one tracked route (hash mode unless `etag` says
// otherwise) over everything, writes
// (PUT, DELETE) require a precondition, Redis store.
struct workload_proxy_config {
  std::uint16_t port = 0;
  std::uint16_t origin_port = 0;
  std::string redis_url;
  std::string write_lease = "10s";
  std::string request_timeout = "5s";
  std::string store_timeout = "500ms";
  // store.young_server_wait: off in tests, whose Redis is always brand new (the chaos test
  // turns it on: it restarts Redis and a proxy together).
  bool young_server_wait = false;
  std::string etag = "hash";  // the route's etag mode: hash | origin | auto
  std::string extra;  // appended verbatim (top-level YAML)
};
std::string workload_proxy_yaml(const workload_proxy_config& c);

struct workload_options {
  int clients = 8;
  // Accepted writes each client makes before it stops; 0: write until `run_for` has passed.
  int writes_per_client = 15;
  std::chrono::milliseconds run_for{60'000};  // the budget (with writes_per_client) or the duration
  std::chrono::milliseconds request_timeout{10'000};  // a request taking longer counts as hung
  std::string target = "/counter.txt";
  // Write the counter alone ("%010ld", always 10 bytes) instead of counter + history.
  bool fixed_size = false;
};

struct workload_result {
  long accepted = 0;   // 2xx
  long rejected = 0;   // answered by the proxy without forwarding (409/412/428, problem+json 503)
  long unknown = 0;    // outcome unknown to the client: 502/504, origin 5xx, connection lost
  long read_failures = 0;
  long hung = 0;       // requests that exceeded request_timeout
  std::set<std::string> accepted_ids, unknown_ids;
  // The counter value each accepted write wrote (read value + 1), in no particular order.
  std::vector<long> accepted_values;
  // Every document state the clients read: (number of writes in it, the last one's id).
  std::set<std::pair<std::size_t, std::string>> observed;
  std::map<unsigned, long> write_statuses;
  std::vector<std::string> errors;  // first few client-side exceptions, for the test log
  bool all_finished = true;         // every client made its writes within the budget
  std::optional<counter_doc> final_doc;  // set by the caller: read_counter_doc() at the end
};

// Runs the clients against `ports` (each client spreads its requests over all of them).
workload_result run_workload(const std::vector<std::uint16_t>& ports, const workload_options& opts);
// The document as `port` (the origin itself, not a proxy) serves it; nullopt if unreadable.
std::optional<counter_doc> read_counter_doc(std::uint16_t port, const std::string& target = "/counter.txt");

// What the final document says about the run: every accepted write is in it, everything in it
// was accepted or of unknown outcome, no write applied twice, the counter counts it, and every
// state a client ever read is a prefix of it (a write that was visible, accepted or not, was
// never overwritten by one that did not build on it). Empty when no update was lost.
std::vector<std::string> lost_update_violations(const workload_result& r);
// Writes of unknown outcome that the origin applied (they are in the final document).
long applied_unknown(const workload_result& r);
// For a fixed_size run with no write of unknown outcome: every accepted write wrote a different
// value (two writes based on the same read both accepted is a lost update), the values are
// exactly 1..accepted, and the final counter equals the number of accepted writes. Empty when no
// update was lost.
std::vector<std::string> fixed_size_violations(const workload_result& r);

// Fault-injection helpers shared by the fault and chaos tests.

// Polls `f` every 20 ms until it holds or `timeout` passes.
bool eventually(const std::function<bool()>& f, std::chrono::milliseconds timeout);

// A proxy process accepts connections before its store connection is up (/readyz does not wait
// for the store, by design): true once the proxy on `port` judges writes (a creating PUT of a
// path of its own, "/warm-up-<port>", is answered with something else than 503), within `timeout`.
bool judges_writes(std::uint16_t port, std::chrono::milliseconds timeout = std::chrono::seconds(5));

class nginx_webdav;
// The running nginx's pid (from its pid file, checked against /proc), to pause it (SIGSTOP: a
// slow origin) or kill it mid-request (SIGKILL); 0 when unknown.
pid_t nginx_pid(const nginx_webdav& nginx);

}  // namespace ifm::test
