// The reverse proxy core over real loopback sockets: tollgate in-process on
// port 0 in front of a real upstream started by each test.

#include <catch2/catch.hpp>

#include <sys/socket.h>

#include <iostream>
#include <sstream>

#include "support.hpp"

using namespace tollgate;
using namespace tollgate::test;

namespace {

request make_request(http::verb verb, std::string_view target) {
    request req{verb, target, 11};
    req.set(http::field::host, "localhost");
    return req;
}

}  // namespace

TEST_CASE("GET is proxied with forwarding headers", "[proxy]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    auto res = get(gw.port(), "/echo?x=1");
    REQUIRE(res.result_int() == 200);
    auto body = nlohmann::json::parse(res.body());
    CHECK(body["target"] == "/echo?x=1");
    CHECK(body["headers"]["x-forwarded-for"] == "127.0.0.1");
    CHECK(body["headers"]["x-forwarded-proto"] == "http");
    CHECK(body["headers"]["via"] == "1.1 tollgate");
    CHECK(body["headers"]["host"] == "localhost");
}

TEST_CASE("X-Forwarded-For from the client is extended, not replaced", "[proxy]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    auto res = get(gw.port(), "/echo", {{"X-Forwarded-For", "203.0.113.7"}, {"Via", "1.0 edge"}});
    auto body = nlohmann::json::parse(res.body());
    CHECK(body["headers"]["x-forwarded-for"] == "203.0.113.7, 127.0.0.1");
    CHECK(body["headers"]["via"] == "1.0 edge, 1.1 tollgate");
}

TEST_CASE("X-Forwarded-Proto: a trusted proxy's is kept when asked, a client's is replaced",
          "[proxy]") {
    // A load balancer that ends TLS in front of tollgate says https: a
    // backend that redirects plain HTTP to HTTPS must see it, or it
    // redirects every request. Anyone else cannot claim a scheme.
    test_upstream up;
    const auto forwarded_proto = [&](std::uint16_t port, bool with_body, std::string_view sent) {
        client c(port);
        auto req = make_request(with_body ? http::verb::post : http::verb::get, "/echo");
        if (!sent.empty()) {
            req.set("X-Forwarded-Proto", sent);
        }
        if (with_body) {
            req.body() = "body";
            req.prepare_payload();
        }
        auto res = c.send(std::move(req));
        REQUIRE(res.result_int() == 200);
        return nlohmann::json::parse(res.body())["headers"]["x-forwarded-proto"].get<std::string>();
    };
    auto trusting = test_config(up.port());
    trusting.keying.trusted_proxies = {*cidr::parse("127.0.0.0/8")};
    running_proxy xff_only(trusting);  // a balancer that may pass the field through
    trusting.keying.trust_forwarded_proto = true;
    running_proxy behind_balancer(trusting);
    running_proxy open_to_clients(test_config(up.port()));
    // Both ways of forwarding: a request without a body, and one with.
    for (bool with_body : {false, true}) {
        INFO("with a body: " << with_body);
        CHECK(forwarded_proto(behind_balancer.port(), with_body, "https") == "https");
        CHECK(forwarded_proto(behind_balancer.port(), with_body, "http, HTTPS") == "https");
        CHECK(forwarded_proto(behind_balancer.port(), with_body, "") == "http");
        CHECK(forwarded_proto(behind_balancer.port(), with_body, "gopher") == "http");
        CHECK(forwarded_proto(open_to_clients.port(), with_body, "https") == "http");
        CHECK(forwarded_proto(xff_only.port(), with_body, "https") == "http");
    }
}

TEST_CASE("a client that reaches an IPv6 listener over IPv4 is forwarded as its IPv4 address",
          "[proxy]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.listen = {"::ffff:127.0.0.1", 0};  // an IPv6 socket; get() connects over IPv4
    running_proxy gw(cfg);
    auto res = get(gw.port(), "/echo");
    REQUIRE(res.result_int() == 200);
    auto body = nlohmann::json::parse(res.body());
    CHECK(body["headers"]["x-forwarded-for"] == "127.0.0.1");
}

