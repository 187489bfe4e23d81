// Rate buckets and completion slots over real sockets: tollgate in-process
// on port 0 in front of a real upstream. Time in the rate buckets comes
// from a manual clock, so "the window refills" needs no sleep.

#include <catch2/catch.hpp>

#include <fstream>
#include <set>
#include <sstream>

#include "support.hpp"
#include "test_clients.hpp"
#include "tollgate/limit/clock.hpp"

using namespace tollgate;
using namespace tollgate::test;
using namespace std::chrono_literals;

namespace {

request make_get(std::string_view target,
                 const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    request req{http::verb::get, target, 11};
    req.set(http::field::host, "localhost");
    for (const auto& [name, value] : headers) {
        req.set(name, value);
    }
    return req;
}

std::pair<std::string, std::string> bearer(std::string_view token) {
    return {"Authorization", "Bearer " + std::string(token)};
}

/// A route "own" for /hold on Host: own.test with `concurrency` slots of
/// its own, apart from the global ones.
route_config own_slots_route(std::size_t concurrency) {
    route_config own;
    own.name = "own";
    own.host = "own.test";
    own.path_prefix = "/hold";
    own.concurrency = concurrency;
    return own;
}

/// Sends a /hold request on its own connection without waiting for the answer.
std::unique_ptr<client> start_held(std::uint16_t port,
                                   const std::vector<std::pair<std::string, std::string>>& h = {}) {
    auto c = std::make_unique<client>(port);
    auto req = make_get("/hold", h);
    http::write(c->stream(), req);
    return c;
}

/// Lets the held /hold requests finish: each is answered 200, and every
/// slot comes back once its response is done.
void finish_held(test_upstream& up, running_proxy& gw,
                 const std::vector<std::unique_ptr<client>>& held) {
    up.release_held();
    for (const auto& c : held) {
        CHECK(c->read().result_int() == 200);
    }
    CHECK(eventually([&] { return gw.srv().gw().gauges().inflight_slots == 0; }));
}

}  // namespace

TEST_CASE("600 requests pass and the 601st gets 429 with the full header set", "[limits]") {
    test_upstream up;
    limit::manual_clock clock;
    running_proxy gw(test_config(up.port()), &clock);
    client c(gw.port());
    auto first = c.send(make_get("/echo"));
    REQUIRE(first.result_int() == 200);
    CHECK(first["X-RateLimit-Limit"] == "600");
    CHECK(first["X-RateLimit-Remaining"] == "599");
    CHECK_FALSE(first["X-RateLimit-Reset"].empty());
    for (int i = 2; i <= 600; ++i) {
        auto res = c.send(make_get("/echo"));
        REQUIRE(res.result_int() == 200);
        if (i == 600) {
            CHECK(res["X-RateLimit-Remaining"] == "0");
        }
    }
    auto refused = c.send(make_get("/echo"));
    REQUIRE(refused.result_int() == 429);
    CHECK(refused["X-RateLimit-Limit"] == "600");
    CHECK(refused["X-RateLimit-Remaining"] == "0");
    CHECK(refused["Retry-After"] == "1");  // GCRA: one token back after 100 ms, rounded up
    CHECK(refused[http::field::content_type] == "application/json");
    auto body = nlohmann::json::parse(refused.body());
    CHECK(body["error"] == "rate limit exceeded");
    CHECK(body["reason"] == "rate");
    CHECK(body["retry_after"] == 1);
    CHECK(up.stats.requests == 600);
    // A refused request without a body keeps the connection usable.
    CHECK(refused.keep_alive());
}

TEST_CASE("the window refills on the clock", "[limits]") {
    test_upstream up;
    limit::manual_clock clock;
    auto cfg = test_config(up.port());
    cfg.rate_limit.limit = 2;
    cfg.rate_limit.window = 1000ms;
    running_proxy gw(cfg, &clock);
    client c(gw.port());
    CHECK(c.send(make_get("/echo")).result_int() == 200);
    CHECK(c.send(make_get("/echo")).result_int() == 200);
    auto refused = c.send(make_get("/echo"));
    CHECK(refused.result_int() == 429);
    clock.advance(499ms);
    CHECK(c.send(make_get("/echo")).result_int() == 429);
    clock.advance(1ms);  // one emission interval (500 ms) after the first
    CHECK(c.send(make_get("/echo")).result_int() == 200);
    clock.advance(1000ms);
    auto res = c.send(make_get("/echo"));
    CHECK(res.result_int() == 200);
    CHECK(res["X-RateLimit-Remaining"] == "1");
}

TEST_CASE("two tokens from one IP have independent buckets", "[limits][keys]") {
    test_upstream up;
    limit::manual_clock clock;
    auto cfg = test_config(up.port());
    cfg.rate_limit.limit = 3;
    running_proxy gw(cfg, &clock);
    client c(gw.port());
    for (int i = 0; i < 3; ++i) {
        CHECK(c.send(make_get("/echo", {bearer("token-a")})).result_int() == 200);
    }
    CHECK(c.send(make_get("/echo", {bearer("token-a")})).result_int() == 429);
    auto b = c.send(make_get("/echo", {bearer("token-b")}));
    CHECK(b.result_int() == 200);
    CHECK(b["X-RateLimit-Remaining"] == "2");
    // Plain requests from the same IP have a bucket of their own too.
    CHECK(c.send(make_get("/echo")).result_int() == 200);
}

