// YAML loader for the schema of SPEC §7. It never stops at the first problem: every error is
// collected with its dotted path and 1-based line, so one --check-config run shows them all.
#include "config/config.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <boost/asio/ip/network_v4.hpp>
#include <boost/asio/ip/network_v6.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <unordered_map>
#include <variant>

namespace ifm::config {
namespace {

using node = YAML::Node;

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;
constexpr std::size_t GiB = 1024 * MiB;
constexpr std::uint64_t max_count = 1'000'000;
// Longer timers are always a typo, and keeping them small keeps `now() + d` far from overflow.
constexpr duration max_duration = 24h;

// Unsigned decimal digits only: no sign, no blanks, no base prefix.
std::optional<std::uint64_t> parse_digits(std::string_view s) {
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
    return v;
}

// "15s" -> {"15", "s"}
std::pair<std::string_view, std::string_view> split_unit(std::string_view s) {
    auto i = std::min(s.find_first_not_of("0123456789"), s.size());
    return {s.substr(0, i), s.substr(i)};
}

bool is_name_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
}
bool is_name(std::string_view s) { return !s.empty() && std::ranges::all_of(s, is_name_char); }

// RFC 9110 tchar: what header names and method names are made of.
bool is_token(std::string_view s) {
    return !s.empty() && std::ranges::all_of(s, [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) ||
               std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    });
}

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string format_duration(duration d) {
    auto ms = d.count();
    if (ms != 0 && ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
    if (ms != 0 && ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
    if (ms != 0 && ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
    return std::to_string(ms) + "ms";
}

std::string format_size(std::size_t n) {
    if (n != 0 && n % GiB == 0) return std::to_string(n / GiB) + "GiB";
    if (n != 0 && n % MiB == 0) return std::to_string(n / MiB) + "MiB";
    if (n != 0 && n % KiB == 0) return std::to_string(n / KiB) + "KiB";
    return std::to_string(n);
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diag = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            std::size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
            diag = up;
        }
    }
    return row[b.size()];
}

// "; did you mean 'etag'?" when a candidate is within two edits, else "".
template <class Names>
std::string suggestion(std::string_view word, const Names& candidates) {
    std::string best;
    std::size_t best_distance = 3;
    for (std::string_view c : candidates) {
        if (auto d = edit_distance(word, c); d < best_distance) best = c, best_distance = d;
    }
    return best.empty() ? "" : "; did you mean '" + best + "'?";
}

std::optional<std::string> percent_decode(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out += s[i];
            continue;
        }
        unsigned v = 0;
        if (i + 2 >= s.size()) return std::nullopt;
        auto [end, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
        if (ec != std::errc{} || end != s.data() + i + 3) return std::nullopt;
        out += static_cast<char>(v);
        i += 2;
    }
    return out;
}

constexpr std::string_view url_usage =
    "expected redis://[[user]:password@]host[:port][/db], unix:///absolute/path[?db=N], "
    "redis-sentinel://host:port,host:port/master-name[/db] or redis-cluster://host:port,host:port";

struct store_url {
    std::string url;                      // the password removed, so the URL can be logged
    std::optional<std::string> password;  // percent-decoded
};

// Validates store.url; on failure returns the reason.
std::variant<store_url, std::string> split_store_url(std::string_view url) {
    auto valid_db = [](std::string_view db) {
        auto n = parse_digits(db);
        return n && *n <= INT_MAX;
    };
    if (url.starts_with("unix://")) {
        auto rest = url.substr(7);
        auto q = rest.find('?');
        auto path = rest.substr(0, q);
        if (path.size() < 2 || path[0] != '/') return "the unix socket path must be absolute; " + std::string(url_usage);
        if (q != std::string_view::npos && !(rest.substr(q + 1).starts_with("db=") && valid_db(rest.substr(q + 4))))
            return "the only query parameter is db=N; " + std::string(url_usage);
        return store_url{std::string(url), std::nullopt};
    }
    std::string_view scheme;
    for (std::string_view s : {"redis://", "redis-sentinel://", "redis-cluster://"})
        if (url.starts_with(s)) scheme = s;
    if (scheme.empty()) return std::string(url_usage);
    const bool sentinel = scheme == "redis-sentinel://", cluster = scheme == "redis-cluster://";
    auto rest = url.substr(scheme.size());
    store_url out;
    std::string user;
    if (auto at = rest.rfind('@'); at != std::string_view::npos) {
        auto userinfo = rest.substr(0, at);
        rest = rest.substr(at + 1);
        auto colon = userinfo.find(':');
        // Clients disagree on whether "redis://word@host" names a user or a password.
        if (colon == std::string_view::npos)
            return std::string("write redis://:password@host or redis://user:password@host");
        user = userinfo.substr(0, colon);
        if (colon + 1 < userinfo.size()) {
            out.password = percent_decode(userinfo.substr(colon + 1));
            if (!out.password) return std::string("bad percent-encoding in the password");
        }
    }
    auto slash = rest.find('/');
    auto hosts = rest.substr(0, slash);
    auto path = slash == std::string_view::npos ? std::optional<std::string_view>{} : rest.substr(slash + 1);
    // Sentinels and cluster nodes are lists; each host gets Redis's (or Sentinel's) default port,
    // as in the URLs of redis-cli and client libraries.
    for (;;) {
        auto comma = hosts.find(',');
        if (comma != std::string_view::npos && !sentinel && !cluster) return std::string(url_usage);
        auto host_port = std::string(hosts.substr(0, comma));
        auto colon = host_port.rfind(':');
        if (colon == std::string::npos || (host_port.starts_with('[') && colon < host_port.find(']')))
            host_port += sentinel ? ":26379" : ":6379";
        auto ep = parse_endpoint(host_port);
        if (!ep || ep->port == 0) return std::string(url_usage);
        if (comma == std::string_view::npos) break;
        hosts = hosts.substr(comma + 1);
    }
    if (sentinel) {
        auto name = path ? path->substr(0, path->find('/')) : std::string_view{};
        if (name.empty()) return "name the master: redis-sentinel://host:port,host:port/master-name";
        if (name.size() < path->size() && !valid_db(path->substr(name.size() + 1)))
            return "the database must be a number; " + std::string(url_usage);
    } else if (cluster) {
        if (path) return std::string("a redis-cluster:// URL has no path: Redis Cluster has database 0 only");
    } else if (path && !valid_db(*path)) {
        return "the database must be a number; " + std::string(url_usage);
    }
    // "user:@" keeps the user and says "no password here" (the store then uses store.password).
    out.url = std::string(scheme) + (user.empty() ? "" : user + ":@") + std::string(rest);
    return out;
}

bool is_ip_literal(const std::string& host) {
    unsigned char buf[sizeof(in6_addr)];
    return ::inet_pton(AF_INET, host.c_str(), buf) == 1 || ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::optional<std::string> getenv_nonempty(const char* name) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return std::nullopt;
    return std::string(v);
}

// One key of a mapping and how to read its value. Sections (mappings of their own) are
// flagged so that known_keys() lists leaves only.
struct field {
    std::string_view key;
    std::function<void(const node& value, const std::string& path)> read;
    bool section = false;
};
using fields = std::vector<field>;