TEST_CASE("hop-by-hop headers are stripped both ways", "[proxy]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    auto res = get(gw.port(), "/echo",
                   {{"Connection", "keep-alive, X-Secret-Hop"},
                    {"X-Secret-Hop", "1"},
                    {"Keep-Alive", "timeout=5"},
                    {"Proxy-Connection", "keep-alive"},
                    {"TE", "trailers"},
                    {"Upgrade", "h2c"},
                    {"HTTP2-Settings", "AAMAAABkAAQAAP__"},
                    {"X-End-To-End", "kept"}});
    REQUIRE(res.result_int() == 200);
    auto headers = nlohmann::json::parse(res.body())["headers"];
    for (const char* name : {"connection", "x-secret-hop", "keep-alive", "proxy-connection", "te",
                             "upgrade", "http2-settings"}) {
        INFO(name);
        CHECK_FALSE(headers.contains(name));
    }
    CHECK(headers["x-end-to-end"] == "kept");
    CHECK(res.find("Keep-Alive") == res.end());
}

TEST_CASE("POST bodies of several MB pass both ways intact", "[proxy][body]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    client c(gw.port());
    const std::string body = pattern_body(5 * 1024 * 1024 + 17);
    auto req = make_request(http::verb::post, "/echo?echo=1");
    req.body() = body;
    req.prepare_payload();
    auto res = c.send(std::move(req));
    REQUIRE(res.result_int() == 200);
    CHECK(res["X-Body-Size"] == std::to_string(body.size()));
    CHECK(res["X-Body-Fnv"] == std::to_string(fnv1a(body)));
    CHECK(res.body().size() == body.size());
    CHECK(fnv1a(res.body()) == fnv1a(body));
}

TEST_CASE("chunked request body is relayed and re-framed", "[proxy][body]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    client c(gw.port());
    const std::string body = pattern_body(300000);
    c.write_raw("POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (std::size_t at = 0; at < body.size(); at += 65536) {
        std::size_t len = std::min<std::size_t>(65536, body.size() - at);
        char size_line[32];
        std::snprintf(size_line, sizeof size_line, "%zx\r\n", len);
        c.write_raw(size_line);
        c.write_raw(std::string_view(body).substr(at, len));
        c.write_raw("\r\n");
    }
    c.write_raw("0\r\n\r\n");
    auto res = c.read();
    REQUIRE(res.result_int() == 200);
    CHECK(res["X-Body-Size"] == std::to_string(body.size()));
    CHECK(res["X-Body-Fnv"] == std::to_string(fnv1a(body)));
    auto headers = nlohmann::json::parse(res.body())["headers"];
    CHECK(headers["transfer-encoding"] == "chunked");
}

TEST_CASE("large Content-Length and chunked responses stream to the client", "[proxy][body]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    client c(gw.port());
    auto big = c.send(make_request(http::verb::get, "/big?n=8000000"));
    REQUIRE(big.result_int() == 200);
    CHECK(big[http::field::content_length] == "8000000");
    CHECK(fnv1a(big.body()) == fnv1a(pattern_body(8000000)));

    auto chunked = c.send(make_request(http::verb::get, "/chunked?n=3000000"));
    REQUIRE(chunked.result_int() == 200);
    CHECK(chunked.chunked());
    CHECK(fnv1a(chunked.body()) == fnv1a(pattern_body(3000000)));
}

TEST_CASE("a response delimited by close is re-framed as chunked", "[proxy][body]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    client c(gw.port());
    auto res = c.send(make_request(http::verb::get, "/close?n=200000"));
    REQUIRE(res.result_int() == 200);
    CHECK(res.chunked());
    CHECK(fnv1a(res.body()) == fnv1a(pattern_body(200000)));
    // The client connection stays usable.
    auto again = c.send(make_request(http::verb::get, "/echo"));
    CHECK(again.result_int() == 200);
}

TEST_CASE("HTTP/1.0 client gets a close-delimited body instead of chunks", "[proxy][body]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    client c(gw.port());
    c.write_raw("GET /chunked?n=5000 HTTP/1.0\r\nHost: localhost\r\n\r\n");
    auto res = c.read();
    REQUIRE(res.result_int() == 200);
    CHECK_FALSE(res.chunked());
    CHECK(res.body() == pattern_body(5000));
    CHECK(c.closed_by_peer());
}

TEST_CASE("keep-alive: many requests on one client connection reuse upstream connections",
          "[proxy][pool]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.threads = 1;
    running_proxy gw(cfg);
    client c(gw.port());
    for (int i = 0; i < 20; ++i) {
        auto res = c.send(make_request(http::verb::get, "/echo"));
        REQUIRE(res.result_int() == 200);
    }
    CHECK(up.stats.requests == 20);
    CHECK(up.stats.connections == 1);
    CHECK(gw.srv().upstream_connects() == 1);
}