TEST_CASE("three tokens inside one trusted org share the org bucket", "[limits][keys]") {
    test_upstream up;
    limit::manual_clock clock;
    auto cfg = test_config(up.port());
    cfg.rate_limit.limit = 3;
    running_proxy gw(cfg, &clock);
    client c(gw.port());
    for (const char* token : {"t1", "t2", "t3"}) {
        auto res = c.send(make_get("/echo", {bearer(token), {"X-Org-Id", "acme"}}));
        CHECK(res.result_int() == 200);
    }
    CHECK(c.send(make_get("/echo", {bearer("t4"), {"X-Org-Id", "acme"}})).result_int() == 429);
    // The org header reached the upstream (loopback is a trusted org source by default).
    CHECK(up.last_headers()["x-org-id"] == "acme");
    CHECK(c.send(make_get("/echo", {{"X-Org-Id", "other"}})).result_int() == 200);
}

namespace {

/// Two requests per window, and the loopback peer is no trusted org source.
config untrusted_org_config(std::uint16_t upstream_port) {
    auto cfg = test_config(upstream_port);
    cfg.rate_limit.limit = 2;
    cfg.keying.trusted_org_sources = {*cidr::parse("10.0.0.0/8")};
    return cfg;
}

}  // namespace

TEST_CASE("an org header from an untrusted peer is ignored and removed", "[limits][keys]") {
    test_upstream up;
    limit::manual_clock clock;
    running_proxy gw(untrusted_org_config(up.port()), &clock);
    client c(gw.port());
    CHECK(c.send(make_get("/echo", {{"X-Org-Id", "a"}})).result_int() == 200);
    CHECK(up.last_headers().count("x-org-id") == 0);
    // Different org values change nothing: the key is the IP.
    CHECK(c.send(make_get("/echo", {{"X-Org-Id", "b"}})).result_int() == 200);
    CHECK(c.send(make_get("/echo", {{"X-Org-Id", "c"}})).result_int() == 429);
}

// With two, tollgate would key on one value while the backend may act on
// the other: a caller could spend a fresh token's budget on every request.
TEST_CASE("a second Authorization or org header is refused with 400", "[limits][keys]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.keying.org_header = "X-Tenant";
    running_proxy gw(cfg);
    for (const std::string fields : {
             "Authorization: Bearer junk\r\nauthorization: Bearer real\r\n",
             "X-Tenant: a\r\nx-tenant: b\r\n",
             "X-Tenant: a\r\nAuthorization: Bearer t\r\nX-Tenant: a\r\n",
         }) {
        client c(gw.port());
        c.write_raw("GET /echo HTTP/1.1\r\nHost: localhost\r\n" + fields + "\r\n");
        auto res = c.read();
        CHECK(res.result_int() == 400);
        CHECK(res.body().find("more than one") != std::string::npos);
    }
    CHECK(up.stats.requests == 0);
    // One of each is fine.
    CHECK(
        get(gw.port(), "/echo", {{"X-Tenant", "a"}, {"Authorization", "Bearer t"}}).result_int() ==
        200);
}

// Only a trusted peer's org header is read, so only there can two of them
// be ambiguous; an untrusted peer's are all removed, however many.
TEST_CASE("a repeated org header is refused from a trusted peer, removed from an untrusted one",
          "[limits][keys]") {
    const std::string request_head =
        "GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Org-Id: a\r\nx-org-id: b\r\n\r\n";
    {
        test_upstream up;
        limit::manual_clock clock;
        running_proxy gw(untrusted_org_config(up.port()), &clock);
        client c(gw.port());
        c.write_raw(request_head);
        auto res = c.read();
        CHECK(res.result_int() == 200);
        CHECK(res["X-RateLimit-Remaining"] == "1");
        CHECK(up.last_headers().count("x-org-id") == 0);
        CHECK_FALSE(nlohmann::json::parse(res.body())["headers"].contains("x-org-id"));
        // Keyed as if the header were absent: by the peer's IP.
        auto plain = c.send(make_get("/echo"));
        CHECK(plain.result_int() == 200);
        CHECK(plain["X-RateLimit-Remaining"] == "0");
        CHECK(up.stats.requests == 2);
    }
    {
        test_upstream up;
        auto cfg = test_config(up.port());
        cfg.keying.trusted_org_sources = {*cidr::parse("127.0.0.0/8")};
        running_proxy gw(cfg);
        client c(gw.port());
        c.write_raw(request_head);
        auto res = c.read();
        CHECK(res.result_int() == 400);
        CHECK(res.body().find("more than one org header") != std::string::npos);
        CHECK(up.stats.requests == 0);
    }
}

