// WebSocket and Upgrade (issue #10) over real loopback sockets: tollgate
// in-process on port 0 in front of a WebSocket echo upstream started by each
// test; the drain test runs the real binary. Every client operation has a
// deadline (test_clients.hpp), so a tunnel that never ends fails instead of
// hanging.

#include <catch2/catch.hpp>

#include <signal.h>

#include "process.hpp"
#include "support.hpp"
#include "test_clients.hpp"
#include "tollgate/limit/clock.hpp"
#include "ws_upstream.hpp"

using namespace tollgate;
using namespace tollgate::test;
using namespace std::chrono_literals;

namespace {

std::pair<std::string, std::string> bearer(std::string_view token) {
    return {"Authorization", "Bearer " + std::string(token)};
}

std::string lower(std::string s) {
    for (char& c : s) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return s;
}

/// Sends `message` and reads one message back; the echo, or "<error: ...>".
std::string echo(ws_client& c, const std::string& message, bool binary = false) {
    if (auto ec = c.write(message, binary)) {
        return "<error: " + ec.message() + ">";
    }
    std::string got;
    if (auto ec = c.read(got)) {
        return "<error: " + ec.message() + ">";
    }
    return got;
}

/// The 429 a refused tunnel gets, field by field.
void check_tunnels_refusal(const websocket::response_type& res) {
    CHECK(res.result_int() == 429);
    CHECK(res["Retry-After"] == "1");
    CHECK(res[http::field::content_type] == "application/json");
    auto body = nlohmann::json::parse(res.body());
    CHECK(body["error"] == "rate limit exceeded");
    CHECK(body["reason"] == "tunnels");
    CHECK(body["retry_after"] == 1);
}

/// Writes a WebSocket handshake for `target` on a connection of its own and
/// returns without waiting for the answer (read it with client::read()).
std::unique_ptr<client> start_upgrade(std::uint16_t port, std::string_view target) {
    auto c = std::make_unique<client>(port);
    request req{http::verb::get, target, 11};
    req.set(http::field::host, "localhost");
    req.set(http::field::connection, "Upgrade");
    req.set(http::field::upgrade, "websocket");
    req.set(http::field::sec_websocket_key, "dGhlIHNhbXBsZSBub25jZQ==");
    req.set(http::field::sec_websocket_version, "13");
    http::write(c->stream(), req);
    return c;
}

}  // namespace

TEST_CASE("websocket: text and binary messages echo through the tunnel", "[websocket]") {
    ws_upstream up;
    running_proxy gw(test_config(up.port()));
    ws_client c(gw.port(), "/chat?room=7", {{"X-Probe", "through"}});
    REQUIRE(c.upgraded());
    CHECK(c.response().result_int() == 101);
    // The upstream did the handshake: the proxy forwarded Upgrade and Connection.
    auto seen = up.last_handshake_headers();
    CHECK(lower(seen["upgrade"]) == "websocket");
    CHECK(lower(seen["connection"]).find("upgrade") != std::string::npos);
    CHECK_FALSE(seen["sec-websocket-key"].empty());
    CHECK(seen["x-probe"] == "through");
    CHECK(seen["x-forwarded-for"] == "127.0.0.1");
    CHECK(up.stats.handshakes == 1);

    for (int i = 0; i < 10; ++i) {
        const std::string text = "message " + std::to_string(i);
        CHECK(echo(c, text) == text);
        CHECK(c.got_text());
        const std::string binary = std::string("\x00\xff\x7f", 3) + std::to_string(i);
        CHECK(echo(c, binary, true) == binary);
        CHECK_FALSE(c.got_text());
    }
    CHECK(up.stats.messages == 20);
    // The handshake is an exchange of its own in both latency histograms.
    const auto metrics = get(gw.admin_port(), "/metrics").body();
    CHECK(metrics.find("tollgate_request_duration_seconds_count 1\n") != std::string::npos);
    CHECK(metrics.find("tollgate_upstream_duration_seconds_count 1\n") != std::string::npos);
}

