// WebDAV `If` header (RFC 4918 §10.4): parser, resource-tag matching and the rewrite that judges
// entity-tags at the proxy and forwards only what the origin can check (proxy/dav_if.hpp).
#include "proxy/dav_if.hpp"

#include <doctest/doctest.h>

#include <set>
#include <string>
#include <vector>

using ifm::proxy::dav_if;
using ifm::proxy::dav_if_condition;
using ifm::proxy::dav_if_names_target;
using ifm::proxy::dav_if_rewrite;
using ifm::proxy::parse_dav_if;
using ifm::proxy::rewrite_dav_if;
using kind = dav_if_condition::kind;

namespace {

const std::string tok1 = "urn:uuid:181d4fae-7d8c-11d0-a765-00a0c91e6bf2";
const std::string tok2 = "urn:uuid:58f202ac-22cf-11d1-b12d-002035b29092";

dav_if parse_ok(const std::string& v) {
    auto r = parse_dav_if(v);
    REQUIRE_MESSAGE(r.has_value(), v << " -> " << (r ? std::string() : r.error()));
    return *r;
}

std::string parse_error(const std::string& v) {
    auto r = parse_dav_if(v);
    return r.has_value() ? std::string("parsed: ") + to_string(*r) : r.error();
}

bool malformed(const std::string& v) { return !parse_dav_if(v).has_value(); }

std::string canonical(const std::string& v) { return to_string(parse_ok(v)); }

// The rewrite as the proxy calls it for PUT /a on host h, the resource existing with tag "T".
dav_if_rewrite rw(const std::string& v, std::vector<std::string> tags = {"\"T\""}, bool exists = true,
                  const std::string& target = "/a", const std::string& host = "h") {
    auto r = rewrite_dav_if(parse_ok(v), target, host, tags, exists);
    // Whatever is forwarded is a well-formed If header in canonical form.
    if (!r.forwarded.empty()) {
        auto again = parse_dav_if(r.forwarded);
        REQUIRE_MESSAGE(again.has_value(), r.forwarded);
        CHECK(to_string(*again) == r.forwarded);
    }
    if (!r.passes) CHECK(r.forwarded.empty());
    return r;
}

}  // namespace

