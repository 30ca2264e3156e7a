// write_sim: runs the write-protocol simulator over a range of seeds (tests/sim/README.md).
//
//   write_sim --seeds N [--start S] [--seconds T] [--jobs J] [--mutation NAME] [--no-excluded]
//   write_sim --seed S --trace          replay one seed, printing every event
//
// Exit status: 0 when no seed violated an invariant (violations in seeds that injected a fault
// README documents as outside the guarantee are reported, not failed), 1 otherwise. With
// --expect-violation the other way round (the mutation tests: the checker must catch it).
#include "tests/sim/sim.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

void usage() {
    std::fprintf(stderr,
                 "usage: write_sim --seeds N [--start S] [--seconds T] [--jobs J] [--mutation NAME]\n"
                 "                 [--no-excluded] [--expect-violation] [--report K] [--quiet]\n"
                 "       write_sim --seed S [--trace] [--mutation NAME]\n"
                 "mutations: none");
    for (auto m : ifm::sim::all_mutations()) std::fprintf(stderr, " %s", ifm::sim::to_string(m));
    std::fprintf(stderr, "\n");
}

void print_failure(const ifm::sim::seed_result& r, const ifm::sim::options& opt, bool with_trace) {
    std::printf("%s seed %llu\n  params: %s\n", r.failed ? "VIOLATION" : "violation (excluded fault)",
                static_cast<unsigned long long>(r.seed), r.params.c_str());
    if (!r.excluded_kinds.empty()) {
        std::printf("  excluded faults injected:");
        for (const auto& k : r.excluded_kinds) std::printf(" %s", k.c_str());
        std::printf("\n");
    }
    for (const auto& v : r.violations) std::printf("  - %s\n", v.c_str());
    if (with_trace) {
        auto traced = opt;
        traced.trace = true;
        auto t = ifm::sim::run_seed(r.seed, traced);   // a seed replays identically
        std::printf("  trace (replay: write_sim --seed %llu --trace%s%s):\n%s",
                    static_cast<unsigned long long>(r.seed), opt.mut == ifm::sim::mutation::none ? "" : " --mutation ",
                    opt.mut == ifm::sim::mutation::none ? "" : ifm::sim::to_string(opt.mut), t.trace.c_str());
    }
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    using clock = std::chrono::steady_clock;
    ifm::sim::options opt;
    std::uint64_t seeds = 0, start = 1;
    bool seeds_given = false, single = false, expect_violation = false, quiet = false;
    double seconds = 0;
    unsigned jobs = 1;
    std::size_t report = 1;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                usage();
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--seeds") {
            seeds = std::stoull(next());
            seeds_given = true;
        } else if (a == "--start") {
            start = std::stoull(next());
        } else if (a == "--seed") {
            start = std::stoull(next());
            seeds = 1;
            seeds_given = true;
            single = true;
        } else if (a == "--seconds") {
            seconds = std::stod(next());
        } else if (a == "--jobs") {
            jobs = static_cast<unsigned>(std::max(1, std::stoi(next())));
        } else if (a == "--trace") {
            opt.trace = true;
        } else if (a == "--mutation") {
            if (!ifm::sim::parse_mutation(next(), opt.mut)) {
                usage();
                return 2;
            }
        } else if (a == "--no-excluded") {
            opt.excluded_faults = false;
        } else if (a == "--expect-violation") {
            expect_violation = true;
        } else if (a == "--report") {
            report = std::stoull(next());
        } else if (a == "--quiet") {
            quiet = true;
        } else {
            usage();
            return 2;
        }
    }
    if (!seeds_given && seconds <= 0) {
        usage();
        return 2;
    }
    if (!seeds_given) seeds = UINT64_MAX - start;

    if (single) {
        auto r = ifm::sim::run_seed(start, opt);
        std::printf("seed %llu\n  params: %s\n", static_cast<unsigned long long>(start), r.params.c_str());
        if (opt.trace) std::printf("%s", r.trace.c_str());
        for (const auto& v : r.violations) std::printf("  - %s\n", v.c_str());
        std::printf("%s: %llu events, %llu writes, %llu forwarded, %llu applied, %llu rejected, %llu busy\n",
                    r.failed ? "VIOLATION" : (r.excluded ? "violation (excluded fault)" : "ok"),
                    static_cast<unsigned long long>(r.events), static_cast<unsigned long long>(r.writes),
                    static_cast<unsigned long long>(r.forwarded), static_cast<unsigned long long>(r.applied),
                    static_cast<unsigned long long>(r.rejected), static_cast<unsigned long long>(r.busy));
        return r.failed ? 1 : 0;
    }

    const auto t0 = clock::now();
    const auto stop_at = seconds > 0 ? t0 + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(seconds))
                                     : clock::time_point::max();
    std::atomic<std::uint64_t> next{0}, done{0}, failed{0}, excluded{0}, events{0}, writes{0}, applied{0};
    std::mutex mu;
    std::vector<ifm::sim::seed_result> failures, excluded_results;
    std::map<std::string, std::uint64_t> excluded_by_kind;
    auto worker = [&] {
        for (;;) {
            const auto i = next.fetch_add(1);
            if (i >= seeds) return;
            if ((i & 63) == 0 && clock::now() >= stop_at) return;
            auto r = ifm::sim::run_seed(start + i, opt);
            if (i % 1009 == 0) {
                // Replays are identical, with or without the trace.
                auto traced = opt;
                traced.trace = true;
                auto again = ifm::sim::run_seed(start + i, traced);
                if (again.violations != r.violations || again.events != r.events || again.writes != r.writes ||
                    again.applied != r.applied) {
                    r.failed = true;
                    r.violations.push_back("the replay with --trace differs: nondeterminism in the simulator");
                }
            }
            done.fetch_add(1);
            events.fetch_add(r.events);
            writes.fetch_add(r.writes);
            applied.fetch_add(r.applied);
            if (r.failed || r.excluded) {
                std::lock_guard lock(mu);
                r.trace.clear();
                if (r.failed) {
                    failed.fetch_add(1);
                    failures.push_back(std::move(r));
                } else {
                    excluded.fetch_add(1);
                    for (const auto& k : r.excluded_kinds) ++excluded_by_kind[k];
                    if (excluded_results.size() < 16) excluded_results.push_back(std::move(r));
                }
            }
        }
    };
    std::vector<std::thread> threads;
    for (unsigned j = 1; j < jobs; ++j) threads.emplace_back(worker);
    worker();
    for (auto& t : threads) t.join();
    const double secs = std::chrono::duration<double>(clock::now() - t0).count();

    std::sort(failures.begin(), failures.end(), [](auto& a, auto& b) { return a.seed < b.seed; });
    if (!quiet || !expect_violation)
        for (std::size_t k = 0; k < failures.size() && k < report; ++k) print_failure(failures[k], opt, k == 0);
    if (failures.size() > report) {
        std::printf("failing seeds:");
        for (std::size_t k = 0; k < failures.size() && k < 50; ++k)
            std::printf(" %llu", static_cast<unsigned long long>(failures[k].seed));
        std::printf("%s\n", failures.size() > 50 ? " ..." : "");
    }
    if (!excluded_results.empty() && !quiet) {
        std::sort(excluded_results.begin(), excluded_results.end(), [](auto& a, auto& b) { return a.seed < b.seed; });
        std::printf("seeds with violations under excluded faults (outside the guarantee, not failures): %llu [",
                    static_cast<unsigned long long>(excluded.load()));
        bool first = true;
        for (const auto& [k, n] : excluded_by_kind) {
            std::printf("%s%s: %llu", first ? "" : ", ", k.c_str(), static_cast<unsigned long long>(n));
            first = false;
        }
        std::printf("], e.g. seed %llu: %s\n", static_cast<unsigned long long>(excluded_results[0].seed),
                    excluded_results[0].violations[0].c_str());
    }
    std::printf("write_sim: %llu seeds from %llu (mutation %s) in %.2f s (%.0f seeds/s, %u jobs): %llu failed, "
                "%llu excluded-fault violations; %llu events, %llu writes, %llu applied\n",
                static_cast<unsigned long long>(done.load()), static_cast<unsigned long long>(start),
                ifm::sim::to_string(opt.mut), secs, done.load() / std::max(secs, 1e-9), jobs,
                static_cast<unsigned long long>(failed.load()), static_cast<unsigned long long>(excluded.load()),
                static_cast<unsigned long long>(events.load()), static_cast<unsigned long long>(writes.load()),
                static_cast<unsigned long long>(applied.load()));
    if (expect_violation) return failed.load() > 0 ? 0 : 1;
    return failed.load() > 0 ? 1 : 0;
}