TEST_CASE("websocket: a 4 MiB message crosses the tunnel intact both ways", "[websocket]") {
    ws_upstream up;
    running_proxy gw(test_config(up.port()));
    ws_client c(gw.port());
    REQUIRE(c.upgraded());
    const std::string big = pattern_body(4 * 1024 * 1024 + 17);
    REQUIRE_FALSE(c.write(big, true));
    std::string got;
    REQUIRE_FALSE(c.read(got));
    CHECK(got.size() == big.size());
    CHECK(fnv1a(got) == fnv1a(big));
    // The stream is still framed correctly after the big one.
    CHECK(echo(c, "after") == "after");
}

TEST_CASE("websocket: a close frame from the client reaches the upstream", "[websocket]") {
    ws_upstream up;
    running_proxy gw(test_config(up.port()));
    ws_client c(gw.port());
    REQUIRE(c.upgraded());
    REQUIRE(echo(c, "hi") == "hi");
    CHECK_FALSE(c.close(websocket::close_reason(websocket::close_code::normal, "bye")));
    REQUIRE(ws_upstream::wait_for(up.stats.peer_closes, 1));
    CHECK(up.last_peer_close() == std::pair<std::uint16_t, std::string>{1000, "bye"});
    CHECK(ws_upstream::wait_for(up.stats.ended, 1));
    CHECK(eventually([&] { return scrape(gw.admin_port(), "tollgate_tunnels_open") == 0; }));
}

TEST_CASE("websocket: a close frame from the upstream reaches the client", "[websocket]") {
    ws_upstream up;
    running_proxy gw(test_config(up.port()));
    ws_client c(gw.port());
    REQUIRE(c.upgraded());
    REQUIRE_FALSE(c.write("close-me"));
    std::string got;
    CHECK(c.read(got) == websocket::error::closed);
    CHECK(c.peer_close().code == ws_upstream::server_close_code);
    CHECK(std::string(c.peer_close().reason.c_str()) == "server says bye");
    CHECK(ws_upstream::wait_for(up.stats.ended, 1));
    CHECK(up.stats.server_closes == 1);
    CHECK(eventually([&] { return scrape(gw.admin_port(), "tollgate_tunnels_open") == 0; }));
}

TEST_CASE("websocket: Upgrade: h2c is stripped and the request proxied as HTTP/1.1",
          "[websocket]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    client c(gw.port());
    c.write_raw(
        "GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n");
    auto res = c.read();
    REQUIRE(res.result_int() == 200);
    auto headers = nlohmann::json::parse(res.body())["headers"];
    CHECK_FALSE(headers.contains("upgrade"));
    CHECK_FALSE(headers.contains("http2-settings"));
    if (headers.contains("connection")) {
        CHECK(lower(headers["connection"].get<std::string>()).find("upgrade") == std::string::npos);
    }
    CHECK(res.find(http::field::upgrade) == res.end());
    // Still HTTP/1.1 on the same connection, no tunnel.
    request again{http::verb::get, "/echo", 11};
    again.set(http::field::host, "localhost");
    CHECK(c.send(again).result_int() == 200);
    CHECK(up.stats.requests == 2);
    CHECK(scrape(gw.admin_port(), "tollgate_tunnels_open") == 0);
}

TEST_CASE("websocket: only protocols listed in routes[].upgrade are forwarded",
          "[websocket][routes]") {
    test_upstream plain;
    ws_upstream ws;
    auto cfg = test_config(plain.port());
    route_config live;
    live.name = "live";
    live.path_prefix = "/live";
    live.upstream = {http_server(ws.port())};
    live.upgrade = {"websocket"};
    route_config api;
    api.name = "api";
    api.path_prefix = "/api";
    api.upgrade = {};
    route_config custom;
    custom.name = "custom";
    custom.path_prefix = "/custom";
    custom.upgrade = {"x-custom"};
    cfg.routes = {live, api, custom};
    running_proxy gw(cfg);

    ws_client allowed(gw.port(), "/live/feed");
    CHECK(allowed.upgraded());
    CHECK(echo(allowed, "live") == "live");

    for (const char* target : {"/api/echo", "/custom/echo"}) {
        INFO(target);
        ws_client refused(gw.port(), target);
        CHECK_FALSE(refused.upgraded());
        // Forwarded as a plain request, without the upgrade.
        REQUIRE(refused.response().result_int() == 200);
        auto headers = nlohmann::json::parse(refused.response().body())["headers"];
        CHECK_FALSE(headers.contains("upgrade"));
        if (headers.contains("connection")) {
            CHECK(lower(headers["connection"].get<std::string>()).find("upgrade") ==
                  std::string::npos);
        }
        CHECK(plain.last_headers().count("upgrade") == 0);
    }
    CHECK(plain.stats.requests == 2);
    CHECK(ws.stats.handshakes == 1);
}