TEST_CASE("pool reuse across client connections: upstream sees fewer connections than requests",
          "[proxy][pool]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.threads = 1;
    running_proxy gw(cfg);
    for (int i = 0; i < 10; ++i) {
        REQUIRE(get(gw.port(), "/echo").result_int() == 200);
    }
    CHECK(up.stats.requests == 10);
    CHECK(up.stats.connections < 10);
}

TEST_CASE("a reload keeps the pooled connections of the servers it keeps", "[proxy][pool]") {
    test_upstream up;
    test_upstream other;
    auto cfg = test_config(up.port());
    cfg.threads = 1;
    running_proxy gw(cfg);
    client c(gw.port());
    REQUIRE(c.send(make_request(http::verb::get, "/echo")).result_int() == 200);
    REQUIRE(up.stats.connections == 1);

    // The same server, a route that names it too, and one more server: the
    // connection pooled before the reload carries the next request.
    route_config route;
    route.name = "same";
    route.path_prefix = "/same";
    route.upstream = cfg.upstream.servers;
    cfg.routes.push_back(route);
    upstream_server added;
    added.port = other.port();
    added.url = "http://127.0.0.1:" + std::to_string(other.port());
    cfg.upstream.servers.push_back(added);
    gw.srv().reload(std::make_shared<const config>(cfg));
    REQUIRE(c.send(make_request(http::verb::get, "/same/echo")).result_int() == 200);
    CHECK(up.stats.requests == 2);
    CHECK(up.stats.connections == 1);

    // A server that is gone from the config takes its connections with it:
    // a later config naming it again starts afresh.
    cfg.routes.clear();
    cfg.upstream.servers = {added};
    gw.srv().reload(std::make_shared<const config>(cfg));
    cfg.upstream.servers = {added, test_config(up.port()).upstream.servers.front()};
    gw.srv().reload(std::make_shared<const config>(cfg));
    for (int i = 0; i < 2; ++i) {
        REQUIRE(c.send(make_request(http::verb::get, "/echo")).result_int() == 200);
    }
    CHECK(up.stats.requests == 3);
    CHECK(up.stats.connections == 2);
}

TEST_CASE("HEAD, 204 and 304 carry no body", "[proxy]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    client c(gw.port());
    auto head = c.send(make_request(http::verb::head, "/big?n=1234"));
    CHECK(head.result_int() == 200);
    CHECK(head[http::field::content_length] == "1234");
    CHECK(head.body().empty());
    auto no_content = c.send(make_request(http::verb::get, "/status?code=204"));
    CHECK(no_content.result_int() == 204);
    CHECK(no_content.body().empty());
    auto not_modified = c.send(make_request(http::verb::get, "/status?code=304"));
    CHECK(not_modified.result_int() == 304);
    CHECK(not_modified.body().empty());
    // After three bodiless responses the connection is still in sync.
    auto res = c.send(make_request(http::verb::get, "/big?n=10"));
    CHECK(res.body() == pattern_body(10));
}

TEST_CASE("Expect: 100-continue is answered before the body is sent", "[proxy][body]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    client c(gw.port());
    c.write_raw(
        "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: "
        "100-continue\r\n\r\n");
    auto interim = c.read();
    REQUIRE(interim.result_int() == 100);
    c.write_raw("hello");
    auto res = c.read();
    REQUIRE(res.result_int() == 200);
    CHECK(res["X-Body-Size"] == "5");
    auto headers = nlohmann::json::parse(res.body())["headers"];
    CHECK_FALSE(headers.contains("expect"));
}

TEST_CASE("an Expect field with anything but 100-continue gets 417", "[proxy][body]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    // Every field and every list element counts, not only the first.
    for (std::string_view expect : {"Expect: foo\r\n", "Expect: 100-continue\r\nExpect: foo\r\n",
                                    "Expect: 100-continue, foo\r\n", "Expect: \r\n"}) {
        INFO(expect);
        client c(gw.port());
        c.write_raw("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n" +
                    std::string(expect) + "\r\n");
        auto res = c.read();
        CHECK(res.result_int() == 417);
        CHECK_FALSE(res.keep_alive());
    }
    // Case and a repeated 100-continue are fine.
    client c(gw.port());
    c.write_raw(
        "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: "
        "100-Continue\r\nExpect: 100-continue, \r\n\r\n");
    REQUIRE(c.read().result_int() == 100);
    c.write_raw("hello");
    CHECK(c.read().result_int() == 200);
    CHECK(up.stats.requests == 1);
}

