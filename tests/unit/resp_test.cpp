// The Redis reply parser of the proxy's own transport (cache/resp.cpp), against hiredis's reader
// (the parser it replaced) and at every point a reply can be cut by the socket.
#include "cache/resp.hpp"

#include <doctest/doctest.h>
#include <hiredis/hiredis.h>

#include <string>
#include <vector>

using namespace ifm::cache;
using T = redis_reply::type;

namespace {

redis_reply from_hiredis(const redisReply* r) {
    redis_reply out;
    switch (r->type) {
    case REDIS_REPLY_NIL: out.kind = T::nil; break;
    case REDIS_REPLY_STATUS: out.kind = T::status; out.str.assign(r->str, r->len); break;
    case REDIS_REPLY_ERROR: out.kind = T::error; out.str.assign(r->str, r->len); break;
    case REDIS_REPLY_INTEGER: out.kind = T::integer; out.integer = r->integer; break;
    case REDIS_REPLY_STRING: out.kind = T::string; out.str.assign(r->str, r->len); break;
    case REDIS_REPLY_ARRAY:
        out.kind = T::array;
        for (std::size_t i = 0; i < r->elements; ++i) out.elements.push_back(from_hiredis(r->element[i]));
        break;
    }
    return out;
}

// hiredis's reading of the first reply of `bytes`, which must be whole.
redis_reply hiredis_reads(const std::string& bytes) {
    redisReader* reader = redisReaderCreate();
    REQUIRE(redisReaderFeed(reader, bytes.data(), bytes.size()) == REDIS_OK);
    void* reply = nullptr;
    REQUIRE(redisReaderGetReply(reader, &reply) == REDIS_OK);
    REQUIRE(reply != nullptr);
    auto out = from_hiredis(static_cast<redisReply*>(reply));
    freeReplyObject(reply);
    redisReaderFree(reader);
    return out;
}

const std::vector<std::string> replies = {
    "+OK\r\n",
    "+\r\n",
    "-ERR unknown command 'IFM.ACQUIRE'\r\n",
    ":0\r\n",
    ":-9223372036854775808\r\n",
    ":1733616000000\r\n",
    "$0\r\n\r\n",
    "$5\r\nhe\r\no\r\n",                     // CR LF inside a bulk string
    std::string("$3\r\n\0\xff\r\r\n", 9),   // binary
    "$-1\r\n",
    "*-1\r\n",
    "*0\r\n",
    "*6\r\n:1\r\n$3\r\ntwo\r\n*2\r\n:3\r\n*2\r\n$4\r\nfour\r\n$0\r\n\r\n$-1\r\n$5\r\nfive!\r\n*0\r\n",
    "*2\r\n+FINE\r\n-BAD thing\r\n",
    "*4\r\n$1\r\n1\r\n$40\r\n0123456789abcdef0123456789abcdef01234567\r\n:1733616000000\r\n$-1\r\n",
};

}  // namespace

TEST_CASE("parse_reply: every shape reads as hiredis's reader reads it, and takes exactly its bytes") {
    for (const auto& bytes : replies) {
        CAPTURE(bytes);
        redis_reply r;
        auto res = parse_reply(bytes + "+next\r\n", r);
        REQUIRE(res.status == resp_status::done);
        CHECK(res.used == bytes.size());
        CHECK(r == hiredis_reads(bytes));
    }
}

TEST_CASE("parse_reply: a reply cut anywhere is incomplete, and whole once the rest is in") {
    for (const auto& bytes : replies) {
        for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
            CAPTURE(bytes);
            CAPTURE(cut);
            redis_reply r;
            auto res = parse_reply(std::string_view(bytes).substr(0, cut), r);
            CHECK(res.status == resp_status::incomplete);
            CHECK(res.used == 0);
        }
    }
    // The same reply object, parsed again over more bytes: nothing of the first try stays.
    redis_reply r;
    CHECK(parse_reply("*3\r\n:1\r\n:2", r).status == resp_status::incomplete);
    REQUIRE(parse_reply("*2\r\n:1\r\n:2\r\n", r).status == resp_status::done);
    CHECK(r.elements.size() == 2);
    REQUIRE(parse_reply("+OK\r\n", r).status == resp_status::done);
    CHECK((r.kind == T::status && r.str == "OK" && r.elements.empty()));
}

TEST_CASE("parse_reply: bytes that are not RESP2 are bad, not waited for") {
    for (std::string bytes : {"?\r\n", "+OK\rX", ":12x\r\n", ":\r\n", "$-2\r\n", "$3\r\nabcd\r\n",
                              "$x\r\n", "*-2\r\n", "*1\r\n!\r\n", "$536870913\r\n", "%2\r\n", "_\r\n"}) {
        CAPTURE(bytes);
        redis_reply r;
        CHECK(parse_reply(bytes, r).status == resp_status::bad);
    }
    // Nested deeper than the limit.
    std::string deep;
    for (int i = 0; i <= resp_max_depth; ++i) deep += "*1\r\n";
    deep += ":1\r\n";
    redis_reply r;
    CHECK(parse_reply(deep, r).status == resp_status::bad);
    // At the limit it parses.
    std::string ok;
    for (int i = 0; i < resp_max_depth; ++i) ok += "*1\r\n";
    ok += ":1\r\n";
    CHECK(parse_reply(ok, r).status == resp_status::done);
}

TEST_CASE("parse_reply: a huge element count that the bytes do not back allocates nothing yet") {
    redis_reply r;
    auto res = parse_reply("*2000000000\r\n:1\r\n", r);
    CHECK(res.status == resp_status::incomplete);
    CHECK(r.elements.capacity() < 1000);
    // A bulk length up to Redis's limit is waited for, not refused.
    CHECK(parse_reply("$536870912\r\nabc", r).status == resp_status::incomplete);
}

TEST_CASE("append_command: appends one command after what is there") {
    std::string out = "*1\r\n$4\r\nPING\r\n";
    std::vector<std::string> keys{"k"}, args{"", "v2"};
    append_command(out, {&keys, &args}, {"IFM.COMMIT"});
    CHECK(out == "*1\r\n$4\r\nPING\r\n*4\r\n$10\r\nIFM.COMMIT\r\n$1\r\nk\r\n$0\r\n\r\n$2\r\nv2\r\n");
}