TEST_CASE("spoofed X-Forwarded-For from an untrusted peer gains nothing", "[limits][keys]") {
    test_upstream up;
    limit::manual_clock clock;
    auto cfg = test_config(up.port());
    cfg.rate_limit.limit = 2;
    running_proxy gw(cfg, &clock);
    client c(gw.port());
    CHECK(c.send(make_get("/echo", {{"X-Forwarded-For", "198.51.100.1"}})).result_int() == 200);
    CHECK(c.send(make_get("/echo", {{"X-Forwarded-For", "198.51.100.2"}})).result_int() == 200);
    CHECK(c.send(make_get("/echo", {{"X-Forwarded-For", "198.51.100.3"}})).result_int() == 429);
}

TEST_CASE("X-Forwarded-For from a trusted proxy keys by the client behind it", "[limits][keys]") {
    test_upstream up;
    limit::manual_clock clock;
    auto cfg = test_config(up.port());
    cfg.rate_limit.limit = 1;
    cfg.keying.trusted_proxies = {*cidr::parse("127.0.0.0/8")};
    running_proxy gw(cfg, &clock);
    client c(gw.port());
    CHECK(c.send(make_get("/echo", {{"X-Forwarded-For", "198.51.100.1"}})).result_int() == 200);
    CHECK(c.send(make_get("/echo", {{"X-Forwarded-For", "198.51.100.2"}})).result_int() == 200);
    CHECK(c.send(make_get("/echo", {{"X-Forwarded-For", "198.51.100.1"}})).result_int() == 429);
}

TEST_CASE("keying.ipv6_prefix: every address of an IPv6 /64 shares one bucket", "[limits][keys]") {
    test_upstream up;
    limit::manual_clock clock;
    auto cfg = test_config(up.port());
    cfg.rate_limit.limit = 1;
    cfg.keying.trusted_proxies = {*cidr::parse("127.0.0.0/8")};
    cfg.keying.ipv6_prefix = 64;
    running_proxy gw(cfg, &clock);
    client c(gw.port());
    const auto status = [&](std::string_view client_address) {
        return c.send(make_get("/echo", {{"X-Forwarded-For", std::string(client_address)}}))
            .result_int();
    };
    CHECK(status("2001:db8:1:2::1") == 200);
    // A host holds the whole /64: a new address is no new client.
    CHECK(status("2001:db8:1:2::2") == 429);
    CHECK(status("2001:db8:1:2:ffff:ffff:ffff:ffff") == 429);
    CHECK(status("2001:db8:1:3::1") == 200);
    CHECK(status("198.51.100.1") == 200);  // IPv4: by address, as before
    CHECK(status("198.51.100.2") == 200);
}

TEST_CASE("dry_run counts and reports but never refuses", "[limits]") {
    test_upstream up;
    limit::manual_clock clock;
    auto cfg = test_config(up.port());
    cfg.rate_limit.limit = 1;
    cfg.rate_limit.dry_run = true;
    running_proxy gw(cfg, &clock);
    client c(gw.port());
    CHECK(c.send(make_get("/echo")).result_int() == 200);
    auto over = c.send(make_get("/echo"));
    CHECK(over.result_int() == 200);
    CHECK(over["X-RateLimit-Remaining"] == "0");
    CHECK(over.find(http::field::retry_after) == over.end());
    CHECK(gw.srv().gw().metrics.requests(admin::decision_kind::allowed,
                                         admin::reason_kind::dry_run) == 1);
}

TEST_CASE("exempt routes, per-route limits and per-key overrides", "[limits][routes]") {
    test_upstream up;
    limit::manual_clock clock;
    auto cfg = test_config(up.port());
    cfg.rate_limit.limit = 1;
    route_config health;
    health.name = "health";
    health.path_prefix = "/health";
    health.exempt = true;
    route_config bulk;
    bulk.name = "bulk";
    bulk.path_prefix = "/bulk";
    bulk.rate_limit = route_rate_limit{};
    bulk.rate_limit->limit = 3;
    cfg.routes = {health, bulk};
    cfg.rate_limit.overrides = {rate_override{"tok:" + std::string(64, '0'), 5, {}, {}}};
    running_proxy gw(cfg, &clock);
    client c(gw.port());
    for (int i = 0; i < 5; ++i) {
        auto res = c.send(make_get("/health"));
        CHECK(res.result_int() == 200);
        CHECK(res.find("X-RateLimit-Limit") == res.end());
    }
    for (int i = 0; i < 3; ++i) {
        auto res = c.send(make_get("/bulk/x"));
        CHECK(res.result_int() == 200);
        CHECK(res["X-RateLimit-Limit"] == "3");
    }
    CHECK(c.send(make_get("/bulk/x")).result_int() == 429);
    // /bulkhead is not under /bulk: the global limit applies.
    CHECK(c.send(make_get("/bulkhead")).result_int() == 200);
    CHECK(c.send(make_get("/bulkhead")).result_int() == 429);
    // Per-route counters carry the route's name.
    auto metrics = get(gw.admin_port(), "/metrics").body();
    CHECK(metrics.find("tollgate_route_requests_total{route=\"bulk\",decision=\"allowed\"} 3") !=
          std::string::npos);
    CHECK(metrics.find("tollgate_route_requests_total{route=\"bulk\",decision=\"limited\"} 1") !=
          std::string::npos);
    CHECK(metrics.find("tollgate_route_requests_total{route=\"health\",decision=\"allowed\"} 5") !=
          std::string::npos);
}