TEST_CASE("upstream refusing connections gives 502", "[proxy][errors]") {
    running_proxy gw(test_config(free_port()));
    auto res = get(gw.port(), "/");
    CHECK(res.result_int() == 502);
    CHECK(res[http::field::content_type] == "application/json");
    CHECK(nlohmann::json::parse(res.body()).contains("error"));
}

TEST_CASE("a refused server is skipped for the next one", "[proxy][errors]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.upstream.servers = {http_server(free_port()), http_server(up.port())};
    running_proxy gw(cfg);
    for (int i = 0; i < 6; ++i) {
        CHECK(get(gw.port(), "/echo").result_int() == 200);
    }
    CHECK(up.stats.requests == 6);
}

TEST_CASE("a refused server's turns spread over the live ones", "[proxy][errors]") {
    // Round robin over a, dead, c: the dead server's turns must not all go
    // to the server after it (that was 4 for a, 8 for c).
    test_upstream a;
    test_upstream c;
    auto cfg = test_config(a.port());
    cfg.upstream.servers = {http_server(a.port()), http_server(free_port()), http_server(c.port())};
    running_proxy gw(cfg);
    for (int i = 0; i < 12; ++i) {
        CHECK(get(gw.port(), "/echo").result_int() == 200);
    }
    CHECK(a.stats.requests == 6);
    CHECK(c.stats.requests == 6);
}

TEST_CASE("a refused server of a group is counted and named in one warning", "[proxy][errors]") {
    test_upstream up;
    const upstream_server dead = http_server(free_port());
    auto cfg = test_config(up.port());
    cfg.upstream.servers = {dead, http_server(up.port())};
    const auto [metrics, text] = run_logged(cfg, 6);
    CHECK(up.stats.requests == 6);
    // The first request met the dead server and moved on; it then rested
    // from its turns, so no other request waited for it; none failed.
    CHECK(metrics.find("tollgate_upstream_connect_failovers_total 1\n") != std::string::npos);
    CHECK(metrics.find("tollgate_upstream_errors_total{kind=\"connect_refused\"} 0") !=
          std::string::npos);
    // One warning for six refusals: the interval keeps a dead server from
    // writing a line per request.
    INFO(text);
    const std::string named = "upstream " + dead.url + " refused a connection";
    const auto first = text.find(named);
    CHECK(first != std::string::npos);
    CHECK(text.find(named, first + 1) == std::string::npos);
}

TEST_CASE("a server that does not answer its connect rests, and the request moves on",
          "[proxy][errors]") {
    // A host that is down drops the SYN: nothing refuses, the connect times
    // out. Here: a listener whose accept queue (backlog 0) one connection fills.
    asio::io_context ioc;
    tcp::acceptor blackhole(ioc);
    blackhole.open(tcp::v4());
    blackhole.bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    blackhole.listen(0);
    tcp::socket filler(ioc);
    filler.connect(blackhole.local_endpoint());
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.threads = 1;
    cfg.upstream.connect_timeout = std::chrono::milliseconds(300);
    cfg.upstream.servers = {http_server(blackhole.local_endpoint().port()), http_server(up.port())};
    running_proxy gw(cfg);
    for (int i = 0; i < 6; ++i) {
        CHECK(get(gw.port(), "/echo").result_int() == 200);
    }
    CHECK(up.stats.requests == 6);
    const std::string metrics = get(gw.admin_port(), "/metrics").body();
    CHECK(metrics.find("tollgate_upstream_connect_failovers_total 1\n") != std::string::npos);
    CHECK(metrics.find("tollgate_upstream_errors_total{kind=\"connect_timeout\"} 0") !=
          std::string::npos);
}