TEST_CASE("websocket: a 101 the client did not ask for is a 502", "[websocket]") {
    ws_upstream up;
    running_proxy gw(test_config(up.port()));
    auto res = get(gw.port(), "/upgrade-anyway");
    CHECK(res.result_int() == 502);
    CHECK(res[http::field::content_type] == "application/json");
    CHECK(nlohmann::json::parse(res.body()).contains("error"));
    // Asking for h2c is no request to switch either: it was stripped.
    auto h2c = get(gw.port(), "/upgrade-anyway",
                   {{"Connection", "Upgrade, HTTP2-Settings"},
                    {"Upgrade", "h2c"},
                    {"HTTP2-Settings", "AAMAAABkAAQAAP__"}});
    CHECK(h2c.result_int() == 502);
    CHECK(up.last_plain_headers().count("upgrade") == 0);
    CHECK(up.stats.plain_requests == 2);
    CHECK(scrape(gw.admin_port(), "tollgate_tunnels_open") == 0);
    // Nothing was left switched: the next request is ordinary HTTP.
    CHECK(get(gw.port(), "/plain").result_int() == 200);
}

TEST_CASE("websocket: the handshake takes one token, and an empty bucket refuses it with 429",
          "[websocket][limits]") {
    ws_upstream up;
    limit::manual_clock clock;
    auto cfg = test_config(up.port());
    cfg.rate_limit.limit = 2;
    running_proxy gw(cfg, &clock);
    ws_client first(gw.port());
    REQUIRE(first.upgraded());
    CHECK(first.response()["X-RateLimit-Limit"] == "2");
    CHECK(first.response()["X-RateLimit-Remaining"] == "1");
    ws_client second(gw.port());
    REQUIRE(second.upgraded());
    CHECK(second.response()["X-RateLimit-Remaining"] == "0");
    // Messages on an open tunnel are not requests: they take no tokens.
    for (int i = 0; i < 5; ++i) {
        CHECK(echo(first, "m") == "m");
    }
    ws_client third(gw.port());
    CHECK_FALSE(third.upgraded());
    CHECK(third.response().result_int() == 429);
    CHECK(third.response()["X-RateLimit-Remaining"] == "0");
    CHECK(nlohmann::json::parse(third.response().body())["reason"] == "rate");
    CHECK(up.stats.handshakes == 2);
}

TEST_CASE("websocket: max_per_key caps one key's open tunnels, and closing one makes room",
          "[websocket][limits]") {
    ws_upstream up;
    auto cfg = test_config(up.port());
    cfg.websocket.max_per_key = 2;
    running_proxy gw(cfg);
    auto a = std::make_unique<ws_client>(gw.port());
    ws_client b(gw.port());
    REQUIRE(a->upgraded());
    REQUIRE(b.upgraded());
    ws_client refused(gw.port());
    CHECK_FALSE(refused.upgraded());
    check_tunnels_refusal(refused.response());
    // The cap is per key: another caller still gets a tunnel.
    ws_client other(gw.port(), "/ws", {bearer("someone-else")});
    CHECK(other.upgraded());
    CHECK(up.stats.handshakes == 3);

    CHECK_FALSE(a->close(websocket::close_reason(websocket::close_code::normal)));
    a.reset();
    REQUIRE(eventually([&] { return scrape(gw.admin_port(), "tollgate_tunnels_open") == 2; }));
    ws_client again(gw.port());
    CHECK(again.upgraded());
    CHECK(echo(again, "room") == "room");
}