TEST_CASE("ietf header mode adds RateLimit-Policy and RateLimit", "[limits]") {
    test_upstream up;
    limit::manual_clock clock;
    auto cfg = test_config(up.port());
    cfg.rate_limit.headers = headers_mode::both;
    running_proxy gw(cfg, &clock);
    auto res = get(gw.port(), "/echo");
    CHECK(res["X-RateLimit-Limit"] == "600");
    CHECK(res["RateLimit-Policy"] == "\"default\";q=600;w=60");
    CHECK(res["RateLimit"].starts_with("\"default\";r=599;t="));
}

TEST_CASE("a refused request with an unread body gets Connection: close", "[limits]") {
    test_upstream up;
    limit::manual_clock clock;
    auto cfg = test_config(up.port());
    cfg.rate_limit.limit = 1;
    running_proxy gw(cfg, &clock);
    CHECK(get(gw.port(), "/echo").result_int() == 200);
    client c(gw.port());
    c.write_raw("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n");
    auto res = c.read();
    CHECK(res.result_int() == 429);
    CHECK_FALSE(res.keep_alive());
    CHECK(c.closed_by_peer());
    CHECK(up.stats.requests == 1);
}

TEST_CASE("slots: capacity 4 forwards 4 of 6 concurrent requests, refuses 2", "[slots]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.concurrency.capacity = 4;
    running_proxy gw(cfg);
    std::vector<std::unique_ptr<client>> held;
    for (int i = 0; i < 4; ++i) {
        held.push_back(start_held(gw.port()));
    }
    REQUIRE(up.wait_in_flight(4));
    for (int i = 0; i < 2; ++i) {
        auto res = get(gw.port(), "/echo");
        CHECK(res.result_int() == 429);
        CHECK(res["Retry-After"] == "1");
        CHECK(nlohmann::json::parse(res.body())["reason"] == "concurrency");
    }
    CHECK(gw.srv().gw().gauges().inflight_slots == 4);
    // Returned when the responses finished: all capacity is free again.
    finish_held(up, gw, held);
    CHECK(up.stats.max_in_flight <= 4);
    CHECK(get(gw.port(), "/echo").result_int() == 200);
}

TEST_CASE("slots: a reload that raises capacity counts the slots already held", "[slots]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.concurrency.capacity = 2;
    running_proxy gw(cfg);
    std::vector<std::unique_ptr<client>> held;
    for (const char* org : {"a", "b"}) {
        held.push_back(start_held(gw.port(), {{"X-Org-Id", org}}));
    }
    REQUIRE(up.wait_in_flight(2));

    cfg.concurrency.capacity = 3;
    gw.srv().reload(std::make_shared<const config>(cfg));
    // One more slot, not three: the two held ones count against the new capacity.
    held.push_back(start_held(gw.port(), {{"X-Org-Id", "c"}}));
    REQUIRE(up.wait_in_flight(3));
    CHECK(get(gw.port(), "/echo", {{"X-Org-Id", "d"}}).result_int() == 429);
    CHECK(gw.srv().gw().gauges().inflight_slots == 3);
    CHECK(gw.srv().gw().gauges().concurrency_capacity == 3);

    finish_held(up, gw, held);
    CHECK(up.stats.max_in_flight <= 3);
}

TEST_CASE("slots: slots held across a reload that turns capacity off and on still count",
          "[slots]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.concurrency.capacity = 2;
    cfg.routes.push_back(own_slots_route(1));
    running_proxy gw(cfg);
    std::vector<std::unique_ptr<client>> held;
    for (const char* org : {"a", "b"}) {
        held.push_back(start_held(gw.port(), {{"X-Org-Id", org}}));
    }
    held.push_back(start_held(gw.port(), {{"X-Org-Id", "c"}, {"Host", "own.test"}}));
    REQUIRE(up.wait_in_flight(3));

    // Off (global capacity 0, the route's concurrency removed), then on again.
    auto off = cfg;
    off.concurrency.capacity = 0;
    off.routes[0].concurrency.reset();
    gw.srv().reload(std::make_shared<const config>(off));
    // Parked, both limiters still hold their slots, and the gauge says so.
    CHECK(gw.srv().gw().gauges().inflight_slots == 3);
    CHECK(gw.srv().gw().gauges().concurrency_capacity == 0);
    gw.srv().reload(std::make_shared<const config>(cfg));
    // The three requests still hold their slots: both limiters are full.
    auto refused = get(gw.port(), "/echo", {{"X-Org-Id", "d"}});
    CHECK(refused.result_int() == 429);
    CHECK(nlohmann::json::parse(refused.body())["reason"] == "concurrency");
    CHECK(get(gw.port(), "/hold", {{"X-Org-Id", "e"}, {"Host", "own.test"}}).result_int() == 429);
    // The global limiter's 2 and the route's 1, out of capacity 2 + 1.
    CHECK(gw.srv().gw().gauges().inflight_slots == 3);
    CHECK(gw.srv().gw().gauges().concurrency_capacity == 3);

    finish_held(up, gw, held);
    CHECK(up.stats.max_in_flight == 3);
    CHECK(get(gw.port(), "/echo").result_int() == 200);
    CHECK(get(gw.port(), "/hold", {{"Host", "own.test"}}).result_int() == 200);
}