std::string join(const std::string& path, std::string_view key) {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
}

class reader {
public:
    load_result run(const node& root);

    fields top_fields(config& c);
    fields store_fields(store_config& s);
    fields upstream_fields(upstream_config& u);
    fields tls_fields(upstream_tls_config& t);
    fields listen_tls_fields(listen_tls_config& t);
    fields route_fields(route_config& r);
    fields match_fields(route_match& m);
    fields idempotency_fields(idempotency_config& i);
    fields limits_fields(limits_config& l);
    fields headers_fields(headers_config& h);
    fields log_fields(log_config& l);
    fields dependency_fields(dependency_rule& d);

    // What reading a value of the wrong kind reports ("expected a duration..."): json_schema()
    // describes each key with it.
    std::string expected_of(const field& f) {
        errors_.clear();
        lines_[""] = 1;
        f.read(YAML::Load("{probe: [1]}"), std::string(f.key));
        return errors_.empty() ? std::string() : errors_.back().message;
    }

private:
    std::vector<error> errors_;
    std::unordered_map<std::string, int> lines_;  // dotted path -> line of its key

    void fail(int line, std::string path, std::string message) {
        errors_.push_back({std::move(path), line, std::move(message)});
    }
    void fail(const node& at, std::string path, std::string message) {
        int line = at.Mark().line >= 0 ? at.Mark().line + 1 : line_at(path);
        fail(line, std::move(path), std::move(message));
    }
    // Line of a path, or of its closest recorded parent (a defaulted key has no line of its own).
    int line_at(std::string path) const {
        for (;;) {
            if (auto it = lines_.find(path); it != lines_.end()) return it->second;
            auto cut = path.find_last_of(".[");
            if (cut == std::string::npos) return lines_.at("");
            path.resize(cut);
        }
    }
    bool present(const std::string& path) const { return lines_.contains(path); }
    // Cross-checks skip parts that already failed: their values are defaults, not the user's.
    bool failed_under(const std::string& path) const {
        return std::ranges::any_of(errors_, [&](const error& e) {
            return e.path == path || e.path.starts_with(path + ".") || e.path.starts_with(path + "[");
        });
    }

    bool read_map(const node& n, const std::string& path, const fields& fs);
    void read_upstreams(const node& n, const std::string& path, config& c);
    void check_tls(const upstream_config& u, const std::string& path);
    void read_listen_tls(const node& n, const std::string& path, listen_tls_config& t);
    void read_routes(const node& n, const std::string& path, config& c);
    void read_dependencies(const node& n, const std::string& path, std::vector<dependency_rule>& out);
    void finish_store(store_config& s);
    void check(config& c);

    const std::string* scalar(const node& n, const std::string& path, const std::string& expected);
    void text(const node& n, const std::string& path, std::string& out,
              bool (*valid)(std::string_view) = nullptr, const char* expected = "expected a string");
    void integer(const node& n, const std::string& path, auto& out, std::uint64_t min, std::uint64_t max);
    void dur(const node& n, const std::string& path, duration& out, duration min = 1ms);
    void dur(const node& n, const std::string& path, std::optional<duration>& out, duration min = 1ms) {
        duration d{-1};
        dur(n, path, d, min);
        if (d.count() >= 0) out = d;
    }
    void size(const node& n, const std::string& path, std::size_t& out, std::size_t min = 0,
              std::size_t max = std::numeric_limits<std::size_t>::max());
    std::optional<endpoint> endp(const node& n, const std::string& path, bool allow_port_zero);
    void methods(const node& n, const std::string& path, std::vector<std::string>& out, bool unsafe_only);
    void header_names(const node& n, const std::string& path, std::vector<std::string>& out);
    template <class Accept>
    void list(const node& n, const std::string& path, std::string_view example, std::vector<std::string>& out,
              Accept accept);
    template <class E>
    void choice(const node& n, const std::string& path, E& out,
                std::initializer_list<std::pair<std::string_view, E>> options);
    void file(const node& n, const std::string& path, std::string& out);
    void directory(const node& n, const std::string& path, std::string& out);
    void boolean(const node& n, const std::string& path, bool& out) {
        choice(n, path, out, {{"true", true}, {"false", false}});
    }
};

std::string got(const node& n) {
    if (n.IsMap()) return ", got a mapping";
    if (n.IsSequence()) return ", got a list";
    if (n.IsNull()) return ", got nothing";
    return "";
}

const std::string* reader::scalar(const node& n, const std::string& path, const std::string& expected) {
    if (n.IsScalar()) return &n.Scalar();
    fail(n, path, expected + got(n));
    return nullptr;
}

void reader::text(const node& n, const std::string& path, std::string& out, bool (*valid)(std::string_view),
                  const char* expected) {
    auto s = scalar(n, path, expected);
    if (s && valid && !valid(*s)) fail(n, path, expected);
    else if (s) out = *s;
}

// A path to a file that must be readable now (certificates and keys: better at load than at
// the first connection).
void reader::file(const node& n, const std::string& path, std::string& out) {
    auto s = scalar(n, path, "expected a path to a readable file");
    if (!s) return;
    if (s->empty()) return fail(n, path, "expected a path to a readable file");
    int fd = ::open(s->c_str(), O_RDONLY | O_CLOEXEC);
    char byte;
    if (fd < 0 || ::read(fd, &byte, 1) < 0) {   // read too: a directory opens, then fails
        int e = errno;
        if (fd >= 0) ::close(fd);
        return fail(n, path, "cannot read '" + *s + "': " + std::strerror(e));
    }
    ::close(fd);
    out = *s;
}

// A directory the proxy can make files in now (an explicit limits.spool_dir: better refused at
// load than found read-only by the first slow client).
void reader::directory(const node& n, const std::string& path, std::string& out) {
    auto s = scalar(n, path, "expected a path to a writable directory");
    if (!s) return;
    if (s->empty() || (*s)[0] != '/') return fail(n, path, "expected an absolute path to a writable directory");
    struct stat st {};
    if (::stat(s->c_str(), &st) != 0) return fail(n, path, "cannot use '" + *s + "': " + std::strerror(errno));
    if (!S_ISDIR(st.st_mode)) return fail(n, path, "'" + *s + "' is not a directory");
    if (::access(s->c_str(), W_OK | X_OK) != 0)
        return fail(n, path, "cannot write in '" + *s + "': " + std::strerror(errno));
    out = *s;
}

void reader::integer(const node& n, const std::string& path, auto& out, std::uint64_t min, std::uint64_t max) {
    auto expected = "expected an integer from " + std::to_string(min) + " to " + std::to_string(max);
    auto s = scalar(n, path, expected);
    if (!s) return;
    auto v = parse_digits(*s);
    if (!v || *v < min || *v > max) return fail(n, path, expected);
    out = static_cast<std::remove_reference_t<decltype(out)>>(*v);
}