TEST_CASE("websocket: max_tunnels caps open tunnels across all keys", "[websocket][limits]") {
    ws_upstream up;
    auto cfg = test_config(up.port());
    cfg.websocket.max_tunnels = 2;
    running_proxy gw(cfg);
    auto a = std::make_unique<ws_client>(gw.port(), "/ws", header_list{bearer("a")});
    ws_client b(gw.port(), "/ws", {bearer("b")});
    REQUIRE(a->upgraded());
    REQUIRE(b.upgraded());
    {
        ws_client c(gw.port(), "/ws", {bearer("c")});
        CHECK_FALSE(c.upgraded());
        check_tunnels_refusal(c.response());
    }
    CHECK(up.stats.handshakes == 2);
    CHECK_FALSE(a->close(websocket::close_reason(websocket::close_code::normal)));
    a.reset();
    REQUIRE(eventually([&] { return scrape(gw.admin_port(), "tollgate_tunnels_open") == 1; }));
    ws_client c(gw.port(), "/ws", {bearer("c")});
    CHECK(c.upgraded());
}

// Two headers must not get a request past concurrency.capacity: until the
// upstream answers, a handshake is a request in flight like any other.
TEST_CASE("websocket: handshakes the upstream sits on hold slots, and past capacity they get 429",
          "[websocket][slots]") {
    // test_upstream ignores Upgrade: /hold answers 200 once the test lets it.
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.concurrency.capacity = 3;
    running_proxy gw(cfg);
    std::vector<std::unique_ptr<client>> held;
    for (int i = 0; i < 3; ++i) {
        held.push_back(start_upgrade(gw.port(), "/hold"));
    }
    REQUIRE(up.wait_in_flight(3));
    REQUIRE(gw.srv().gw().gauges().inflight_slots == 3);
    for (int i = 0; i < 4; ++i) {
        ws_client refused(gw.port(), "/hold");
        CHECK_FALSE(refused.upgraded());
        CHECK(refused.response().result_int() == 429);
        CHECK(refused.response()["Retry-After"] == "1");
        CHECK(nlohmann::json::parse(refused.response().body())["reason"] == "concurrency");
    }
    CHECK(gw.srv().gw().gauges().inflight_slots == 3);
    CHECK(up.stats.requests == 3);

    // Declined (200, no switch): each slot goes back when its response is done.
    up.release_held();
    for (const auto& c : held) {
        CHECK(c->read().result_int() == 200);
    }
    CHECK(eventually([&] { return gw.srv().gw().gauges().inflight_slots == 0; }));
    CHECK(up.stats.max_in_flight == 3);
    CHECK(scrape(gw.admin_port(), "tollgate_tunnels_open") == 0);
    CHECK(get(gw.port(), "/echo").result_int() == 200);
}

TEST_CASE("websocket: a handshake waits FIFO for a slot when queue_timeout allows",
          "[websocket][slots]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.concurrency.capacity = 1;
    cfg.concurrency.queue_timeout = 5000ms;
    running_proxy gw(cfg);
    auto first = start_upgrade(gw.port(), "/hold");
    REQUIRE(up.wait_in_flight(1));
    auto queued = start_upgrade(gw.port(), "/hold");
    REQUIRE(eventually([&] { return gw.srv().gw().current()->slots->queued() == 1; }));
    CHECK(up.stats.requests == 1);
    up.release_held();
    CHECK(first->read().result_int() == 200);
    CHECK(queued->read().result_int() == 200);
    CHECK(up.stats.max_in_flight == 1);
    CHECK(eventually([&] { return gw.srv().gw().gauges().inflight_slots == 0; }));
}

