// The spool between a streamed response's origin side and its client side (issue 15): first in,
// first out through memory and a file, bounded per response and per process.
#include "proxy/response_spool.hpp"

#include <doctest/doctest.h>

#include <random>
#include <string>

using ifm::proxy::memory_budget;
using ifm::proxy::response_spool;

namespace {

// Bytes i..i+n of a recognisable stream.
std::string bytes(std::size_t from, std::size_t n) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((from + i) * 31 % 251);
    return s;
}

std::string take_all(response_spool& s, std::size_t cap = 7) {
    std::string out;
    std::string buf(cap, '\0');
    while (auto n = s.take(buf.data(), cap)) out.append(buf.data(), n);
    return out;
}

}  // namespace

TEST_CASE("response_spool: memory first, then the file, taken back in order") {
    memory_budget budget(1 << 20);
    response_spool s(10, 1000, "", budget);
    REQUIRE(s.make_room(8));
    REQUIRE(s.append(bytes(0, 8).data(), 8));
    CHECK(budget.used() == 0);           // in memory
    REQUIRE(s.make_room(8));             // 16 > 10: the file
    CHECK(budget.used() == 8);
    REQUIRE(s.append(bytes(8, 5).data(), 5));
    CHECK(budget.used() == 5);           // room not used is given back
    CHECK(s.used_file());
    // Memory has room again once the writer took from it, but the file holds newer bytes: the
    // next ones must follow them into the file.
    char buf[8];
    CHECK(s.take(buf, 8) == 8);
    CHECK(std::string(buf, 8) == bytes(0, 8));
    REQUIRE(s.make_room(4));
    REQUIRE(s.append(bytes(13, 4).data(), 4));
    CHECK(budget.used() == 9);
    CHECK(s.size() == 9);
    CHECK(take_all(s) == bytes(8, 9));
    CHECK(budget.used() == 0);           // the file is emptied when the client catches up
    CHECK(s.size() == 0);
    // And memory is used again.
    REQUIRE(s.make_room(6));
    REQUIRE(s.append(bytes(17, 6).data(), 6));
    CHECK(budget.used() == 0);
    CHECK(take_all(s) == bytes(17, 6));
}

TEST_CASE("response_spool: any interleaving of appends and takes keeps the stream whole") {
    for (unsigned seed = 1; seed <= 200; ++seed) {
        std::mt19937 rng(seed);
        memory_budget budget(1 << 20);
        std::string sent, got;
        {
            response_spool s(64, 4096, "", budget);
            std::string buf(100, '\0');
            for (int step = 0; step < 300; ++step) {
                if (rng() % 2) {
                    std::size_t n = 1 + rng() % 90;
                    if (!s.make_room(n)) continue;
                    std::size_t k = rng() % (n + 1);   // reads may bring less than the room
                    auto b = bytes(sent.size(), k);
                    REQUIRE(s.append(b.data(), k));
                    sent += b;
                } else {
                    auto n = s.take(buf.data(), 1 + rng() % 100);
                    got.append(buf.data(), n);
                }
                CHECK(budget.used() <= 4096 + 90);
            }
            got += take_all(s);
            CHECK_FALSE(s.failed());
        }
        CHECK(got == sent);
        CHECK(budget.used() == 0);   // everything given back, file or not
    }
}

TEST_CASE("response_spool: no room past this response's cap or the process's budget") {
    memory_budget budget(100);
    response_spool a(10, 50, "", budget), b(10, 1000, "", budget);
    REQUIRE(a.make_room(10));
    REQUIRE(a.append(bytes(0, 10).data(), 10));
    REQUIRE(a.make_room(50));
    REQUIRE(a.append(bytes(10, 50).data(), 50));
    CHECK_FALSE(a.make_room(1));         // its own cap (50 in the file)
    CHECK(a.hit_limit());
    REQUIRE(b.make_room(10));
    REQUIRE(b.append(bytes(0, 10).data(), 10));
    REQUIRE(b.make_room(40));            // 50 + 40 = 90 of 100
    REQUIRE(b.append(bytes(10, 40).data(), 40));
    CHECK_FALSE(b.make_room(20));        // the process's budget
    CHECK(b.hit_limit());
    CHECK(budget.used() == 90);
    CHECK(take_all(a) == bytes(0, 60));
    CHECK(budget.used() == 40);
    CHECK(b.make_room(20));              // a's bytes are back in the budget
}

TEST_CASE("response_spool: a response that is dropped gives its bytes back") {
    memory_budget budget(1000);
    {
        response_spool s(4, 1000, "", budget);
        REQUIRE(s.make_room(4));
        REQUIRE(s.append("abcd", 4));
        REQUIRE(s.make_room(100));
        REQUIRE(s.append(bytes(0, 100).data(), 100));
        REQUIRE(s.make_room(100));       // granted, never used
        CHECK(budget.used() == 200);
    }
    CHECK(budget.used() == 0);
}

TEST_CASE("response_spool: without a file (cap 0, or a directory it cannot write) only memory is used") {
    memory_budget budget(1000);
    response_spool off(8, 0, "", budget);
    REQUIRE(off.make_room(8));
    REQUIRE(off.append("12345678", 8));
    CHECK_FALSE(off.make_room(1));
    CHECK_FALSE(off.hit_limit());
    response_spool nowhere(8, 1000, "/proc/no-such-dir", budget);
    REQUIRE(nowhere.make_room(8));
    REQUIRE(nowhere.append("12345678", 8));
    CHECK_FALSE(nowhere.make_room(1));
    CHECK(nowhere.file_error().find("/proc/no-such-dir") != std::string::npos);
    CHECK(budget.used() == 0);
    char buf[8];
    CHECK(nowhere.take(buf, 8) == 8);
    CHECK(nowhere.make_room(8));         // memory again
}

TEST_CASE("response_spool: preloaded bytes come first") {
    memory_budget budget(1000);
    response_spool s(4, 1000, "", budget);
    s.preload("early", 5);
    REQUIRE(s.make_room(3));             // memory is over its limit: the file
    REQUIRE(s.append("abc", 3));
    CHECK(take_all(s, 2) == "earlyabc");
}