TEST_CASE("slots: slots held in a route's own limiter count in the gauges and /debug/keys",
          "[slots][metrics]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.concurrency.capacity = 8;
    cfg.routes.push_back(own_slots_route(2));
    running_proxy gw(cfg);
    std::vector<std::unique_ptr<client>> held;
    for (const char* org : {"a", "b"}) {
        held.push_back(start_held(gw.port(), {{"X-Org-Id", org}, {"Host", "own.test"}}));
    }
    // Org a also holds a global slot: two limiters, still one key.
    held.push_back(start_held(gw.port(), {{"X-Org-Id", "a"}}));
    REQUIRE(up.wait_in_flight(3));
    auto refused = get(gw.port(), "/hold", {{"X-Org-Id", "c"}, {"Host", "own.test"}});
    CHECK(refused.result_int() == 429);
    CHECK(nlohmann::json::parse(refused.body())["reason"] == "concurrency");

    const auto g = gw.srv().gw().gauges();
    CHECK(g.inflight_slots == 3);
    CHECK(g.concurrency_capacity == 8 + 2);
    CHECK(g.active_keys == 2);
    const auto metrics = get(gw.admin_port(), "/metrics").body();
    CHECK(metrics.find("\ntollgate_inflight_slots 3\n") != std::string::npos);
    CHECK(metrics.find("\ntollgate_active_keys 2\n") != std::string::npos);
    CHECK(metrics.find("\ntollgate_concurrency_capacity 10\n") != std::string::npos);
    // The summed ratio reads 30%; the route's own limiter is full.
    CHECK(g.slots_saturation == 1.0);
    CHECK(metrics.find("\ntollgate_slots_saturation 1\n") != std::string::npos);
    // Which limiter is full: the route's own, by name.
    REQUIRE(g.route_slots.size() == 1);
    CHECK(g.route_slots[0].route == "own");
    CHECK(metrics.find("\ntollgate_route_inflight_slots{route=\"own\"} 2\n") != std::string::npos);
    CHECK(metrics.find("\ntollgate_route_concurrency_capacity{route=\"own\"} 2\n") !=
          std::string::npos);
    const auto keys = nlohmann::json::parse(get(gw.admin_port(), "/debug/keys").body());
    CHECK(keys["slots"]["in_flight"] == 3);
    CHECK(keys["slots"]["capacity"] == 10);
    CHECK(keys["slots"]["active_keys"] == 2);
    REQUIRE(keys["in_flight"].size() == 2);
    CHECK(keys["in_flight"][0]["key"] == "org:a");
    CHECK(keys["in_flight"][0]["in_flight"] == 2);
    CHECK(keys["in_flight"][1]["key"] == "org:b");
    CHECK(keys["in_flight"][1]["in_flight"] == 1);

    finish_held(up, gw, held);
    CHECK(gw.srv().gw().gauges().active_keys == 0);
}

TEST_CASE("slots: the limiters of renamed routes do not pile up over reloads", "[slots]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.routes.push_back(own_slots_route(2));
    running_proxy gw(cfg);
    auto parked = [&] { return gw.srv().gw().current()->parked_slots.size(); };
    for (int i = 0; i < 20; ++i) {
        cfg.routes.front().name = "own" + std::to_string(i);
        gw.srv().reload(std::make_shared<const config>(cfg));
        // The name just replaced is parked (an older runtime may still hand
        // it out); the one before it, unused and holding nothing, is gone.
        CHECK(parked() == 1);
    }
    // One that holds a slot stays parked until the slot comes back.
    std::vector<std::unique_ptr<client>> held;
    held.push_back(start_held(gw.port(), {{"Host", "own.test"}}));
    REQUIRE(up.wait_in_flight(1));
    for (int i = 0; i < 3; ++i) {
        cfg.routes.front().name = "renamed" + std::to_string(i);
        gw.srv().reload(std::make_shared<const config>(cfg));
    }
    CHECK(parked() == 2);
    CHECK(gw.srv().gw().gauges().inflight_slots == 1);
    finish_held(up, gw, held);
    // Once the session has let go of its runtime too (just after the slot
    // came back), the next reload drops it.
    int n = 0;
    CHECK(eventually([&] {
        cfg.routes.front().name = "last" + std::to_string(n++);
        gw.srv().reload(std::make_shared<const config>(cfg));
        return parked() == 1;
    }));
}