TEST_SUITE("dav_if") {

TEST_CASE("parse: the RFC 4918 §10.4 examples") {
    SUBCASE("§10.4.6 no-tag production: a lock token and an entity-tag, or another entity-tag") {
        auto h = parse_ok("(<" + tok1 + "> [\"I am an ETag\"]) ([\"I am another ETag\"])");
        REQUIRE(h.lists.size() == 2);
        CHECK_FALSE(h.lists[0].resource);
        REQUIRE(h.lists[0].conditions.size() == 2);
        CHECK(h.lists[0].conditions[0].type == kind::state_token);
        CHECK(h.lists[0].conditions[0].state_token == tok1);
        CHECK_FALSE(h.lists[0].conditions[0].negated);
        CHECK(h.lists[0].conditions[1].type == kind::entity_tag);
        CHECK(h.lists[0].conditions[1].tag.opaque == "\"I am an ETag\"");
        CHECK_FALSE(h.lists[0].conditions[1].tag.weak);
        REQUIRE(h.lists[1].conditions.size() == 1);
        CHECK(h.lists[1].conditions[0].tag.str() == "\"I am another ETag\"");
    }
    SUBCASE("§10.4.7 Not on a state token") {
        auto h = parse_ok("(Not <" + tok1 + "> <" + tok2 + ">)");
        REQUIRE(h.lists.size() == 1);
        REQUIRE(h.lists[0].conditions.size() == 2);
        CHECK(h.lists[0].conditions[0].negated);
        CHECK(h.lists[0].conditions[0].state_token == tok1);
        CHECK_FALSE(h.lists[0].conditions[1].negated);
        CHECK(h.lists[0].conditions[1].state_token == tok2);
    }
    SUBCASE("§10.4.8 always true: (Not <DAV:no-lock>)") {
        auto h = parse_ok("(<" + tok1 + ">) (Not <DAV:no-lock>)");
        REQUIRE(h.lists.size() == 2);
        CHECK(h.lists[1].conditions[0].negated);
        CHECK(h.lists[1].conditions[0].state_token == "DAV:no-lock");
    }
    SUBCASE("§10.4.9 tagged list with a path, a weak tag") {
        auto h = parse_ok("</resource1> (<" + tok1 + "> [W/\"A weak ETag\"]) ([\"strong ETag\"])");
        REQUIRE(h.lists.size() == 2);
        CHECK(h.lists[0].resource == "/resource1");
        CHECK(h.lists[1].resource == "/resource1");  // both lists belong to the tag
        CHECK(h.lists[0].conditions[1].tag.weak);
        CHECK(h.lists[0].conditions[1].tag.opaque == "\"A weak ETag\"");
    }
    SUBCASE("§10.4.10 tagged list with an absolute URI (a collection's lock)") {
        auto h = parse_ok("<http://www.example.com/specs/> (<" + tok1 + ">)");
        REQUIRE(h.lists.size() == 1);
        CHECK(h.lists[0].resource == "http://www.example.com/specs/");
    }
    SUBCASE("§10.4.11 entity-tags on an unmapped URL") {
        CHECK(parse_ok("</specs/rfc2518.doc> ([\"4217\"])").lists.size() == 1);
        CHECK(parse_ok("</specs/rfc2518.doc> (Not [\"4217\"])").lists[0].conditions[0].negated);
    }
    SUBCASE("several tags, each with its lists") {
        auto h = parse_ok("</a> (<urn:x>) (<urn:y>) <http://h/b> ([\"e\"])");
        REQUIRE(h.lists.size() == 3);
        CHECK(h.lists[0].resource == "/a");
        CHECK(h.lists[1].resource == "/a");
        CHECK(h.lists[2].resource == "http://h/b");
    }
}

TEST_CASE("parse: whitespace, case of Not, and brackets in entity-tags") {
    CHECK(canonical("(<urn:x>)") == "(<urn:x>)");
    CHECK(canonical("  \t(<urn:x>)\t ") == "(<urn:x>)");
    CHECK(canonical("(<urn:x>)(<urn:y>)") == "(<urn:x>) (<urn:y>)");
    CHECK(canonical("( <urn:x>  [\"e\"] )") == "(<urn:x> [\"e\"])");
    CHECK(canonical("(<urn:x>[\"e\"])") == "(<urn:x> [\"e\"])");
    // ABNF literals are case-insensitive; Apache mod_dav only knows "Not", so that is what goes out.
    CHECK(canonical("(not <DAV:no-lock>)") == "(Not <DAV:no-lock>)");
    CHECK(canonical("(NOT\t[\"e\"])") == "(Not [\"e\"])");
    CHECK(canonical("(Not<urn:x>)") == "(Not <urn:x>)");
    CHECK(canonical("</a>(<urn:x>)</b>(<urn:y>)") == "</a> (<urn:x>) </b> (<urn:y>)");
    CHECK(canonical("</a> (<urn:x>) </a> (<urn:y>)") == "</a> (<urn:x>) (<urn:y>)");
    // An opaque-tag may hold ']' and '(' (etagc is any VCHAR but DQUOTE).
    auto h = parse_ok("([\"a]b\"] [\"(c)\"])");
    CHECK(h.lists[0].conditions[0].tag.opaque == "\"a]b\"");
    CHECK(h.lists[0].conditions[1].tag.opaque == "\"(c)\"");
    CHECK(parse_ok("([\"\"])").lists[0].conditions[0].tag.opaque == "\"\"");
    // RFC 4918's own examples have spaces in their tags (RFC 2616's quoted-string opaque-tag).
    CHECK(parse_ok("([\"I am\tan ETag\"])").lists[0].conditions[0].tag.opaque == "\"I am\tan ETag\"");
    CHECK(parse_ok("([\"\xc3\xa9\"])").lists[0].conditions[0].tag.opaque == "\"\xc3\xa9\"");  // obs-text
    // Lock tokens of every common form.
    CHECK(parse_ok("(<opaquelocktoken:e71d4fae-5dec-22d6-fea5-00a0c91e6be4>)").lists.size() == 1);
    CHECK(parse_ok("(<urn:uuid:e71d4fae-5dec-22d6-fea5-00a0c91e6be4>)").lists.size() == 1);
    CHECK(parse_ok("(<http://example.com/locks/1?x=(y)>)").lists.size() == 1);
}

TEST_CASE("parse: malformed headers are errors that say what and where") {
    CHECK(parse_error("").find("empty") != std::string::npos);
    CHECK(parse_error(" \t ").find("empty") != std::string::npos);
    CHECK(parse_error("(").find("unterminated list") != std::string::npos);
    CHECK(parse_error("()").find("empty list") != std::string::npos);
    CHECK(parse_error("( )").find("empty list") != std::string::npos);
    CHECK(parse_error("(<urn:x>").find("unterminated list") != std::string::npos);
    CHECK(parse_error("(<urn:x)").find("unterminated state token") != std::string::npos);
    CHECK(parse_error("x").find("expected '(' or '<' at offset 0") != std::string::npos);
    CHECK(parse_error("(<urn:x>) x").find("at offset 10") != std::string::npos);
    CHECK(parse_error("(\"e\")").find("expected a condition") != std::string::npos);
    CHECK(parse_error("(Not)").find("after 'Not'") != std::string::npos);
    CHECK(parse_error("(Not").find("'Not' without a condition") != std::string::npos);
    CHECK(parse_error("(Not Not <urn:x>)").find("after 'Not'") != std::string::npos);
    CHECK(parse_error("(Notes <urn:x>)").find("after 'Not'") != std::string::npos);
    CHECK(parse_error("(Nope <urn:x>)").find("expected a condition") != std::string::npos);
    // Resource tags: each needs a list, the two forms do not mix, and only absolute refs.
    CHECK(parse_error("</a>").find("without a list") != std::string::npos);
    CHECK(parse_error("</a> </b> (<urn:x>)").find("without a list") != std::string::npos);
    CHECK(parse_error("</a> (<urn:x>) </b>").find("without a list") != std::string::npos);
    CHECK(parse_error("(<urn:x>) </a> (<urn:y>)").find("do not mix") != std::string::npos);
    CHECK(parse_error("<a> (<urn:x>)").find("neither an absolute URI nor an absolute path") != std::string::npos);
    CHECK(parse_error("<//h/a> (<urn:x>)").find("neither") != std::string::npos);
    CHECK(parse_error("<> (<urn:x>)").find("empty Resource-Tag") != std::string::npos);
    CHECK(parse_error("</a b> (<urn:x>)").find("invalid character in Resource-Tag") != std::string::npos);
    // State tokens are absolute URIs, no whitespace inside.
    CHECK(parse_error("(<>)").find("empty state token") != std::string::npos);
    CHECK(parse_error("(<locktoken>)").find("not an absolute URI") != std::string::npos);
    CHECK(parse_error("(<1urn:x>)").find("not an absolute URI") != std::string::npos);
    CHECK(parse_error("(< urn:x>)").find("invalid character") != std::string::npos);
    CHECK(parse_error("(<urn:x >)").find("invalid character") != std::string::npos);
    CHECK(parse_error("(<urn:<x>)").find("invalid character") != std::string::npos);
    CHECK(parse_error("(<urn:\"x\">)").find("invalid character") != std::string::npos);
    CHECK(malformed(std::string("(<urn:\x01>)")));
    CHECK(malformed("(<urn:\xc3\xa9>)"));
    // Entity-tags: quoted, no whitespace inside the brackets, W/ upper-case.
    CHECK(parse_error("([e])").find("expected an entity-tag") != std::string::npos);
    CHECK(parse_error("([ \"e\"])").find("expected an entity-tag") != std::string::npos);
    CHECK(parse_error("([\"e\" ])").find("expected ']'") != std::string::npos);
    CHECK(parse_error("([\"e\"").find("expected ']'") != std::string::npos);
    CHECK(parse_error("([\"e)").find("unterminated entity-tag") != std::string::npos);
    CHECK(parse_error("([w/\"e\"])").find("expected an entity-tag") != std::string::npos);
    CHECK(parse_error("([W/ \"e\"])").find("expected an entity-tag") != std::string::npos);
    CHECK(parse_error("([*])").find("expected an entity-tag") != std::string::npos);
    CHECK(parse_error(std::string("([\"a\x01\"])")).find("invalid character in entity-tag") != std::string::npos);
    CHECK(parse_error(std::string("([\"a\x7f\"])")).find("invalid character in entity-tag") != std::string::npos);
    CHECK(malformed("([\"a\" \"b\"])"));
    CHECK(malformed("([\"a\"],[\"b\"])"));
}

TEST_CASE("parse: bounded in bytes, lists and conditions") {
    std::string lists64, lists65;
    for (int i = 0; i < 64; ++i) lists64 += "(<urn:x>)";
    lists65 = lists64 + "(<urn:x>)";
    CHECK(parse_ok(lists64).lists.size() == 64);
    CHECK(parse_error(lists65).find("more than 64 lists") != std::string::npos);

    std::string conds64 = "(", conds65 = "(";
    for (int i = 0; i < 64; ++i) conds64 += "[\"e\"]";
    conds65 = conds64 + "[\"e\"])";
    conds64 += ")";
    CHECK(parse_ok(conds64).lists[0].conditions.size() == 64);
    CHECK(parse_error(conds65).find("more than 64 conditions") != std::string::npos);
    // The condition bound counts over all lists.
    std::string spread;
    for (int i = 0; i < 33; ++i) spread += "(<urn:x> <urn:y>)";
    CHECK(parse_error(spread).find("more than 64 conditions") != std::string::npos);

    const std::string big_token = "(<urn:" + std::string(8192 - 8, 'x') + ">)";
    REQUIRE(big_token.size() == 8192);
    CHECK(parse_ok(big_token).lists.size() == 1);
    CHECK(parse_error(big_token + " ").find("longer than 8 KiB") != std::string::npos);
}

TEST_CASE("to_string round-trips every parsed header") {
    for (const std::string v : {
             "(<" + tok1 + "> [\"I am an ETag\"]) ([\"I am another ETag\"])",
             "(Not <" + tok1 + "> <" + tok2 + ">)",
             "</resource1> (<" + tok1 + "> [W/\"A weak ETag\"]) ([\"strong ETag\"])",
             std::string("<http://h:8080/a?b=c> (Not [\"x\"]) </d> (<DAV:no-lock>)"),
             std::string("(not\t[\"a]b\"])([\"\"])"),
         }) {
        auto h = parse_ok(v);
        auto text = to_string(h);
        CHECK(parse_ok(text) == h);
        CHECK(to_string(parse_ok(text)) == text);
    }
}

TEST_CASE("dav_if_names_target: paths and absolute URIs against the request target and Host") {
    // Paths, normalized as the tracking key is.
    CHECK(dav_if_names_target("/a", "/a", "h"));
    CHECK(dav_if_names_target("/a", "/a", ""));  // a path needs no Host
    CHECK_FALSE(dav_if_names_target("/a", "/b", "h"));
    CHECK_FALSE(dav_if_names_target("/a/", "/a", "h"));
    CHECK_FALSE(dav_if_names_target("/A", "/a", "h"));
    CHECK(dav_if_names_target("/%61", "/a", "h"));
    CHECK(dav_if_names_target("/d/%7e", "/d/~", "h"));
    CHECK(dav_if_names_target("/x%2fy", "/x%2Fy", "h"));
    CHECK_FALSE(dav_if_names_target("/x%2fy", "/x/y", "h"));  // an encoded slash is not a slash
    CHECK(dav_if_names_target("/x/../a", "/a", "h"));
    CHECK(dav_if_names_target("/a?x=1", "/a?x=1", "h"));
    CHECK_FALSE(dav_if_names_target("/a?x=1", "/a", "h"));
    CHECK_FALSE(dav_if_names_target("/a?x=1&y=2", "/a?y=2&x=1", "h"));  // query kept as is: errs to "no"
    CHECK_FALSE(dav_if_names_target("/a", "*", "h"));
    // Absolute URIs: scheme and host case-insensitive, default ports.
    CHECK(dav_if_names_target("http://h/a", "/a", "h"));
    CHECK(dav_if_names_target("HTTP://H/a", "/a", "h"));
    CHECK(dav_if_names_target("http://h/a", "/a", "H"));
    CHECK(dav_if_names_target("http://h:80/a", "/a", "h"));
    CHECK(dav_if_names_target("http://h/a", "/a", "h:80"));
    CHECK(dav_if_names_target("https://h/a", "/a", "h"));
    CHECK(dav_if_names_target("https://h:443/a", "/a", "h"));
    CHECK(dav_if_names_target("http://h:8080/a", "/a", "h:8080"));
    CHECK(dav_if_names_target("http://127.0.0.1:8080/a", "/a", "127.0.0.1:8080"));
    CHECK(dav_if_names_target("http://[::1]:8080/a", "/a", "[::1]:8080"));
    CHECK(dav_if_names_target("http://[::1]/a", "/a", "[::1]:80"));
    CHECK_FALSE(dav_if_names_target("http://[::1]/a", "/a", "[::2]"));
    CHECK_FALSE(dav_if_names_target("http://h:8080/a", "/a", "h"));
    CHECK_FALSE(dav_if_names_target("http://h/a", "/a", "h:8080"));
    CHECK_FALSE(dav_if_names_target("http://h/a", "/a", "h:443"));
    CHECK_FALSE(dav_if_names_target("http://other/a", "/a", "h"));
    CHECK_FALSE(dav_if_names_target("http://h/a", "/a", ""));
    CHECK_FALSE(dav_if_names_target("http://u@h/a", "/a", "h"));
    CHECK_FALSE(dav_if_names_target("ftp://h/a", "/a", "h"));
    CHECK_FALSE(dav_if_names_target("urn:uuid:x", "/a", "h"));
    CHECK_FALSE(dav_if_names_target("http:/a", "/a", "h"));
    CHECK(dav_if_names_target("http://h", "/", "h"));
    CHECK(dav_if_names_target("http://h?q", "/?q", "h"));
    CHECK(dav_if_names_target("http://h/%61?q", "/a?q", "h"));
    CHECK_FALSE(dav_if_names_target("http://h/a b", "/a", "h"));
}

TEST_CASE("rewrite: entity-tags judged at the proxy, lock tokens forwarded") {
    SUBCASE("a tag that matches: the condition is gone; with nothing left the header is dropped") {
        auto r = rw("([\"T\"])");
        CHECK(r.has_etags);
        CHECK(r.passes);
        CHECK(r.forwarded.empty());
        CHECK_FALSE(r.foreign_etags);
    }
    SUBCASE("a stale tag: 412 at the proxy") {
        auto r = rw("([\"S\"])");
        CHECK(r.has_etags);
        CHECK_FALSE(r.passes);
    }
    SUBCASE("lock token and matching tag: only the lock token reaches the origin") {
        auto r = rw("(<" + tok1 + "> [\"T\"])");
        CHECK(r.passes);
        CHECK(r.forwarded == "(<" + tok1 + ">)");
    }
    SUBCASE("lock token and stale tag: 412 at the proxy, whatever the lock") {
        CHECK_FALSE(rw("(<" + tok1 + "> [\"S\"])").passes);
    }
    SUBCASE("Not: a matching tag makes the list false, another one true") {
        CHECK_FALSE(rw("(Not [\"T\"])").passes);
        auto r = rw("(Not [\"S\"])");
        CHECK(r.passes);
        CHECK(r.forwarded.empty());
        CHECK(rw("(Not [\"S\"] <urn:x>)").forwarded == "(<urn:x>)");
        CHECK(rw("(Not [\"S\"] Not <urn:x>)").forwarded == "(Not <urn:x>)");
    }
    SUBCASE("a list holds only if all its entity-tags do (AND)") {
        CHECK(rw("([\"T\"] Not [\"S\"])").passes);
        CHECK_FALSE(rw("([\"T\"] [\"S\"])").passes);
        CHECK_FALSE(rw("([\"T\"] Not [\"T\"])").passes);
    }
    SUBCASE("strong comparison (RFC 4918 §10.4.4 allows either; writes are judged strongly)") {
        CHECK_FALSE(rw("([W/\"T\"])").passes);
        CHECK(rw("(Not [W/\"T\"])").passes);
        // A weak tag among the current ones matches nothing: current tags are the proxy's, strong.
        CHECK_FALSE(rw("([\"T\"])", {"W/\"T\""}).passes);
        CHECK_FALSE(rw("([W/\"T\"])", {"W/\"T\""}).passes);
    }
    SUBCASE("any variant's tag matches") {
        CHECK(rw("([\"B\"])", {"\"A\"", "\"B\""}).passes);
        CHECK(rw("([\"A\"])", {"\"A\"", "\"B\""}).passes);
        CHECK_FALSE(rw("([\"C\"])", {"\"A\"", "\"B\""}).passes);
        CHECK_FALSE(rw("(Not [\"A\"])", {"\"A\"", "\"B\""}).passes);
    }
    SUBCASE("a resource that does not exist matches no entity-tag (§10.4.4, unmapped URLs)") {
        CHECK_FALSE(rw("([\"T\"])", {"\"T\""}, false).passes);
        CHECK_FALSE(rw("([\"T\"])", {}, false).passes);
        auto r = rw("(Not [\"T\"])", {"\"T\""}, false);
        CHECK(r.passes);
        CHECK(r.forwarded.empty());
        // §10.4.11: the same on a tagged unmapped URL.
        CHECK_FALSE(rw("</specs/rfc2518.doc> ([\"4217\"])", {}, false, "/specs/rfc2518.doc").passes);
        auto n = rw("</specs/rfc2518.doc> (Not [\"4217\"])", {}, false, "/specs/rfc2518.doc");
        CHECK(n.passes);
        CHECK(n.forwarded.empty());
    }
    SUBCASE("an existing resource without a known tag: no entity-tag matches") {
        CHECK_FALSE(rw("([\"T\"])", {}).passes);
        CHECK(rw("(Not [\"T\"])", {}).passes);
    }
}

TEST_CASE("rewrite: disjunctions keep every lock token submitted") {
    SUBCASE("§10.4.8's trick: a false list still submits its lock token") {
        // Apache answers 204 to the original on a locked resource (the token counts as submitted)
        // and 423 once the first list is gone: the false list is kept, made false with DAV:no-lock.
        auto r = rw("(<" + tok1 + "> [\"S\"]) (Not <DAV:no-lock>)");
        CHECK(r.passes);
        CHECK(r.forwarded == "(<" + tok1 + "> <DAV:no-lock>) (Not <DAV:no-lock>)");
    }
    SUBCASE("§10.4.6 with the second tag current") {
        auto r = rw("(<" + tok1 + "> [\"I am an ETag\"]) ([\"I am another ETag\"])", {"\"I am another ETag\""});
        CHECK(r.passes);
        CHECK(r.forwarded == "(<" + tok1 + "> <DAV:no-lock>) (Not <DAV:no-lock>)");
    }
    SUBCASE("§10.4.6 with the first tag current: the false list without tokens adds nothing") {
        auto r = rw("(<" + tok1 + "> [\"I am an ETag\"]) ([\"I am another ETag\"])", {"\"I am an ETag\""});
        CHECK(r.passes);
        CHECK(r.forwarded == "(<" + tok1 + ">)");
    }
    SUBCASE("§10.4.6 with neither tag current: 412") {
        CHECK_FALSE(rw("(<" + tok1 + "> [\"I am an ETag\"]) ([\"I am another ETag\"])").passes);
    }
    SUBCASE("lists without entity-tags keep their value; the order is kept") {
        auto r = rw("(<urn:x>) ([\"T\"] <urn:y>) ([\"S\"] Not <urn:z>)");
        CHECK(r.passes);
        CHECK(r.forwarded == "(<urn:x>) (<urn:y>) (Not <urn:z> <DAV:no-lock>)");
        CHECK(rw("(<urn:x>) ([\"S\"])").forwarded == "(<urn:x>)");
        CHECK(rw("([\"S\"]) (<urn:x>)").forwarded == "(<urn:x>)");
    }
    SUBCASE("several true lists without tokens: dropped") {
        auto r = rw("([\"T\"]) (Not [\"S\"]) ([\"S\"])");
        CHECK(r.passes);
        CHECK(r.forwarded.empty());
    }
    SUBCASE("a true list without tokens beside lists with tokens: the header is true, tokens submitted") {
        CHECK(rw("([\"T\"]) (<urn:x>)").forwarded == "(Not <DAV:no-lock>) (<urn:x>)");
        CHECK(rw("(<urn:x> [\"S\"]) ([\"T\"])").forwarded == "(<urn:x> <DAV:no-lock>) (Not <DAV:no-lock>)");
    }
    SUBCASE("DAV:no-lock written by the client is the origin's to evaluate") {
        CHECK(rw("(<DAV:no-lock> [\"T\"])").forwarded == "(<DAV:no-lock>)");
        CHECK(rw("(Not <DAV:no-lock> [\"T\"])").forwarded.empty());
    }
}

TEST_CASE("rewrite: without entity-tags on the target nothing is judged") {
    for (const std::string v : {"(<" + tok1 + ">)", "(Not <" + tok1 + "> <" + tok2 + ">)",
                                "(<" + tok1 + ">) (Not <DAV:no-lock>)", std::string("(<DAV:no-lock>)"),
                                std::string("</a> (<urn:x>)")}) {
        for (bool exists : {true, false}) {
            auto r = rw(v, {"\"T\""}, exists);
            CHECK_FALSE(r.has_etags);
            CHECK(r.passes);
            CHECK(r.forwarded == canonical(v));
            CHECK_FALSE(r.foreign_etags);
        }
    }
}

TEST_CASE("rewrite: tagged lists") {
    SUBCASE("tagged with the target's path or URI: judged like untagged lists, the tag kept") {
        CHECK(rw("</a> (<urn:x> [\"T\"])").forwarded == "</a> (<urn:x>)");
        CHECK(rw("<http://h/a> (<urn:x> [\"T\"])").forwarded == "<http://h/a> (<urn:x>)");
        CHECK(rw("<https://H:443/%61> (<urn:x> [\"T\"])", {"\"T\""}, true, "/a", "h").forwarded ==
              "<https://H:443/%61> (<urn:x>)");
        CHECK_FALSE(rw("</a> (<urn:x> [\"S\"])").passes);
        CHECK_FALSE(rw("<http://h/a> ([\"S\"])").passes);
        CHECK(rw("</a> ([\"T\"])").forwarded.empty());
        CHECK(rw("</a> ([\"S\"]) (Not <DAV:no-lock>)").forwarded.empty());
        CHECK(rw("</a> (<urn:x> [\"S\"]) (Not <DAV:no-lock>)").forwarded ==
              "</a> (<urn:x> <DAV:no-lock>) (Not <DAV:no-lock>)");
    }
    SUBCASE("§10.4.9 on /resource1: the weak tag never matches strongly") {
        const std::string v = "</resource1> (<" + tok1 + "> [W/\"A weak ETag\"]) ([\"strong ETag\"])";
        auto r = rw(v, {"\"strong ETag\""}, true, "/resource1");
        CHECK(r.passes);
        CHECK(r.forwarded == "</resource1> (<" + tok1 + "> <DAV:no-lock>) (Not <DAV:no-lock>)");
        CHECK_FALSE(rw(v, {"\"A weak ETag\""}, true, "/resource1").passes);
    }
    SUBCASE("another resource's lists are forwarded untouched (documented limit)") {
        const std::string v = "</resource1> (<" + tok1 + "> [W/\"A weak ETag\"]) ([\"strong ETag\"])";
        auto r = rw(v, {"\"T\""}, true, "/a");
        CHECK_FALSE(r.has_etags);
        CHECK(r.foreign_etags);
        CHECK(r.passes);
        CHECK(r.forwarded == canonical(v));
        // §10.4.10: a collection's lock token, no entity-tag.
        auto c = rw("<http://h/specs/> (<" + tok1 + ">)", {"\"T\""}, true, "/specs/a.doc");
        CHECK_FALSE(c.has_etags);
        CHECK_FALSE(c.foreign_etags);
        CHECK(c.forwarded == "<http://h/specs/> (<" + tok1 + ">)");
        // The same URI on another host or port is another resource.
        CHECK(rw("<http://other/a> ([\"S\"])").foreign_etags);
        CHECK(rw("<http://h:81/a> ([\"S\"])").passes);
    }
    SUBCASE("the target's lists all false, another resource's list may hold: the origin decides") {
        // The target's false list stays (made false with DAV:no-lock): an origin that judges only
        // the lists that apply to the resource must still see one that fails.
        auto r = rw("</a> ([\"S\"]) </b> (<urn:x>)");
        CHECK(r.has_etags);
        CHECK(r.passes);
        CHECK(r.forwarded == "</a> (<DAV:no-lock>) </b> (<urn:x>)");
        auto f = rw("</a> (<urn:y> [\"S\"]) </b> ([\"x\"])");
        CHECK(f.passes);
        CHECK(f.foreign_etags);
        CHECK(f.forwarded == "</a> (<urn:y> <DAV:no-lock>) </b> ([\"x\"])");
    }
    SUBCASE("the target's list holds beside another resource's list") {
        auto r = rw("</b> (<urn:x>) </a> ([\"T\"])");
        CHECK(r.passes);
        CHECK(r.forwarded == "</b> (<urn:x>) </a> (Not <DAV:no-lock>)");
        CHECK(rw("</b> (<urn:x>) </a> ([\"T\"]) ([\"S\"])").forwarded == "</b> (<urn:x>) </a> (Not <DAV:no-lock>)");
    }
}

// Exhaustive over a small alphabet: for every header of up to two lists of up to two conditions,
// every lock state and every resource state, the origin's view of the rewritten header (state
// tokens only) agrees with RFC 4918's value of the original (OR of ANDs), and submits the same
// lock tokens (§10.4.1).
TEST_CASE("rewrite: equivalent to the original header, exhaustively") {
    const std::vector<std::string> atoms = {"<urn:t1>", "<urn:t2>", "<DAV:no-lock>", "[\"A\"]", "[\"B\"]"};
    std::vector<std::string> conditions;
    for (const auto& a : atoms) {
        conditions.push_back(a);
        conditions.push_back("Not " + a);
    }
    std::vector<std::string> lists;
    for (const auto& c : conditions) lists.push_back("(" + c + ")");
    for (const auto& c1 : conditions)
        for (const auto& c2 : conditions) lists.push_back("(" + c1 + " " + c2 + ")");
    std::vector<std::string> headers = lists;
    for (const auto& l1 : lists)
        for (const auto& l2 : lists) headers.push_back(l1 + " " + l2);

    struct world {
        std::set<std::string> locks;  // lock tokens the resource has
        bool exists;
        std::string tag;
    };
    std::vector<world> worlds;
    for (auto locks : std::vector<std::set<std::string>>{{}, {"urn:t1"}, {"urn:t2"}, {"urn:t1", "urn:t2"}}) {
        worlds.push_back({locks, true, "\"A\""});
        worlds.push_back({locks, true, "\"B\""});
        worlds.push_back({locks, false, ""});
    }
    // RFC 4918 §10.4.2-4: a state token matches a lock the resource has (DAV:no-lock none); an
    // entity-tag matches the current one, of an existing resource.
    auto value = [](const dav_if& h, const world& w) {
        for (const auto& l : h.lists) {
            bool all = true;
            for (const auto& c : l.conditions) {
                const bool m = c.type == kind::state_token ? w.locks.count(c.state_token) > 0
                                                           : w.exists && !c.tag.weak && c.tag.opaque == w.tag;
                all = all && (m != c.negated);
            }
            if (all) return true;
        }
        return false;
    };
    auto submitted = [](const dav_if& h) {
        std::set<std::string> out;
        for (const auto& l : h.lists)
            for (const auto& c : l.conditions)
                if (c.type == kind::state_token && c.state_token != "DAV:no-lock") out.insert(c.state_token);
        return out;
    };

    // Plain comparisons in the loop (146k cases): doctest reports only what fails.
    std::size_t checked = 0, judged = 0, refused = 0, failures = 0;
    for (const auto& v : headers) {
        const auto h = parse_ok(v);
        for (const auto& w : worlds) {
            auto r = rewrite_dav_if(h, "/a", "h", w.exists ? std::vector<std::string>{w.tag} : std::vector<std::string>{},
                                    w.exists);
            const bool original = value(h, w);
            bool forwarded_value = r.passes;
            std::set<std::string> forwarded_tokens;
            bool tags_forwarded = false;
            if (r.passes && !r.forwarded.empty()) {
                auto f = parse_dav_if(r.forwarded);
                if (!f) {
                    FAIL_CHECK("forwarded does not parse: " << v << " -> " << r.forwarded);
                    ++failures;
                    continue;
                }
                for (const auto& l : f->lists)
                    for (const auto& c : l.conditions) tags_forwarded = tags_forwarded || c.type == kind::entity_tag;
                forwarded_value = value(*f, w);
                forwarded_tokens = submitted(*f);
            }
            const bool ok = forwarded_value == original && !(r.has_etags && tags_forwarded) &&
                            (!r.passes || !r.has_etags || forwarded_tokens == submitted(h)) &&
                            (r.has_etags || r.forwarded == to_string(h)) && (r.passes || r.forwarded.empty());
            if (!ok && failures++ < 20)
                FAIL_CHECK(v << " [locks " << w.locks.size() << ", exists " << w.exists << ", tag " << w.tag
                             << "] -> passes " << r.passes << ", forwarded '" << r.forwarded << "', original "
                             << original);
            judged += r.has_etags;
            refused += !r.passes;
            ++checked;
        }
    }
    CHECK(failures == 0);
    CHECK(checked == headers.size() * worlds.size());
    CHECK(judged > 0);
    CHECK(refused > 0);
}

// The same with lists tagged for the target (/a) and for another resource (/b), under both
// readings an origin may have: RFC 4918's one disjunction over every list (each judged on its
// own resource), and Apache's (only the lists that apply to the resource written count; none
// applying passes). Either way the origin answers the rewritten header as it would the original.
TEST_CASE("rewrite: tagged lists for the target and another resource, exhaustively") {
    const std::vector<std::string> atoms = {"<urn:t1>", "<DAV:no-lock>", "[\"A\"]", "[\"B\"]"};
    std::vector<std::string> conditions;
    for (const auto& a : atoms) {
        conditions.push_back(a);
        conditions.push_back("Not " + a);
    }
    std::vector<std::string> singles, lists;
    for (const auto& c : conditions) singles.push_back("(" + c + ")");
    lists = singles;
    for (const auto& c1 : conditions)
        for (const auto& c2 : conditions) lists.push_back("(" + c1 + " " + c2 + ")");
    std::vector<std::string> headers;
    for (const auto& l1 : lists) {
        headers.push_back("</a> " + l1);
        for (const auto& l2 : singles) {
            headers.push_back("</a> " + l1 + " </b> " + l2);
            headers.push_back("</b> " + l2 + " </a> " + l1);
            headers.push_back("</a> " + l1 + " " + l2);
        }
    }
    struct state {
        bool locked;  // holds lock urn:t1
        bool exists;
        std::string tag;
    };
    std::vector<state> states;
    for (bool locked : {false, true}) {
        states.push_back({locked, true, "\"A\""});
        states.push_back({locked, true, "\"B\""});
        states.push_back({locked, false, ""});
    }
    auto list_value = [](const ifm::proxy::dav_if_list& l, const state& s) {
        bool all = true;
        for (const auto& c : l.conditions) {
            const bool m = c.type == kind::state_token ? s.locked && c.state_token == "urn:t1"
                                                       : s.exists && !c.tag.weak && c.tag.opaque == s.tag;
            all = all && (m != c.negated);
        }
        return all;
    };
    // rfc: one disjunction; apache: only /a's lists, true when there are none.
    auto value = [&](const dav_if& h, const state& a, const state& b, bool apache) {
        bool any_applies = false;
        for (const auto& l : h.lists) {
            const bool on_a = *l.resource == "/a";
            if (apache && !on_a) continue;
            any_applies = true;
            if (list_value(l, on_a ? a : b)) return true;
        }
        return apache && !any_applies;
    };

    std::size_t failures = 0, refused = 0;
    for (const auto& v : headers) {
        const auto h = parse_ok(v);
        for (const auto& a : states) {
            auto r = rewrite_dav_if(h, "/a", "h", a.exists ? std::vector<std::string>{a.tag} : std::vector<std::string>{},
                                    a.exists);
            refused += !r.passes;
            std::optional<dav_if> f;
            if (r.passes && !r.forwarded.empty()) {
                auto p = parse_dav_if(r.forwarded);
                if (!p) {
                    FAIL_CHECK("forwarded does not parse: " << v << " -> " << r.forwarded);
                    ++failures;
                    continue;
                }
                f = std::move(*p);
            }
            for (const auto& b : states) {
                for (bool apache : {false, true}) {
                    const bool original = value(h, a, b, apache);
                    const bool rewritten = r.passes && (!f || value(*f, a, b, apache));
                    if (original != rewritten && failures++ < 20)
                        FAIL_CHECK(v << " [a: locked " << a.locked << " exists " << a.exists << " " << a.tag
                                     << "; b: locked " << b.locked << " exists " << b.exists << " " << b.tag << "; "
                                     << (apache ? "apache" : "rfc") << "] -> passes " << r.passes << ", '"
                                     << r.forwarded << "', original " << original);
                }
            }
        }
    }
    CHECK(failures == 0);
    CHECK(refused > 0);
}

}  // TEST_SUITE