void reader::dur(const node& n, const std::string& path, duration& out, duration min) {
    std::string expected = "expected a duration like 50ms or 15s";
    auto s = scalar(n, path, expected);
    if (!s) return;
    auto d = parse_duration(*s);
    if (!d && parse_digits(*s)) return fail(n, path, expected + " (a unit is required)");
    if (!d) return fail(n, path, expected);
    if (*d < min) return fail(n, path, "must be at least " + format_duration(min));
    if (*d > max_duration) return fail(n, path, "must be at most " + format_duration(max_duration));
    out = *d;
}

void reader::size(const node& n, const std::string& path, std::size_t& out, std::size_t min, std::size_t max) {
    auto s = scalar(n, path, "expected a size like 512, 16KiB or 8MiB");
    if (!s) return;
    auto v = parse_size(*s);
    if (!v) return fail(n, path, "expected a size like 512, 16KiB or 8MiB");
    if (*v < min || *v > max) {
        return fail(n, path, max == std::numeric_limits<std::size_t>::max()
                                 ? "must be at least " + format_size(min)
                                 : "must be between " + format_size(min) + " and " + format_size(max));
    }
    out = *v;
}

std::optional<endpoint> reader::endp(const node& n, const std::string& path, bool allow_port_zero) {
    std::string expected = "expected host:port or [ipv6]:port";
    auto s = scalar(n, path, expected);
    if (!s) return std::nullopt;
    auto ep = parse_endpoint(*s);
    if (!ep) fail(n, path, expected);
    else if (ep->port == 0 && !allow_port_zero) fail(n, path, "port must be between 1 and 65535");
    else if (allow_port_zero && !is_ip_literal(ep->host) && ep->host != "localhost")
        // Listen addresses are bound, never resolved: a name would only fail at start.
        fail(n, path, "expected an IP address (or localhost) to listen on, not the host name '" + ep->host + "'");
    else return ep;
    return std::nullopt;
}

template <class E>
void reader::choice(const node& n, const std::string& path, E& out,
                    std::initializer_list<std::pair<std::string_view, E>> options) {
    if (n.IsScalar()) {
        for (auto& [name, value] : options) {
            if (n.Scalar() == name) {
                out = value;
                return;
            }
        }
    }
    std::string list;
    for (auto& [name, value] : options) list += (list.empty() ? "" : "|") + std::string(name);
    fail(n, path, "expected one of " + list + got(n));
}

// A list of scalars; reports non-scalars and duplicates. `accept` vets one item (and may rewrite it).
template <class Accept>
void reader::list(const node& n, const std::string& path, std::string_view example, std::vector<std::string>& out,
                  Accept accept) {
    if (!n.IsSequence()) return fail(n, path, "expected a list like " + std::string(example) + got(n));
    std::vector<std::string> items;
    std::size_t i = 0;
    for (const auto& item : n) {
        auto item_path = path + "[" + std::to_string(i++) + "]";
        if (!item.IsScalar()) {
            fail(item, item_path, "expected a list like " + std::string(example));
            continue;
        }
        std::string value = item.Scalar();
        if (auto why = accept(value)) fail(item, item_path, *why);
        else if (std::ranges::find(items, value) != items.end()) fail(item, item_path, "duplicate '" + value + "'");
        else items.push_back(std::move(value));
    }
    out = std::move(items);
}

void reader::methods(const node& n, const std::string& path, std::vector<std::string>& out, bool unsafe_only) {
    list(n, path, "[PUT, PATCH]", out, [&](std::string& m) -> std::optional<std::string> {
        if (!is_token(m) || std::ranges::any_of(m, [](char c) { return std::islower(static_cast<unsigned char>(c)); }))
            return "expected an upper-case HTTP method like PUT";
        // Safe methods never change the resource, so there is nothing to judge.
        if (unsafe_only && (m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "TRACE"))
            return m + " is a safe method; only unsafe methods can be judged";
        return std::nullopt;
    });
}

void reader::header_names(const node& n, const std::string& path, std::vector<std::string>& out) {
    list(n, path, "[Accept, Accept-Language]", out, [](std::string& h) -> std::optional<std::string> {
        if (!is_token(h)) return "expected a header name like Accept";
        h = lower(std::move(h));  // header names are case-insensitive; the key builder wants one spelling
        return std::nullopt;
    });
}

bool reader::read_map(const node& n, const std::string& path, const fields& fs) {
    if (!n.IsMap()) {
        fail(n, path, "expected a mapping" + got(n));
        return false;
    }
    std::vector<std::string_view> known;
    for (auto& f : fs) known.push_back(f.key);
    for (const auto& entry : n) {  // not it->first: yaml-cpp's operator-> returns a temporary
        const node& key = entry.first;
        if (!key.IsScalar()) {
            fail(key, path, "expected a plain key");
            continue;
        }
        auto child = join(path, key.Scalar());
        auto f = std::ranges::find(fs, key.Scalar(), &field::key);
        if (f == fs.end()) {
            fail(key, path, "unknown key '" + key.Scalar() + "'" + suggestion(key.Scalar(), known));
        } else if (present(child)) {
            fail(key, child, "duplicate key");
        } else {
            lines_[child] = key.Mark().line + 1;
            f->read(entry.second, child);
        }
    }
    return true;
}

fields reader::top_fields(config& c) {
    return {
        {"listen", [&](auto& v, auto& p) { c.listen = endp(v, p, true).value_or(c.listen); }},
        {"listen_tls", [&](auto& v, auto& p) { read_listen_tls(v, p, c.listen_tls); }, true},
        {"admin_listen", [&](auto& v, auto& p) { c.admin_listen = endp(v, p, true); }},
        {"workers", [&](auto& v, auto& p) { integer(v, p, c.workers, 0, 256); }},
        {"store", [&](auto& v, auto& p) { read_map(v, p, store_fields(c.store)); }, true},
        {"upstreams", [&](auto& v, auto& p) { read_upstreams(v, p, c); }, true},
        {"routes", [&](auto& v, auto& p) { read_routes(v, p, c); }, true},
        {"limits", [&](auto& v, auto& p) { read_map(v, p, limits_fields(c.limits)); }, true},
        {"headers", [&](auto& v, auto& p) { read_map(v, p, headers_fields(c.headers)); }, true},
        {"on_store_error", [&](auto& v, auto& p) {
             choice(v, p, c.on_store_error,
                    {{"fail_closed", store_error_policy::fail_closed}, {"fail_open", store_error_policy::fail_open}});
         }},
        {"log", [&](auto& v, auto& p) { read_map(v, p, log_fields(c.log)); }, true},
    };
}