TEST_CASE("websocket: the handshake needs a slot, the open tunnel gives it back",
          "[websocket][slots]") {
    ws_upstream up;
    test_upstream plain;
    auto cfg = test_config(up.port());
    cfg.concurrency.capacity = 1;
    route_config hold;
    hold.name = "hold";
    hold.path_prefix = "/hold";
    hold.upstream = {http_server(plain.port())};
    cfg.routes = {hold};
    running_proxy gw(cfg);

    // The one slot is held by a plain request: no handshake now.
    auto held = std::make_unique<client>(gw.port());
    request req{http::verb::get, "/hold", 11};
    req.set(http::field::host, "localhost");
    http::write(held->stream(), req);
    REQUIRE(plain.wait_in_flight(1));
    {
        ws_client refused(gw.port());
        CHECK_FALSE(refused.upgraded());
        CHECK(refused.response().result_int() == 429);
        CHECK(nlohmann::json::parse(refused.response().body())["reason"] == "concurrency");
    }
    CHECK(up.stats.handshakes == 0);
    plain.release_held();
    CHECK(held->read().result_int() == 200);
    CHECK(eventually([&] { return gw.srv().gw().gauges().inflight_slots == 0; }));

    ws_client first(gw.port());
    REQUIRE(first.upgraded());
    // Switched: the slot is back while the tunnel stays open ...
    CHECK(eventually([&] { return gw.srv().gw().gauges().inflight_slots == 0; }));
    CHECK(scrape(gw.admin_port(), "tollgate_tunnels_open") == 1);
    // ... so a second handshake and a plain request each get the single slot.
    ws_client second(gw.port());
    REQUIRE(second.upgraded());
    CHECK(eventually([&] { return gw.srv().gw().gauges().inflight_slots == 0; }));
    CHECK(get(gw.port(), "/hold").result_int() == 200);
    CHECK(scrape(gw.admin_port(), "tollgate_tunnels_open") == 2);
    CHECK(echo(first, "still open") == "still open");
    CHECK(echo(second, "me too") == "me too");
    CHECK(gw.srv().gw().gauges().inflight_slots == 0);
}

TEST_CASE("websocket: open tunnels leave upstream.max_connections to ordinary requests",
          "[websocket]") {
    ws_upstream up;
    auto cfg = test_config(up.port());
    cfg.threads = 1;
    cfg.upstream.max_connections = 1;
    cfg.upstream.connect_timeout = 1000ms;
    running_proxy gw(cfg);
    ws_client first(gw.port());
    REQUIRE(first.upgraded());
    ws_client second(gw.port());
    REQUIRE(second.upgraded());
    // Without a connection of their own, these waited connect_timeout for
    // one and got 504 while the tunnels stayed open.
    CHECK(get(gw.port(), "/plain").result_int() == 200);
    CHECK(get(gw.port(), "/plain").result_int() == 200);
    CHECK(echo(first, "still open") == "still open");
    CHECK(echo(second, "me too") == "me too");
    // The shared gauge still counts the tunnels' connections (and the pooled one).
    CHECK(gw.srv().gw().gauges().upstream_connections >= 2);
}

TEST_CASE("websocket: a tunnel silent past tunnel_idle_timeout is closed",
          "[websocket][timeouts]") {
    ws_upstream up;
    auto cfg = test_config(up.port());
    cfg.client.tunnel_idle_timeout = 300ms;
    running_proxy gw(cfg);
    // Timed from before the handshake: the idle clock cannot start earlier.
    const auto start = std::chrono::steady_clock::now();
    ws_client c(gw.port());
    REQUIRE(c.upgraded());
    std::string got;
    auto ec = c.read(got, 5s);
    const auto elapsed = std::chrono::steady_clock::now() - start;
    INFO(ec.message());
    CHECK(ec);
    CHECK(ec != beast::error::timeout);  // closed by tollgate, not by our own deadline
    CHECK(elapsed >= 280ms);
    CHECK(elapsed < 3s);
    // Both halves are gone: the upstream session ended and the gauge is back to 0.
    CHECK(ws_upstream::wait_for(up.stats.ended, 1));
    CHECK(eventually([&] { return scrape(gw.admin_port(), "tollgate_tunnels_open") == 0; }));
}