TEST_CASE("slots: a reload to capacity 0 keeps the slots still held in the gauges",
          "[slots][metrics]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.concurrency.capacity = 8;
    running_proxy gw(cfg);
    std::vector<std::unique_ptr<client>> held;
    for (int i = 0; i < 6; ++i) {
        held.push_back(start_held(gw.port(), {{"X-Org-Id", "o" + std::to_string(i)}}));
    }
    REQUIRE(up.wait_in_flight(6));

    auto off = cfg;
    off.concurrency.capacity = 0;
    gw.srv().reload(std::make_shared<const config>(off));
    // Off for new requests, but the six are still upstream, holding their slots.
    auto g = gw.srv().gw().gauges();
    CHECK(g.inflight_slots == 6);
    CHECK(g.active_keys == 6);
    CHECK(g.concurrency_capacity == 0);
    const auto metrics = get(gw.admin_port(), "/metrics").body();
    CHECK(metrics.find("\ntollgate_inflight_slots 6\n") != std::string::npos);
    CHECK(metrics.find("\ntollgate_active_keys 6\n") != std::string::npos);
    const auto keys = nlohmann::json::parse(get(gw.admin_port(), "/debug/keys").body());
    CHECK(keys["slots"]["in_flight"] == 6);
    CHECK(keys["in_flight"].size() == 6);

    // On again: the parked limiter is taken over, so the six count once.
    gw.srv().reload(std::make_shared<const config>(cfg));
    g = gw.srv().gw().gauges();
    CHECK(g.inflight_slots == 6);
    CHECK(g.concurrency_capacity == 8);

    finish_held(up, gw, held);
}

TEST_CASE("slots: a second key gets its share, the first gets no new slot", "[slots]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.concurrency.capacity = 4;
    running_proxy gw(cfg);
    std::vector<std::unique_ptr<client>> held;
    for (int i = 0; i < 3; ++i) {
        held.push_back(start_held(gw.port(), {bearer("first")}));
    }
    REQUIRE(up.wait_in_flight(3));
    held.push_back(start_held(gw.port(), {bearer("second")}));
    REQUIRE(up.wait_in_flight(4));
    // The first key is now over its share (4 / 2 = 2): no new slot until it drains.
    auto refused = get(gw.port(), "/echo", {bearer("first")});
    CHECK(refused.result_int() == 429);
    CHECK(nlohmann::json::parse(refused.body())["reason"] == "concurrency");
    finish_held(up, gw, held);
    CHECK(up.stats.max_in_flight == 4);
}

TEST_CASE("slots: 20 clients that abort mid-request leave zero slots held", "[slots]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.concurrency.capacity = 32;
    running_proxy gw(cfg);
    {
        std::vector<std::unique_ptr<client>> held;
        for (int i = 0; i < 20; ++i) {
            held.push_back(start_held(gw.port(), {bearer("t" + std::to_string(i))}));
        }
        REQUIRE(up.wait_in_flight(20));
        CHECK(gw.srv().gw().gauges().inflight_slots == 20);
        for (auto& c : held) {
            c->socket().close();
        }
    }
    // The upstream is still holding the requests; the slots come back anyway.
    CHECK(eventually([&] { return gw.srv().gw().gauges().inflight_slots == 0; }));
    CHECK(gw.srv().gw().gauges().active_keys == 0);
    up.release_held();
}

TEST_CASE("slots: a client that pipelines a request and then leaves frees its slot", "[slots]") {
    // The watch that notices a departed client moves pipelined bytes aside
    // and goes on watching, so the FIN after them is seen too.
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.upstream.response_timeout = 60s;  // longer than eventually(): no 504 helps
    running_proxy gw(cfg);
    auto held = start_held(gw.port());
    REQUIRE(up.wait_in_flight(1));
    REQUIRE(gw.srv().gw().gauges().inflight_slots == 1);
    http::write(held->stream(), make_get("/echo"));  // the next request, pipelined
    held->socket().shutdown(tcp::socket::shutdown_send);
    // The upstream still holds the first request; its slot comes back anyway.
    CHECK(eventually([&] { return gw.srv().gw().gauges().inflight_slots == 0; }));
    up.release_held();
}

TEST_CASE("slots: a client that leaves while waiting for an upstream connection is not served",
          "[slots]") {
    // The pool's only connection is busy: the second request waits for it.
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.threads = 1;
    cfg.upstream.max_connections = 1;
    cfg.upstream.connect_timeout = 30s;  // longer than eventually(): no timeout helps
    running_proxy gw(cfg);
    auto held = start_held(gw.port());
    REQUIRE(up.wait_in_flight(1));
    {
        client waiting(gw.port());
        http::write(waiting.stream(), make_get("/echo"));
        REQUIRE(eventually([&] { return gw.srv().gw().gauges().inflight_slots == 2; }));
        waiting.socket().close();
    }
    // Its slot comes back while the connection is still busy...
    CHECK(eventually([&] { return gw.srv().gw().gauges().inflight_slots == 1; }));
    up.release_held();
    CHECK(held->read().result_int() == 200);
    // ...and the connection, once free, carries the next request, not its.
    CHECK(get(gw.port(), "/echo").result_int() == 200);
    CHECK(up.stats.requests == 2);
    CHECK(eventually([&] { return gw.srv().gw().gauges().inflight_slots == 0; }));
}

TEST_CASE("slots: an upstream timeout returns its slot", "[slots]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.concurrency.capacity = 1;
    cfg.upstream.response_timeout = 200ms;
    running_proxy gw(cfg);
    CHECK(get(gw.port(), "/stall").result_int() == 504);
    CHECK(gw.srv().gw().gauges().inflight_slots == 0);
    CHECK(get(gw.port(), "/echo").result_int() == 200);
}