fields reader::store_fields(store_config& s) {
    return {
        {"kind", [&](auto& v, auto& p) { choice(v, p, s.kind, {{"redis", store_kind::redis}, {"memory", store_kind::memory}}); }},
        {"url", [&](auto& v, auto& p) { text(v, p, s.url); }},  // checked in finish_store, after the env override
        {"password", [&](auto& v, auto& p) { text(v, p, s.password); }},
        {"sentinel_username", [&](auto& v, auto& p) { text(v, p, s.sentinel_username); }},
        {"sentinel_password", [&](auto& v, auto& p) { text(v, p, s.sentinel_password); }},
        {"key_prefix", [&](auto& v, auto& p) {
             text(v, p, s.key_prefix, [](std::string_view k) { return is_name(k) && k.size() <= 64; },
                  "expected 1 to 64 characters of A-Z a-z 0-9 _ . -");
         }},
        {"timeout", [&](auto& v, auto& p) { dur(v, p, s.timeout); }},
        {"connect_timeout", [&](auto& v, auto& p) { dur(v, p, s.connect_timeout); }},
        {"wait_replicas", [&](auto& v, auto& p) { integer(v, p, s.wait_replicas, 0, 16); }},
        {"wait_timeout", [&](auto& v, auto& p) { dur(v, p, s.wait_timeout); }},
        {"young_server_wait", [&](auto& v, auto& p) { boolean(v, p, s.young_server_wait); }},
        {"validator_ttl", [&](auto& v, auto& p) { dur(v, p, s.validator_ttl); }},
        {"snapshot_reuse", [&](auto& v, auto& p) { dur(v, p, s.snapshot_reuse, 0ms); }},
    };
}

fields reader::upstream_fields(upstream_config& u) {
    return {
        {"address", [&](auto& v, auto& p) {
             if (auto ep = endp(v, p, false)) u.host = ep->host, u.port = ep->port;
         }},
        {"connect_timeout", [&](auto& v, auto& p) { dur(v, p, u.connect_timeout); }},
        {"request_timeout", [&](auto& v, auto& p) { dur(v, p, u.request_timeout); }},
        {"pool_wait", [&](auto& v, auto& p) { dur(v, p, u.pool_wait, 0ms); }},
        {"max_connections", [&](auto& v, auto& p) { integer(v, p, u.max_connections, 1, max_count); }},
        {"max_idle_connections", [&](auto& v, auto& p) { integer(v, p, u.max_idle_connections, 0, max_count); }},
        {"idle_timeout", [&](auto& v, auto& p) { dur(v, p, u.idle_timeout); }},
        {"host_header", [&](auto& v, auto& p) {
             // Sent verbatim to the origin: restricting it to host[:port] rules out header injection.
             text(v, p, u.host_header, [](std::string_view h) {
                 return !h.empty() && std::ranges::all_of(h, [](char c) { return is_name_char(c) || c == ':' || c == '[' || c == ']'; });
             }, "expected a host name like api.example.com or api.example.com:8080");
         }},
        {"tls", [&](auto& v, auto& p) { read_map(v, p, tls_fields(u.tls)); }, true},
    };
}

fields reader::listen_tls_fields(listen_tls_config& t) {
    return {
        {"certificate", [&](auto& v, auto& p) { file(v, p, t.certificate); }},
        {"key", [&](auto& v, auto& p) { file(v, p, t.key); }},
    };
}

void reader::read_listen_tls(const node& n, const std::string& p, listen_tls_config& t) {
    if (!read_map(n, p, listen_tls_fields(t))) return;
    for (auto key : {"certificate", "key"}) {
        if (!present(p + "." + key)) {
            fail(n, p + "." + key, "required key missing");
            t = {};
        }
    }
}

fields reader::tls_fields(upstream_tls_config& t) {
    return {
        {"enabled", [&](auto& v, auto& p) { boolean(v, p, t.enabled); }},
        {"ca_file", [&](auto& v, auto& p) { file(v, p, t.ca_file); }},
        {"verify", [&](auto& v, auto& p) { boolean(v, p, t.verify); }},
        {"server_name", [&](auto& v, auto& p) {
             text(v, p, t.server_name, [](std::string_view h) {
                 return !h.empty() && std::ranges::all_of(h, [](char c) { return is_name_char(c) || c == ':'; });
             }, "expected a host name like api.example.com (or an IP address)");
         }},
        {"client_certificate", [&](auto& v, auto& p) { file(v, p, t.client_certificate); }},
        {"client_key", [&](auto& v, auto& p) { file(v, p, t.client_key); }},
    };
}

fields reader::route_fields(route_config& r) {
    return {
        {"name", [&](auto& v, auto& p) { text(v, p, r.name, is_name, "expected a name of A-Z a-z 0-9 _ . -"); }},
        {"match", [&](auto& v, auto& p) { read_map(v, p, match_fields(r.match)); }, true},
        {"upstream", [&](auto& v, auto& p) { text(v, p, r.upstream, is_name, "expected the name of an upstream"); }},
        {"track", [&](auto& v, auto& p) { boolean(v, p, r.track); }},
        {"etag", [&](auto& v, auto& p) {
             choice(v, p, r.etag, {{"origin", etag_mode::origin}, {"hash", etag_mode::hash}, {"auto", etag_mode::auto_}});
         }},
        {"methods", [&](auto& v, auto& p) { methods(v, p, r.methods, true); }},
        {"require_precondition", [&](auto& v, auto& p) { boolean(v, p, r.require_precondition); }},
        {"enforce", [&](auto& v, auto& p) {
             choice(v, p, r.enforce, {{"off", enforce_mode::off}, {"report", enforce_mode::report}, {"on", enforce_mode::on}});
         }},
        {"reject_status", [&](auto& v, auto& p) { choice(v, p, r.reject_status, {{"409", 409u}, {"412", 412u}}); }},
        {"write_lease", [&](auto& v, auto& p) { dur(v, p, r.write_lease); }},
        {"lease_margin", [&](auto& v, auto& p) { dur(v, p, r.lease_margin, 0ms); }},
        {"settle_time", [&](auto& v, auto& p) { dur(v, p, r.settle_time, 0ms); }},
        {"unjudged_writes", [&](auto& v, auto& p) {
             choice(v, p, r.unjudged_writes, {{"lease", unjudged_policy::lease}, {"refuse", unjudged_policy::refuse}});
         }},
        {"on_busy", [&](auto& v, auto& p) { choice(v, p, r.on_busy, {{"reject", busy_policy::reject}, {"wait", busy_policy::wait}}); }},
        {"busy_wait", [&](auto& v, auto& p) { dur(v, p, r.busy_wait, 0ms); }},
        {"revalidate_on_mismatch", [&](auto& v, auto& p) { boolean(v, p, r.revalidate_on_mismatch); }},
        {"refresh_after_write", [&](auto& v, auto& p) { boolean(v, p, r.refresh_after_write); }},
        {"vary", [&](auto& v, auto& p) { header_names(v, p, r.vary); }},
        {"query", [&](auto& v, auto& p) {
             choice(v, p, r.query, {{"keep", query_mode::keep}, {"sorted", query_mode::sorted}, {"ignore", query_mode::ignore}});
         }},
        {"dependencies", [&](auto& v, auto& p) { read_dependencies(v, p, r.dependencies); }, true},
        {"idempotency", [&](auto& v, auto& p) { read_map(v, p, idempotency_fields(r.idempotency)); }, true},
    };
}

fields reader::idempotency_fields(idempotency_config& i) {
    return {
        {"enabled", [&](auto& v, auto& p) { boolean(v, p, i.enabled); }},
        {"ttl", [&](auto& v, auto& p) { dur(v, p, i.ttl, 1s); }},
        {"max_response_bytes", [&](auto& v, auto& p) { size(v, p, i.max_response_bytes, 0, 16 * MiB); }},
    };
}

