// A deterministic simulator of the write protocol (SPEC §5), after FoundationDB's simulation and
// TigerBeetle's VOPR: the real `write_machine` and the real `memory_backend` run single-threaded
// in a simulated world (proxies, clients, a legacy origin, a store with faults, a clock), all
// driven by one seed; a checker then judges the recorded history (SPEC I1, I2, I3). A failing
// seed replays exactly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ifm::sim {

// Local mutations of the protocol, applied by the driver around the real code (the protocol's
// files stay untouched), to show that the checker catches each of them.
enum class mutation : std::uint8_t {
    none,
    redirect_keep,       // (a) a 3xx answer commits `keep` (validator kept) instead of unknown
    accepted_release,    // (b) a 202 releases the lease instead of holding it
    unknown_release,     // (c) a 5xx / lost answer releases the lease instead of holding it
    no_lease_margin,     // (d) forward even when less than deadline + margin of the lease remains
    record_leased,       // (e) read_may_record ignores `leased`
    commit_keeps_lost,   // (f) memory_backend::commit keeps the validators when the token lost the lease
    commit_wrong_validator,  // a probe of the I2 check: a `set` commit records another tag than it was given
    retried_ignored,     // decide_commit ignores `retried` (a resent DELETE whose first attempt may have applied)
    snapshot_after_read, // a read that reuses a snapshot takes it after the origin answered instead (issue 12)
};
bool parse_mutation(const std::string& name, mutation& out);
const char* to_string(mutation m);
std::vector<mutation> all_mutations();

struct options {
    bool trace = false;             // record every event with its time (replays are identical)
    mutation mut = mutation::none;
    // Faults that README documents as outside the guarantee (failover to a replica that lacks
    // writes without wait_replicas, an origin applying a write after its lease, `etag: origin` in
    // front of an origin whose ETag does not change on a write): injected in some seeds when on;
    // violations in those seeds are counted apart and do not fail the run.
    bool excluded_faults = true;
};

struct seed_result {
    std::uint64_t seed = 0;
    bool failed = false;            // a violation in a seed without excluded faults
    bool excluded = false;          // a violation in a seed with an excluded fault
    std::vector<std::string> excluded_kinds;   // which excluded faults the seed injected
    std::vector<std::string> violations;
    std::string params;             // the world's parameters, one line
    std::string trace;              // filled when options::trace
    // Counters, for the run summary.
    std::uint64_t events = 0, writes = 0, forwarded = 0, applied = 0, rejected = 0, busy = 0;
};

seed_result run_seed(std::uint64_t seed, const options& opt);

}  // namespace ifm::sim