TEST_CASE("when every server of a group drops connects, a request waits for one, not all",
          "[proxy][errors]") {
    asio::io_context ioc;
    std::vector<std::unique_ptr<tcp::acceptor>> blackholes;
    std::vector<std::unique_ptr<tcp::socket>> fillers;
    auto cfg = test_config(free_port());
    cfg.threads = 1;
    cfg.upstream.connect_timeout = std::chrono::milliseconds(300);
    cfg.upstream.servers.clear();
    for (int i = 0; i < 2; ++i) {
        blackholes.push_back(std::make_unique<tcp::acceptor>(ioc));
        auto& b = *blackholes.back();
        b.open(tcp::v4());
        b.bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
        b.listen(0);
        fillers.push_back(std::make_unique<tcp::socket>(ioc));
        fillers.back()->connect(b.local_endpoint());
        cfg.upstream.servers.push_back(http_server(b.local_endpoint().port()));
    }
    running_proxy gw(cfg);
    // The first request tries both (neither was known to be down); then both
    // rest, and the next ones try one and give up, not one per server.
    for (int i = 0; i < 3; ++i) {
        CHECK(get(gw.port(), "/echo").result_int() == 504);
    }
    const std::string metrics = get(gw.admin_port(), "/metrics").body();
    CHECK(metrics.find("tollgate_upstream_connect_failovers_total 1\n") != std::string::npos);
    CHECK(metrics.find("tollgate_upstream_errors_total{kind=\"connect_timeout\"} 3") !=
          std::string::npos);
}

TEST_CASE("upstream closing without a response gives 502", "[proxy][errors]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    const auto hangup = get(gw.port(), "/hangup");
    CHECK(hangup.result_int() == 502);
    CHECK_FALSE(hangup["X-RateLimit-Remaining"].empty());
}

TEST_CASE("upstream silent past response_timeout gives 504", "[proxy][errors]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.upstream.response_timeout = std::chrono::milliseconds(600);
    running_proxy gw(cfg);
    auto res = get(gw.port(), "/stall");
    CHECK(res.result_int() == 504);
    // A token was taken: the reply carries the limits like any other.
    CHECK(res["X-RateLimit-Limit"] == "600");
    CHECK(res["X-RateLimit-Remaining"] == "599");

    // On a connection that already carried an exchange, too.
    client c(gw.port());
    request req{http::verb::get, "/", 11};
    req.set(http::field::host, "localhost");
    REQUIRE(c.send(req).result_int() == 200);
    req.target("/stall");
    const auto start = std::chrono::steady_clock::now();
    CHECK(c.send(req).result_int() == 504);
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::milliseconds(3000));
    const auto metrics = get(gw.admin_port(), "/metrics").body();
    CHECK(metrics.find("tollgate_upstream_errors_total{kind=\"response_timeout\"} 2") !=
          std::string::npos);
    // The timeouts show in both latency histograms: 3 exchanges, 2 past 0.25 s.
    CHECK(metrics.find("tollgate_upstream_duration_seconds_count 3") != std::string::npos);
    CHECK(metrics.find("tollgate_request_duration_seconds_count 3") != std::string::npos);
    CHECK(metrics.find("tollgate_upstream_duration_seconds_bucket{le=\"0.25\"} 1") !=
          std::string::npos);
}

TEST_CASE("no upstream connection free within connect_timeout gives 504 pool_exhausted",
          "[proxy][errors]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.threads = 1;
    cfg.upstream.max_connections = 1;
    cfg.upstream.connect_timeout = std::chrono::milliseconds(200);
    running_proxy gw(cfg);
    client holding(gw.port());
    holding.write_raw("GET /hold HTTP/1.1\r\nHost: localhost\r\n\r\n");
    REQUIRE(up.wait_in_flight(1));
    auto res = get(gw.port(), "/echo");
    CHECK(res.result_int() == 504);
    CHECK(nlohmann::json::parse(res.body())["error"] == "no upstream connection free");
    const auto metrics = get(gw.admin_port(), "/metrics").body();
    CHECK(metrics.find("tollgate_upstream_errors_total{kind=\"pool_exhausted\"} 1") !=
          std::string::npos);
    CHECK(metrics.find("kind=\"connect_timeout\"} 1") == std::string::npos);
    // The wait was tollgate's, not the upstream's: no upstream latency sample.
    CHECK(metrics.find("tollgate_upstream_duration_seconds_count 0") != std::string::npos);
    up.release_held();
    CHECK(holding.read().result_int() == 200);
}