TEST_CASE("slots: a queued request waits for a slot freed by completion", "[slots]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.concurrency.capacity = 1;
    cfg.concurrency.queue_timeout = 5000ms;
    running_proxy gw(cfg);
    auto held = start_held(gw.port());
    REQUIRE(up.wait_in_flight(1));
    client queued(gw.port());
    http::write(queued.stream(), make_get("/echo"));
    REQUIRE(eventually([&] { return gw.srv().gw().current()->slots->queued() == 1; }));
    CHECK(scrape(gw.admin_port(), "tollgate_slots_queued") == 1);
    up.release_held();
    CHECK(held->read().result_int() == 200);
    CHECK(queued.read().result_int() == 200);
    CHECK(up.stats.max_in_flight == 1);
    CHECK(scrape(gw.admin_port(), "tollgate_slots_queued") == 0);
}

TEST_CASE("slots: a queued request is refused when queue_timeout passes", "[slots]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.concurrency.capacity = 1;
    cfg.concurrency.queue_timeout = 100ms;
    running_proxy gw(cfg);
    auto held = start_held(gw.port());
    REQUIRE(up.wait_in_flight(1));
    auto res = get(gw.port(), "/echo");
    CHECK(res.result_int() == 429);
    CHECK(nlohmann::json::parse(res.body())["reason"] == "concurrency");
    CHECK(gw.srv().gw().current()->slots->queued() == 0);
    up.release_held();
    CHECK(held->read().result_int() == 200);
}

TEST_CASE("metrics count every decision exactly", "[metrics]") {
    test_upstream up;
    limit::manual_clock clock;
    auto cfg = test_config(up.port());
    cfg.rate_limit.limit = 7;
    running_proxy gw(cfg, &clock);
    client c(gw.port());
    int allowed = 0;
    int limited = 0;
    for (int i = 0; i < 12; ++i) {
        auto status = c.send(make_get("/echo", {bearer("metrics")})).result_int();
        allowed += status == 200;
        limited += status == 429;
    }
    REQUIRE(allowed == 7);
    REQUIRE(limited == 5);
    client admin(gw.admin_port());
    request req{http::verb::get, "/metrics", 11};
    req.set(http::field::host, "localhost");
    auto text = admin.send(req).body();
    CHECK(text.find(
              "tollgate_requests_total{decision=\"allowed\",reason=\"ok\",key_type=\"tok\"} 7") !=
          std::string::npos);
    CHECK(text.find(
              "tollgate_requests_total{decision=\"limited\",reason=\"rate\",key_type=\"tok\"} 5") !=
          std::string::npos);
    CHECK(text.find("tollgate_upstream_duration_seconds_count 7") != std::string::npos);
    // Every exchange, refusals included.
    CHECK(text.find("tollgate_request_duration_seconds_count 12") != std::string::npos);
    // The raw token never appears on the admin port.
    CHECK(text.find("metrics\"") == std::string::npos);
    request keys{http::verb::get, "/debug/keys?top=5", 11};
    keys.set(http::field::host, "localhost");
    auto doc = nlohmann::json::parse(admin.send(keys).body());
    REQUIRE(doc["limited"].size() == 1);
    CHECK(doc["limited"][0]["key_type"] == "tok");
    CHECK(doc["limited"][0]["key"].get<std::string>().size() == 4 + 12);
    CHECK(doc["limited"][0]["refused"] == 5);
    // Slot numbers are counts: JSON integers as in docs/operating.md, not 256.0.
    const auto& slots = doc["slots"];
    CHECK(slots["in_flight"].is_number_integer());
    CHECK(slots["capacity"].is_number_integer());
    CHECK(slots["active_keys"].is_number_integer());
    CHECK(slots["capacity"] == cfg.concurrency.capacity);
}

TEST_CASE("/debug/keys refused over window_seconds is a steady key's rate after a boundary",
          "[metrics]") {
    test_upstream up;
    limit::manual_clock clock;
    auto cfg = test_config(up.port());
    cfg.rate_limit.limit = 1;
    cfg.rate_limit.window = 1h;  // one request allowed, every later one refused
    running_proxy gw(cfg, &clock);
    client c(gw.port());
    client admin(gw.admin_port());
    auto keys = [&] {
        request req{http::verb::get, "/debug/keys?top=5", 11};
        req.set(http::field::host, "localhost");
        return nlohmann::json::parse(admin.send(req).body());
    };
    // 10 requests a second from 60 s to 180 s, one key; the 60 s windows
    // begin at 60, 120 and 180 s.
    clock.set(60s);
    int refused = 0;
    for (int i = 0; i <= 1200; ++i) {
        refused += c.send(make_get("/echo", {bearer("steady")})).result_int() == 429;
        if (i < 1200) {
            clock.advance(100ms);
        }
    }
    REQUIRE(refused == 1200);
    // At 180 s, the first instant of a window: the counts cover 120..180 s.
    auto doc = keys();
    REQUIRE(doc["limited"].size() == 1);
    const double window = doc["window_seconds"].get<double>();
    CHECK(window == 60.0);
    const double rate = doc["limited"][0]["refused"].get<double>() / window;
    INFO("read " << rate << "/s for a key refused 10 times a second");
    CHECK(rate >= 10.0);
    CHECK(rate < 10.1);
    // Halfway through the window nothing more was refused: the same count
    // over a longer span.
    clock.set(210s);
    doc = keys();
    CHECK(doc["window_seconds"].get<double>() == 90.0);
}