fields reader::dependency_fields(dependency_rule& d) {
    return {
        {"path", [&](auto& v, auto& p) {
             text(v, p, d.path, [](std::string_view s) { return path_template_vars(s).has_value(); },
                  "expected a path template like /users/{id}/email");
         }},
        {"invalidates", [&](auto& v, auto& p) {
             list(v, p, "[/users/{id}, /users]", d.invalidates, [](std::string& t) -> std::optional<std::string> {
                 if (!path_template_vars(t)) return "expected a path template like /users/{id}";
                 return std::nullopt;
             });
         }},
    };
}

void reader::read_dependencies(const node& n, const std::string& path, std::vector<dependency_rule>& out) {
    if (!n.IsSequence()) return fail(n, path, "expected a list of {path, invalidates} rules" + got(n));
    for (const auto& item : n) {
        auto p = path + "[" + std::to_string(out.size()) + "]";
        lines_[p] = item.Mark().line + 1;
        dependency_rule d;
        if (read_map(item, p, dependency_fields(d))) {
            if (!present(p + ".path")) fail(item, p + ".path", "required key missing");
            if (!present(p + ".invalidates")) fail(item, p + ".invalidates", "required key missing");
        }
        if (!failed_under(p)) {
            auto bound = path_template_vars(d.path).value_or(std::vector<std::string>{});
            if (d.invalidates.empty())
                fail(line_at(p + ".invalidates"), p + ".invalidates", "expected at least one path template");
            if (d.invalidates.size() > max_dependents)
                fail(line_at(p + ".invalidates"), p + ".invalidates",
                     "at most " + std::to_string(max_dependents) + " resources per rule (each is leased with the write)");
            for (std::size_t i = 0; i < d.invalidates.size(); ++i) {
                auto names = path_template_vars(d.invalidates[i]).value_or(std::vector<std::string>{});
                for (const auto& name : names)
                    if (std::ranges::find(bound, name) == bound.end())
                        fail(line_at(p + ".invalidates"), p + ".invalidates[" + std::to_string(i) + "]",
                             "{" + name + "} is not bound by path '" + d.path + "'");
            }
        }
        out.push_back(std::move(d));
    }
}

fields reader::match_fields(route_match& m) {
    return {
        {"path_prefix", [&](auto& v, auto& p) {
             text(v, p, m.path_prefix, [](std::string_view s) {
                 return s.starts_with('/') && std::ranges::none_of(s, [](char c) {
                     return c == '?' || c == '#' || std::isspace(static_cast<unsigned char>(c)) ||
                            std::iscntrl(static_cast<unsigned char>(c));
                 });
             }, "expected a path starting with / (no query, no blanks)");
         }},
        {"host", [&](auto& v, auto& p) {
             text(v, p, m.host, is_name, "expected a host name without port");
             m.host = lower(std::move(m.host));
         }},
        {"methods", [&](auto& v, auto& p) { methods(v, p, m.methods, false); }},
    };
}

fields reader::limits_fields(limits_config& l) {
    return {
        {"max_header_bytes", [&](auto& v, auto& p) { size(v, p, l.max_header_bytes, KiB, MiB); }},
        {"max_body_bytes", [&](auto& v, auto& p) { size(v, p, l.max_body_bytes); }},
        {"max_hash_body", [&](auto& v, auto& p) { size(v, p, l.max_hash_body); }},
        {"max_buffered_bytes", [&](auto& v, auto& p) { size(v, p, l.max_buffered_bytes); }},
        {"max_spooled_bytes", [&](auto& v, auto& p) { size(v, p, l.max_spooled_bytes, 0); }},
        {"max_spooled_response", [&](auto& v, auto& p) { size(v, p, l.max_spooled_response, 0); }},
        {"spool_dir", [&](auto& v, auto& p) { directory(v, p, l.spool_dir); }},
        {"max_prebuffered_body", [&](auto& v, auto& p) { size(v, p, l.max_prebuffered_body, 0); }},
        {"max_target_bytes", [&](auto& v, auto& p) { size(v, p, l.max_target_bytes, 1, MiB); }},
        {"idle_timeout", [&](auto& v, auto& p) { dur(v, p, l.idle_timeout); }},
        {"header_timeout", [&](auto& v, auto& p) { dur(v, p, l.header_timeout); }},
        {"body_timeout", [&](auto& v, auto& p) { dur(v, p, l.body_timeout); }},
        {"tunnel_idle_timeout", [&](auto& v, auto& p) { dur(v, p, l.tunnel_idle_timeout); }},
        {"min_body_rate", [&](auto& v, auto& p) { size(v, p, l.min_body_rate); }},
        {"max_header_fields", [&](auto& v, auto& p) { integer(v, p, l.max_header_fields, 1, 10000); }},
        {"max_connections", [&](auto& v, auto& p) { integer(v, p, l.max_connections, 1, max_count); }},
        {"max_requests_per_connection", [&](auto& v, auto& p) {
             integer(v, p, l.max_requests_per_connection, 0, std::numeric_limits<std::uint32_t>::max());
         }},
        {"drain_delay", [&](auto& v, auto& p) { dur(v, p, l.drain_delay, 0ms); }},
        {"drain_timeout", [&](auto& v, auto& p) { dur(v, p, l.drain_timeout, 0ms); }},
    };
}

fields reader::headers_fields(headers_config& h) {
    return {
        {"forwarded", [&](auto& v, auto& p) {
             choice(v, p, h.forwarded,
                    {{"x_forwarded", forwarded_style::x_forwarded}, {"forwarded", forwarded_style::forwarded},
                     {"none", forwarded_style::none}});
         }},
        {"via", [&](auto& v, auto& p) { boolean(v, p, h.via); }},
        {"trusted_proxies", [&](auto& v, auto& p) {
             list(v, p, "[10.0.0.0/8, \"::1\"]", h.trusted_proxies, [](std::string& c) -> std::optional<std::string> {
                 if (!parse_cidr(c)) return "expected an IP network like 10.0.0.0/8 or an address";
                 return std::nullopt;
             });
         }},
    };
}

fields reader::log_fields(log_config& l) {
    return {
        {"level", [&](auto& v, auto& p) {
             std::string_view level = l.level;
             choice(v, p, level, {{"trace", "trace"}, {"debug", "debug"}, {"info", "info"}, {"warn", "warn"},
                                  {"error", "error"}, {"critical", "critical"}, {"off", "off"}});
             l.level = level;
         }},
        {"json", [&](auto& v, auto& p) { boolean(v, p, l.json); }},
        {"access_log", [&](auto& v, auto& p) { boolean(v, p, l.access_log); }},
    };
}