TEST_CASE("upstream connect timeout gives 504", "[proxy][errors]") {
    // A listener whose backlog is full never completes new handshakes.
    asio::io_context ioc;
    tcp::acceptor full(ioc);
    full.open(tcp::v4());
    full.bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    full.listen(0);
    std::vector<std::unique_ptr<tcp::socket>> fillers;
    for (int i = 0; i < 8; ++i) {
        auto s = std::make_unique<tcp::socket>(ioc);
        s->open(tcp::v4());
        s->non_blocking(true);
        // Raw connect: Asio's blocking connect would wait for the handshake.
        auto ep = full.local_endpoint();
        (void)::connect(s->native_handle(), ep.data(), static_cast<socklen_t>(ep.size()));
        fillers.push_back(std::move(s));
    }
    auto cfg = test_config(full.local_endpoint().port());
    cfg.upstream.connect_timeout = std::chrono::milliseconds(300);
    running_proxy gw(cfg);
    auto res = get(gw.port(), "/");
    CHECK(res.result_int() == 504);
}

TEST_CASE("upstream reset mid-response truncates the client response", "[proxy][errors]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    client c(gw.port());
    c.write_raw("GET /reset-mid HTTP/1.1\r\nHost: localhost\r\n\r\n");
    http::response_parser<http::string_body> parser;
    parser.body_limit(boost::none);
    beast::flat_buffer buffer;
    error_code ec;
    http::read(c.stream(), buffer, parser, ec);
    // The header arrived (200 with the announced length) but the body never completes:
    // the client sees the truncation, never a fake 502 appended.
    CHECK(parser.is_header_done());
    CHECK(parser.get().result_int() == 200);
    CHECK_FALSE(parser.is_done());
    CHECK(ec);
}

TEST_CASE("client abort mid-response closes the upstream connection", "[proxy][errors]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.threads = 1;
    running_proxy gw(cfg);
    {
        client c(gw.port());
        c.write_raw("GET /big?n=50000000 HTTP/1.1\r\nHost: localhost\r\n\r\n");
        char buf[1024];
        asio::read(c.socket(), asio::buffer(buf));  // the response has started
        c.socket().set_option(asio::socket_base::linger(true, 0));
        c.socket().close();
    }
    // The half-sent upstream connection is closed, not pooled.
    CHECK(up.wait_closed(1));
    CHECK(get(gw.port(), "/echo").result_int() == 200);
    CHECK(up.stats.connections == 2);
}

TEST_CASE("malformed request gets 400 and close", "[proxy][framing]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    client c(gw.port());
    c.write_raw("GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n");
    auto res = c.read();
    CHECK(res.result_int() == 400);
    CHECK_FALSE(res.keep_alive());
    CHECK(c.closed_by_peer());
    CHECK(up.stats.requests == 0);
}

TEST_CASE("header too large gives 431, a target too long 414, body too large 413",
          "[proxy][limits]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.client.max_header_bytes = 1024;
    cfg.client.max_body_bytes = 1000;
    running_proxy gw(cfg);
    {
        client c(gw.port());
        c.write_raw("GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + std::string(2000, 'a') +
                    "\r\n\r\n");
        CHECK(c.read().result_int() == 431);
    }
    {
        client c(gw.port());
        c.write_raw("GET /" + std::string(2000, 'a') + " HTTP/1.1\r\nHost: localhost\r\n\r\n");
        CHECK(c.read().result_int() == 414);
    }
    {
        client c(gw.port());
        c.write_raw("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n");
        auto res = c.read();
        CHECK(res.result_int() == 413);
        CHECK_FALSE(res.keep_alive());
    }
    CHECK(up.stats.requests == 0);
}