TEST_CASE("/debug/keys reads top from its own query parameter and refuses a bad one", "[metrics]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.rate_limit.limit = 1;
    running_proxy gw(cfg);
    client c(gw.port());
    // Three keys with a refusal each.
    for (const char* token : {"alpha", "bravo", "charlie"}) {
        REQUIRE(c.send(make_get("/echo", {bearer(token)})).result_int() == 200);
        REQUIRE(c.send(make_get("/echo", {bearer(token)})).result_int() == 429);
    }
    const auto limited = [&](std::string_view target) {
        auto res = get(gw.admin_port(), target);
        REQUIRE(res.result_int() == 200);
        return nlohmann::json::parse(res.body())["limited"].size();
    };
    CHECK(limited("/debug/keys") == 3);
    CHECK(limited("/debug/keys?top=2") == 2);
    CHECK(limited("/debug/keys?x=1&top=1") == 1);
    CHECK(limited("/debug/keys?stop=1") == 3);  // not top: the default, 10
    CHECK(limited("/debug/keys?top=5000") == 3);
    CHECK(limited("/debug/keys?top=99999999999999999999999") == 3);
    for (std::string_view bad :
         {"top=abc", "top=0", "top=", "top", "top=-1", "top=2x", "top=1&top=2"}) {
        INFO(bad);
        auto res = get(gw.admin_port(), "/debug/keys?" + std::string(bad));
        CHECK(res.result_int() == 400);
        CHECK(res[http::field::content_type] == "application/json");
        auto doc = nlohmann::json::parse(res.body());
        CHECK(doc["error"].get<std::string>().starts_with("top: "));
    }
    auto res = get(gw.admin_port(), "/debug/keys?top=abc");
    CHECK(nlohmann::json::parse(res.body())["error"] ==
          "top: must be a positive integer (at most 1000), got \"abc\"");
}

TEST_CASE("the admin port answers while the proxy's slots are saturated", "[metrics]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.concurrency.capacity = 2;
    running_proxy gw(cfg);
    auto a = start_held(gw.port());
    auto b = start_held(gw.port());
    REQUIRE(up.wait_in_flight(2));
    auto health = get(gw.admin_port(), "/healthz");
    CHECK(health.result_int() == 200);
    auto metrics = get(gw.admin_port(), "/metrics");
    CHECK(metrics.body().find("tollgate_inflight_slots 2") != std::string::npos);
    CHECK(metrics.body().find("tollgate_concurrency_capacity 2") != std::string::npos);
    up.release_held();
    CHECK(a->read().result_int() == 200);
    CHECK(b->read().result_int() == 200);
    CHECK(eventually([&] {
        return get(gw.admin_port(), "/metrics").body().find("tollgate_inflight_slots 0") !=
               std::string::npos;
    }));
}

TEST_CASE("every metric /metrics serves is in docs/operating.md's table, and back", "[metrics]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.routes.push_back(own_slots_route(2));
    running_proxy gw(cfg);
    std::set<std::string> served;
    std::istringstream scrape(get(gw.admin_port(), "/metrics").body());
    for (std::string line; std::getline(scrape, line);) {
        if (line.starts_with("# TYPE ")) {
            served.insert(line.substr(7, line.find(' ', 7) - 7));
        }
    }
    std::set<std::string> documented;
    std::ifstream doc(TOLLGATE_SOURCE_DIR "/docs/operating.md");
    REQUIRE(doc);
    for (std::string line; std::getline(doc, line);) {
        if (line.starts_with("| `tollgate_")) {
            documented.insert(line.substr(3, line.find('`', 3) - 3));
        }
    }
    REQUIRE(served.size() > 20);
    for (const auto& name : served) {
        INFO("served, not documented: " << name);
        CHECK(documented.count(name) == 1);
    }
    // Served only with a Redis store (rate_limit.store: redis).
    const std::set<std::string> redis_only = {"tollgate_store_duration_seconds",
                                              "tollgate_store_errors_total"};
    for (const auto& name : documented) {
        INFO("documented, not served: " << name);
        CHECK((served.count(name) == 1 || redis_only.count(name) == 1));
    }
}

TEST_CASE("slots: a route with its own capacity is limited apart from the rest", "[slots]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.concurrency.capacity = 8;
    route_config narrow;
    narrow.name = "narrow";
    narrow.path_prefix = "/hold";
    narrow.concurrency = 1;
    cfg.routes = {narrow};
    running_proxy gw(cfg);
    auto held = start_held(gw.port());
    REQUIRE(up.wait_in_flight(1));
    // The route's single slot is taken; other paths still have the global capacity.
    auto refused = get(gw.port(), "/hold");
    CHECK(refused.result_int() == 429);
    CHECK(nlohmann::json::parse(refused.body())["reason"] == "concurrency");
    CHECK(get(gw.port(), "/echo").result_int() == 200);
    up.release_held();
    CHECK(held->read().result_int() == 200);
}