void reader::read_upstreams(const node& n, const std::string& path, config& c) {
    // Keys are upstream names, so the generic read_map (fixed keys) does not apply.
    if (!n.IsMap()) return fail(n, path, "expected a mapping of upstream names" + got(n));
    for (const auto& entry : n) {
        const node& key = entry.first;
        if (!key.IsScalar() || !is_name(key.Scalar())) {
            fail(key, path, "an upstream name must be made of A-Z a-z 0-9 _ . -");
            continue;
        }
        auto p = path + "." + key.Scalar();
        if (present(p)) {
            fail(key, p, "duplicate upstream");
            continue;
        }
        lines_[p] = key.Mark().line + 1;
        upstream_config u;
        u.name = key.Scalar();
        if (read_map(entry.second, p, upstream_fields(u))) {
            if (!present(p + ".address")) fail(key, p + ".address", "required key missing");
            else if (u.max_idle_connections > u.max_connections)
                fail(line_at(p + ".max_idle_connections"), p + ".max_idle_connections",
                     "must not exceed max_connections (" + std::to_string(u.max_connections) + ")");
            check_tls(u, p + ".tls");
        }
        c.upstreams.push_back(std::move(u));
    }
}

void reader::check_tls(const upstream_config& u, const std::string& p) {
    if (failed_under(p)) return;
    const auto& t = u.tls;
    if (t.client_certificate.empty() != t.client_key.empty()) {
        auto [have, missing] = t.client_key.empty() ? std::pair{"client_certificate", "client_key"}
                                                     : std::pair{"client_key", "client_certificate"};
        fail(line_at(p + "." + have), p + "." + have, std::string("needs ") + p + "." + missing);
    }
    // Keys under tls without enabled: true would leave the origin on plain HTTP unnoticed.
    if (!t.enabled) {
        for (auto key : {"ca_file", "verify", "server_name", "client_certificate", "client_key"}) {
            if (present(p + "." + key)) {
                fail(line_at(p + "." + key), p + "." + key, "has no effect unless " + p + ".enabled is true");
                break;
            }
        }
    }
}

void reader::read_routes(const node& n, const std::string& path, config& c) {
    if (!n.IsSequence()) return fail(n, path, "expected a list of routes" + got(n));
    for (const auto& item : n) {
        auto i = std::to_string(c.routes.size());
        auto p = path + "[" + i + "]";
        lines_[p] = item.Mark().line + 1;
        route_config r;
        r.name = "route" + i;
        if (read_map(item, p, route_fields(r)) && !present(p + ".upstream"))
            fail(item, p + ".upstream", "required key missing");
        c.routes.push_back(std::move(r));
    }
}

void reader::finish_store(store_config& s) {
    auto env_url = getenv_nonempty("IFM_REDIS_URL");
    if (env_url) s.url = *env_url;
    auto split = split_store_url(s.url);
    if (auto* why = std::get_if<std::string>(&split)) {
        // An overriding URL has no line in the file; say where it came from instead.
        if (env_url) fail(0, "store.url", "from IFM_REDIS_URL: " + *why);
        else fail(line_at("store.url"), "store.url", *why);
    } else {
        auto& url = std::get<store_url>(split);
        s.url = std::move(url.url);
        if (url.password) {
            if (!env_url && present("store.password"))
                fail(line_at("store.password"), "store.password", "the password is also given in store.url; give it once");
            s.password = std::move(*url.password);
        }
    }
    if (auto pw = getenv_nonempty("IFM_REDIS_PASSWORD")) s.password = std::move(*pw);
    // Sentinel credentials with another topology would be silently unused.
    for (const char* key : {"store.sentinel_password", "store.sentinel_username"}) {
        if (present(key) && !s.url.starts_with("redis-sentinel://"))
            fail(line_at(key), key, "only for a redis-sentinel:// store.url");
    }
    if (!s.sentinel_username.empty() && s.sentinel_password.empty() && !failed_under("store"))
        fail(line_at("store.sentinel_username"), "store.sentinel_username", "needs store.sentinel_password");
    // A WAIT holds the worker's connection: longer than connect_timeout, and the connection
    // would be dropped as hung.
    if (s.wait_timeout >= s.connect_timeout && !failed_under("store"))
        fail(line_at("store.wait_timeout"), "store.wait_timeout",
             "must be shorter than store.connect_timeout (" + format_duration(s.connect_timeout) + ")");
}

void reader::check(config& c) {
    if (c.admin_listen && c.admin_listen->port != 0 && *c.admin_listen == c.listen && !failed_under("listen"))
        fail(line_at("admin_listen"), "admin_listen", "must differ from listen");
    if (c.upstreams.empty() && !failed_under("upstreams"))
        fail(line_at("upstreams"), "upstreams", "at least one upstream is required");
    if (c.routes.empty() && !failed_under("routes"))
        fail(line_at("routes"), "routes", "at least one route is required");

    std::vector<std::string_view> upstream_names;
    for (auto& u : c.upstreams) upstream_names.push_back(u.name);
    for (std::size_t i = 0; i < c.routes.size(); ++i) {
        auto& r = c.routes[i];
        auto p = "routes[" + std::to_string(i) + "]";
        for (std::size_t j = 0; j < i; ++j) {
            if (c.routes[j].name == r.name) {
                fail(line_at(p + ".name"), p + ".name",
                     "duplicate route name '" + r.name + "' (also routes[" + std::to_string(j) + "])");
                break;
            }
        }
        if (r.require_precondition && !r.track)
            fail(line_at(p + ".require_precondition"), p + ".require_precondition", "has no effect when track is false");
        if (r.enforce != enforce_mode::on && !r.track && present(p + ".enforce"))
            fail(line_at(p + ".enforce"), p + ".enforce", "has no effect when track is false");
        if (r.idempotency.enabled && !r.track)
            fail(line_at(p + ".idempotency.enabled"), p + ".idempotency.enabled",
                 "needs track: true (only judged writes are recorded)");
        if (!r.dependencies.empty() && !r.track)
            fail(line_at(p + ".dependencies"), p + ".dependencies", "has no effect when track is false");
        if (failed_under(p + ".upstream") || !present(p + ".upstream")) continue;
        auto* up = c.find_upstream(r.upstream);
        if (!up) {
            fail(line_at(p + ".upstream"), p + ".upstream",
                 "unknown upstream '" + r.upstream + "'" + suggestion(r.upstream, upstream_names));
            continue;
        }
        if (!r.track || failed_under(p) || failed_under("upstreams." + up->name)) continue;
        if (r.write_lease <= up->request_timeout + r.lease_margin) {
            fail(line_at(p + ".write_lease"), p + ".write_lease",
                 "must exceed upstreams." + up->name + ".request_timeout (" + format_duration(up->request_timeout) +
                     ") plus lease_margin (" + format_duration(r.lease_margin) +
                     "), because the origin cannot check a fencing token");
        }
        if (r.settle_time && *r.settle_time > r.write_lease)
            fail(line_at(p + ".settle_time"), p + ".settle_time",
                 "must not exceed write_lease (" + format_duration(r.write_lease) + ")");
        if (c.store.validator_ttl < 2 * r.write_lease && !failed_under("store"))
            fail(line_at(present("store.validator_ttl") ? "store.validator_ttl" : p + ".write_lease"),
                 present("store.validator_ttl") ? "store.validator_ttl" : p + ".write_lease",
                 "store.validator_ttl (" + format_duration(c.store.validator_ttl) +
                     ") must be at least twice every route's write_lease");
        if (r.busy_wait >= r.write_lease)
            fail(line_at(p + ".busy_wait"), p + ".busy_wait",
                 "must be shorter than write_lease (" + format_duration(r.write_lease) + ")");
    }
}