TEST_CASE("a chunked body over the limit is cut with 413", "[proxy][limits]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.client.max_body_bytes = 1000;
    running_proxy gw(cfg);
    client c(gw.port());
    c.write_raw("POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.write_raw("7d0\r\n" + std::string(2000, 'z') + "\r\n0\r\n\r\n");
    auto res = c.read();
    CHECK(res.result_int() == 413);
    CHECK(c.closed_by_peer());
}

// The bytes of a chunked body read after its head pass the same line check
// as those that came with it (line_checked_reader).
TEST_CASE("a bare LF in a chunked body read later is answered 400 at once", "[proxy][limits]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.client.body_timeout = std::chrono::milliseconds(10000);
    running_proxy gw(cfg);
    for (const std::string tail : {"0\r\n\n", "0\r\nX: y\n\r\n", "3\nabc\n0\n\n"}) {
        client c(gw.port());
        c.write_raw("POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
        c.write_raw("5\r\nhello\r\n");
        // Once the request holds its slot, its head has been parsed and
        // decided on: what is sent next arrives in a later read.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (gw.srv().gw().gauges().inflight_slots < 1 &&
               std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        REQUIRE(gw.srv().gw().gauges().inflight_slots == 1);
        const auto start = std::chrono::steady_clock::now();
        c.write_raw(tail);
        auto res = c.read();
        CHECK(res.result_int() == 400);
        CHECK_FALSE(res.keep_alive());
        CHECK(std::chrono::steady_clock::now() - start < std::chrono::milliseconds(5000));
    }
}

TEST_CASE("header timeout is a deadline for the whole header", "[proxy][timeouts]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.client.header_timeout = std::chrono::milliseconds(300);
    running_proxy gw(cfg);
    client c(gw.port());
    c.write_raw("GET / HTTP/1.1\r\n");
    // Trickle a header byte every 50 ms for up to 2 s: it must not extend the deadline.
    auto start = std::chrono::steady_clock::now();
    error_code ec;
    for (int i = 0; i < 40 && !ec && c.socket().available() == 0; ++i) {
        asio::write(c.socket(), asio::buffer("X", 1), ec);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    auto elapsed = std::chrono::steady_clock::now() - start;
    auto res = c.read();
    CHECK(res.result_int() == 408);
    CHECK_FALSE(res.keep_alive());
    CHECK(elapsed < std::chrono::milliseconds(1500));
    CHECK(up.stats.requests == 0);
}

namespace {

/// True when tollgate closes `c` within 3 s, but no sooner than `at_least`.
bool closed_after(client& c, std::chrono::milliseconds at_least) {
    const auto start = std::chrono::steady_clock::now();
    const bool closed = c.closed_within(std::chrono::milliseconds(3000));
    return closed && std::chrono::steady_clock::now() - start >= at_least;
}

}  // namespace

TEST_CASE("a connection that sends nothing is closed after header_timeout", "[proxy][timeouts]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.client.header_timeout = std::chrono::milliseconds(300);
    cfg.client.idle_timeout = std::chrono::milliseconds(10000);
    running_proxy gw(cfg);
    client c(gw.port());
    CHECK(closed_after(c, std::chrono::milliseconds(250)));
}

// The session's wait timer is still armed for the first request's later
// deadline (header_timeout) when the idle wait begins, so it must be
// brought forward: left alone, this connection would stay open seconds.
TEST_CASE("a keep-alive connection idle past client.idle_timeout is closed", "[proxy][timeouts]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.client.idle_timeout = std::chrono::milliseconds(300);
    cfg.upstream.response_timeout = std::chrono::milliseconds(10000);
    running_proxy gw(cfg);
    client c(gw.port());
    request req{http::verb::get, "/", 11};
    req.set(http::field::host, "localhost");
    auto res = c.send(req);
    REQUIRE(res.result_int() == 200);
    REQUIRE(res.keep_alive());
    CHECK(closed_after(c, std::chrono::milliseconds(250)));
}

TEST_CASE("requests keep a keep-alive connection open past client.idle_timeout",
          "[proxy][timeouts]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.client.idle_timeout = std::chrono::milliseconds(300);
    running_proxy gw(cfg);
    client c(gw.port());
    request req{http::verb::get, "/", 11};
    req.set(http::field::host, "localhost");
    // A request every 100 ms for 1.2 s: four idle timeouts long in all, never
    // idle for one. The pause is the stimulus here, not a wait for state.
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1200);
    int answered = 0;
    while (std::chrono::steady_clock::now() < until) {
        auto res = c.send(req);
        REQUIRE(res.result_int() == 200);
        ++answered;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(answered >= 8);
    CHECK(up.stats.connections == 1);
}

TEST_CASE("draining finishes the request in flight with Connection: close", "[proxy][drain]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    client c(gw.port());
    c.write_raw("GET /hold HTTP/1.1\r\nHost: localhost\r\n\r\n");
    REQUIRE(up.wait_in_flight(1));
    std::thread stopper([&] { gw.srv().drain_and_stop(); });
    while (!gw.srv().gw().draining()) {
        std::this_thread::yield();
    }
    // New connections are refused while the held request still completes.
    up.release_held();
    auto res = c.read();
    stopper.join();
    CHECK(res.result_int() == 200);
    CHECK_FALSE(res.keep_alive());
}