TEST_CASE("websocket: traffic keeps a tunnel open past tunnel_idle_timeout",
          "[websocket][timeouts]") {
    ws_upstream up;
    auto cfg = test_config(up.port());
    cfg.client.tunnel_idle_timeout = 400ms;
    running_proxy gw(cfg);
    ws_client c(gw.port());
    REQUIRE(c.upgraded());
    // A message every 100 ms for 1.2 s: three idle timeouts long in total, never
    // idle for one. The pause is the stimulus here, not a wait for state.
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 12; ++i) {
        REQUIRE(echo(c, "tick " + std::to_string(i)) == "tick " + std::to_string(i));
        std::this_thread::sleep_for(100ms);
    }
    CHECK(std::chrono::steady_clock::now() - start >= 1200ms);
    CHECK(up.stats.ended == 0);
}

TEST_CASE("websocket: tollgate_tunnels_open follows tunnels however they end",
          "[websocket][metrics]") {
    ws_upstream up;
    running_proxy gw(test_config(up.port()));
    CHECK(scrape(gw.admin_port(), "tollgate_tunnels_open") == 0);
    auto by_client = std::make_unique<ws_client>(gw.port());
    auto by_upstream = std::make_unique<ws_client>(gw.port(), "/ws", header_list{bearer("t")});
    auto dropped = std::make_unique<ws_client>(gw.port());
    REQUIRE(by_client->upgraded());
    REQUIRE(by_upstream->upgraded());
    REQUIRE(dropped->upgraded());
    CHECK(eventually([&] { return scrape(gw.admin_port(), "tollgate_tunnels_open") == 3; }));
    // Plain requests are not tunnels.
    CHECK(get(gw.port(), "/plain").result_int() == 200);
    CHECK(scrape(gw.admin_port(), "tollgate_tunnels_open") == 3);

    CHECK_FALSE(by_client->close(websocket::close_reason(websocket::close_code::normal)));
    CHECK(eventually([&] { return scrape(gw.admin_port(), "tollgate_tunnels_open") == 2; }));

    REQUIRE_FALSE(by_upstream->write("close-me"));
    std::string got;
    CHECK(by_upstream->read(got) == websocket::error::closed);
    CHECK(eventually([&] { return scrape(gw.admin_port(), "tollgate_tunnels_open") == 1; }));

    // A client that vanishes without a close frame.
    beast::get_lowest_layer(dropped->stream()).socket().close();
    CHECK(eventually([&] { return scrape(gw.admin_port(), "tollgate_tunnels_open") == 0; }));
    CHECK(ws_upstream::wait_for(up.stats.ended, 3));
}

TEST_CASE("websocket: SIGTERM closes open tunnels after drain_timeout, then exit 0",
          "[websocket][lifecycle]") {
    ws_upstream up;
    auto path = write_temp_file("ws-drain.yaml",
                                "listen: 127.0.0.1:0\n"
                                "admin: {listen: 127.0.0.1:0}\n"
                                "threads: 2\n"
                                "upstream:\n"
                                "  servers: [http://127.0.0.1:" +
                                    std::to_string(up.port()) +
                                    "]\n"
                                    "shutdown: {drain_timeout: 500ms}\n"
                                    "log: {access_log: false}\n");
    tollgate_process p({"--config", path});
    REQUIRE(p.wait_listening());
    ws_client c(p.port());
    REQUIRE(c.upgraded());
    REQUIRE(echo(c, "before") == "before");

    const auto start = std::chrono::steady_clock::now();
    p.signal(SIGTERM);
    REQUIRE(p.wait_for_log("draining"));
    // Draining does not cut the tunnel at once ...
    CHECK(echo(c, "during") == "during");
    // ... but it is closed when drain_timeout runs out.
    std::string got;
    auto ec = c.read(got, 5s);
    const auto elapsed = std::chrono::steady_clock::now() - start;
    INFO(ec.message());
    CHECK(ec);
    CHECK(ec != beast::error::timeout);
    CHECK(elapsed >= 400ms);
    CHECK(elapsed < 4s);
    CHECK(ws_upstream::wait_for(up.stats.ended, 1));
    CHECK(p.wait_exit() == 0);
    CHECK(p.stderr_text().find("shutdown.drain_timeout passed: cutting 1 open connection\n") !=
          std::string::npos);
}