load_result reader::run(const node& root) {
    config c;
    int line = root.Mark().line >= 0 ? root.Mark().line + 1 : 1;
    if (!root.IsMap())
        return std::vector<error>{{"", line, root.IsNull() ? "the configuration is empty" : "expected a mapping of keys"}};
    lines_[""] = line;
    read_map(root, "", top_fields(c));
    finish_store(c.store);
    check(c);
    if (errors_.empty()) return c;
    std::ranges::stable_sort(errors_, {}, &error::line);
    return std::move(errors_);
}

}  // namespace

const upstream_config* config::find_upstream(std::string_view name) const {
    auto it = std::ranges::find(upstreams, name, &upstream_config::name);
    return it == upstreams.end() ? nullptr : &*it;
}

std::string error::format(std::string_view file) const {
    std::string out = std::string(file) + ":" + std::to_string(line) + ": ";
    if (!path.empty()) out += path + ": ";
    return out + message;
}

namespace {

std::optional<std::string> interpolate(std::string_view in, std::string& unset) {
    std::string out;
    for (std::size_t i = 0; i < in.size();) {
        if (in.substr(i).starts_with("$${")) {   // escaped: a literal "${"
            out += "${";
            i += 3;
            continue;
        }
        if (!in.substr(i).starts_with("${")) {
            out += in[i++];
            continue;
        }
        auto close = in.find('}', i);
        if (close == std::string_view::npos) {
            unset = "unterminated ${ (write $${ for a literal ${)";
            return std::nullopt;
        }
        auto inner = in.substr(i + 2, close - i - 2);
        auto sep = inner.find(":-");
        auto name = inner.substr(0, sep);
        bool valid = !name.empty() && !std::isdigit(static_cast<unsigned char>(name[0])) &&
                     std::ranges::all_of(name, [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'; });
        if (!valid) {
            unset = "invalid variable reference ${" + std::string(inner) + "}: expected ${NAME} or ${NAME:-default}";
            return std::nullopt;
        }
        const char* value = std::getenv(std::string(name).c_str());
        if (sep != std::string_view::npos) {
            // Shell semantics: the default also replaces an empty value.
            out += value && *value ? std::string_view(value) : inner.substr(sep + 2);
        } else if (value) {
            out += value;
        } else {
            unset = "environment variable " + std::string(name) + " is not set (and ${" + std::string(name) +
                    "} has no default: write ${" + std::string(name) + ":-default})";
            return std::nullopt;
        }
        i = close + 1;
    }
    return out;
}

// Replaces ${VAR} and ${VAR:-default} in every scalar value (not in keys) before the file is
// read, so that every key can take its value from the environment (secrets, per-Pod addresses).
void interpolate_tree(node n, const std::string& path, std::vector<error>& errors) {
    if (n.IsScalar()) {
        const auto& text = n.Scalar();
        if (text.find('$') == std::string::npos) return;
        std::string why;
        auto replaced = interpolate(text, why);
        if (!replaced) errors.push_back({path, n.Mark().line >= 0 ? n.Mark().line + 1 : 0, why});
        else if (*replaced != text) n = *replaced;
    } else if (n.IsSequence()) {
        for (std::size_t i = 0; i < n.size(); ++i) interpolate_tree(n[i], path + "[" + std::to_string(i) + "]", errors);
    } else if (n.IsMap()) {
        for (auto it = n.begin(); it != n.end(); ++it)
            interpolate_tree(it->second, join(path, it->first.IsScalar() ? it->first.Scalar() : "?"), errors);
    }
}

}  // namespace

load_result load_string(std::string_view yaml) {
    node root;
    try {
        root = YAML::Load(std::string(yaml));
    } catch (const YAML::Exception& e) {
        return std::vector<error>{{"", e.mark.line >= 0 ? e.mark.line + 1 : 0, "YAML syntax error: " + e.msg}};
    }
    std::vector<error> unset;
    interpolate_tree(root, "", unset);
    if (!unset.empty()) return unset;
    return reader().run(root);
}

load_result load_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::vector<error>{{"", 0, "cannot read the file: " + std::string(std::strerror(errno))}};
    std::ostringstream text;
    text << in.rdbuf();
    return load_string(text.str());
}

std::vector<std::string> known_keys() {
    reader r;
    config c;
    upstream_config u;
    route_config rt;
    std::vector<std::string> keys;
    auto add = [&](std::string_view prefix, const fields& fs) {
        for (auto& f : fs)
            if (!f.section) keys.push_back(std::string(prefix) + std::string(f.key));
    };
    add("", r.top_fields(c));
    add("store.", r.store_fields(c.store));
    add("upstreams.<name>.", r.upstream_fields(u));
    add("upstreams.<name>.tls.", r.tls_fields(u.tls));
    add("listen_tls.", r.listen_tls_fields(c.listen_tls));
    add("routes[].", r.route_fields(rt));
    add("routes[].match.", r.match_fields(rt.match));
    add("routes[].idempotency.", r.idempotency_fields(rt.idempotency));
    dependency_rule d;
    add("routes[].dependencies[].", r.dependency_fields(d));
    add("limits.", r.limits_fields(c.limits));
    add("headers.", r.headers_fields(c.headers));
    add("log.", r.log_fields(c.log));
    return keys;
}

std::optional<std::vector<std::string>> path_template_vars(std::string_view t) {
    if (!t.starts_with('/')) return std::nullopt;
    std::vector<std::string> names;
    std::string_view rest = t.substr(1);
    for (;;) {
        auto slash = rest.find('/');
        auto seg = rest.substr(0, slash);
        bool last = slash == std::string_view::npos;
        if (seg.empty() && !last) return std::nullopt;   // "//": ambiguous at the origin
        if (seg.find_first_of("{}") != std::string_view::npos) {
            if (seg.size() < 3 || seg.front() != '{' || seg.back() != '}') return std::nullopt;
            auto name = seg.substr(1, seg.size() - 2);
            bool ident = !std::isdigit(static_cast<unsigned char>(name.front())) &&
                         std::ranges::all_of(name, [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
            if (!ident || std::ranges::find(names, name) != names.end()) return std::nullopt;
            names.emplace_back(name);
        } else if (seg == "." || seg == ".." || std::ranges::any_of(seg, [](char c) {
                       return c == '?' || c == '#' || std::isspace(static_cast<unsigned char>(c)) ||
                              std::iscntrl(static_cast<unsigned char>(c));
                   })) {
            return std::nullopt;
        }
        if (last) break;
        rest = rest.substr(slash + 1);
    }
    return names;
}

std::optional<duration> parse_duration(std::string_view text) {
    auto [digits, unit] = split_unit(text);
    auto n = parse_digits(digits);
    if (!n) return std::nullopt;
    // Timers have millisecond resolution; rounding up keeps a tiny timeout from becoming "none".
    if (unit == "us") return duration(static_cast<duration::rep>(*n / 1000 + (*n % 1000 != 0)));
    std::uint64_t factor = unit == "ms" ? 1 : unit == "s" ? 1000 : unit == "m" ? 60'000 : unit == "h" ? 3'600'000 : 0;
    if (factor == 0 || *n > static_cast<std::uint64_t>(std::numeric_limits<duration::rep>::max()) / factor)
        return std::nullopt;
    return duration(static_cast<duration::rep>(*n * factor));
}

std::optional<std::size_t> parse_size(std::string_view text) {
    auto [digits, unit] = split_unit(text);
    auto n = parse_digits(digits);
    if (!n) return std::nullopt;
    static constexpr std::pair<std::string_view, std::uint64_t> units[] = {
        {"", 1}, {"B", 1}, {"kB", 1000}, {"MB", 1000'000}, {"GB", 1000'000'000},
        {"KiB", KiB}, {"MiB", MiB}, {"GiB", GiB}};
    auto u = std::ranges::find(units, unit, &std::pair<std::string_view, std::uint64_t>::first);
    if (u == std::end(units) || *n > std::numeric_limits<std::size_t>::max() / u->second) return std::nullopt;
    return static_cast<std::size_t>(*n * u->second);
}

std::optional<cidr> parse_cidr(std::string_view text) {
    auto slash = text.find('/');
    boost::system::error_code ec;
    auto addr = boost::asio::ip::make_address(std::string(text.substr(0, slash)), ec);
    if (ec) return std::nullopt;
    unsigned max = addr.is_v4() ? 32 : 128;
    unsigned prefix = max;
    if (slash != std::string_view::npos) {
        auto digits = parse_digits(text.substr(slash + 1));
        if (!digits || *digits > max || text.size() - slash - 1 > 3) return std::nullopt;
        prefix = static_cast<unsigned>(*digits);
    }
    return cidr{addr, prefix};
}

bool cidr::contains(const boost::asio::ip::address& a) const {
    auto peer = a;
    if (peer.is_v6() && peer.to_v6().is_v4_mapped())
        peer = boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, peer.to_v6());
    if (peer.is_v4() != network.is_v4()) return false;
    if (peer.is_v4()) {
        auto mine = boost::asio::ip::network_v4(network.to_v4(), prefix).canonical();
        return boost::asio::ip::network_v4(peer.to_v4(), prefix).canonical() == mine;
    }
    auto mine = boost::asio::ip::network_v6(network.to_v6(), prefix).canonical();
    return boost::asio::ip::network_v6(peer.to_v6(), prefix).canonical() == mine;
}

std::optional<endpoint> parse_endpoint(std::string_view text) {
    std::string_view host, port;
    if (text.starts_with('[')) {
        auto close = text.find(']');
        if (close == std::string_view::npos || text.substr(close + 1, 1) != ":") return std::nullopt;
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
        bool ipv6 = host.find(':') != std::string_view::npos && std::ranges::all_of(host, [](char c) {
            return is_name_char(c) || c == ':' || c == '%';
        });
        if (!ipv6) return std::nullopt;
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) return std::nullopt;
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (!is_name(host)) return std::nullopt;
    }
    auto p = parse_digits(port);
    if (!p || *p > 65535) return std::nullopt;
    return endpoint{std::string(host), static_cast<std::uint16_t>(*p)};
}

namespace {

void append_json(std::string& out, std::string_view s) {
    out += '"';
    for (char ch : s) {
        if (ch == '"' || ch == '\\') out += '\\';
        if (static_cast<unsigned char>(ch) < 0x20) continue;
        out += ch;
    }
    out += '"';
}

// The JSON type(s) a key's value may have, from what the loader expects of it.
std::string leaf_schema(const std::string& expected) {
    std::string e = expected.substr(0, expected.find(", got"));
    std::string type;
    if (e.find("true or false") != std::string::npos || e.find("true|false") != std::string::npos)
        type = "\"boolean\"";
    else if (e.find("list") != std::string::npos)
        type = "\"array\",\"items\":{\"type\":\"string\"}";
    else if (e.find("integer") != std::string::npos)
        type = "\"integer\"";
    else if (e.find("size") != std::string::npos)
        type = "[\"string\",\"integer\"]";
    else if (e.starts_with("expected one of ") && e.find(' ', 16) == std::string::npos) {
        type = "\"string\",\"enum\":[";
        std::string_view words(e);
        words.remove_prefix(16);
        for (bool first = true; !words.empty(); first = false) {
            auto bar = words.find('|');
            if (!first) type += ",";
            append_json(type, words.substr(0, bar));
            words = bar == std::string_view::npos ? std::string_view() : words.substr(bar + 1);
        }
        type += "]";
    } else
        type = "\"string\"";
    std::string out = "{\"type\":" + type + ",\"description\":";
    append_json(out, e);
    return out + "}";
}

}  // namespace

std::string json_schema() {
    reader r;
    config c;
    upstream_config u;
    route_config rt;
    auto object = [&](const fields& fs, const std::string& extra) {
        std::string out = "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{";
        bool first = true;
        for (const auto& f : fs) {
            if (f.section) continue;
            if (!first) out += ",";
            first = false;
            append_json(out, f.key);
            out += ":" + leaf_schema(r.expected_of(f));
        }
        return out + extra + "}}";
    };
    auto match = object(r.match_fields(rt.match), "");
    auto idempotency = object(r.idempotency_fields(rt.idempotency), "");
    dependency_rule d;
    auto dependency = object(r.dependency_fields(d), "");
    std::string route = object(r.route_fields(rt), ",\"match\":" + match + ",\"idempotency\":" + idempotency +
                                                       ",\"dependencies\":{\"type\":\"array\",\"items\":" + dependency + "}");
    std::string upstream = object(r.upstream_fields(u), ",\"tls\":" + object(r.tls_fields(u.tls), ""));
    std::string sections =
        ",\"listen_tls\":" + object(r.listen_tls_fields(c.listen_tls), "") +
        ",\"store\":" + object(r.store_fields(c.store), "") +
        ",\"upstreams\":{\"type\":\"object\",\"additionalProperties\":false,"
        "\"patternProperties\":{\"^[A-Za-z0-9_.-]+$\":" + upstream + "}}" +
        ",\"routes\":{\"type\":\"array\",\"items\":" + route + "}" +
        ",\"limits\":" + object(r.limits_fields(c.limits), "") +
        ",\"headers\":" + object(r.headers_fields(c.headers), "") +
        ",\"log\":" + object(r.log_fields(c.log), "");
    std::string top = object(r.top_fields(c), sections);
    // Draft 2020-12; the loader stays the authority (cross-checks, ${VAR} interpolation).
    return "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
           "\"$id\":\"https://github.com/ifmatch-proxy/ifmatch-proxy/docs/config.schema.json\","
           "\"title\":\"ifmatch-proxy configuration\","
           "\"description\":\"Generated from config::known_keys() by ifmatch-proxy --print-config-schema; "
           "see docs/configuration.md.\"," +
           top.substr(1) + "\n";
}

}  // namespace ifm::config
