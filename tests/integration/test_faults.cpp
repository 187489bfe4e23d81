// Fault injection: clients that abort at every stage of an exchange. Nothing
// they held may stay held: slots, upstream connections, file descriptors.

#include <catch2/catch.hpp>

#include <dirent.h>
#include <sys/socket.h>

#include "support.hpp"

using namespace tollgate;
using namespace tollgate::test;

namespace {

std::size_t open_fds() {
    std::size_t n = 0;
    if (DIR* dir = ::opendir("/proc/self/fd")) {
        while (::readdir(dir) != nullptr) {
            ++n;
        }
        ::closedir(dir);
    }
    return n;
}

enum class stage { connected, mid_header, mid_body, awaiting_upstream, mid_response };

// One client that gets as far as `at`, then goes away: with a reset when
// `rst`, otherwise with an orderly close.
void abort_at(std::uint16_t port, stage at, bool rst, test_upstream& up) {
    asio::io_context ioc;
    tcp::socket s(ioc);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    auto send = [&](std::string_view bytes) { asio::write(s, asio::buffer(bytes)); };
    switch (at) {
        case stage::connected:
            break;
        case stage::mid_header:
            send("GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Half: ");
            break;
        case stage::mid_body:
            send("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n");
            send(std::string(1000, 'b'));
            break;
        case stage::awaiting_upstream: {
            const int before = up.stats.requests.load();
            send("GET /stall HTTP/1.1\r\nHost: localhost\r\n\r\n");
            // The request has reached the upstream, which never answers.
            eventually([&] { return up.stats.requests.load() > before; });
            break;
        }
        case stage::mid_response: {
            send("GET /big?n=20000000 HTTP/1.1\r\nHost: localhost\r\n\r\n");
            char some[4096];
            asio::read(s, asio::buffer(some));
            break;
        }
    }
    if (rst) {
        s.set_option(asio::socket_base::linger(true, 0));
    }
    error_code ignored;
    s.close(ignored);
}

}  // namespace

TEST_CASE("faults: 1,000 clients aborting at every stage leave nothing held", "[faults]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.concurrency.capacity = 64;
    cfg.rate_limit.limit = 1000000;
    cfg.upstream.idle_timeout = std::chrono::milliseconds(200);  // pooled ones close soon
    running_proxy gw(cfg);
    const std::size_t baseline = open_fds();

    const stage stages[] = {stage::connected, stage::mid_header, stage::mid_body,
                            stage::awaiting_upstream, stage::mid_response};
    int aborted = 0;
    for (int i = 0; i < 200; ++i) {
        for (stage at : stages) {
            abort_at(gw.port(), at, i % 2 == 0, up);
            ++aborted;
        }
    }
    REQUIRE(aborted == 1000);

    // Everything comes back without a restart: slots, the upstream's
    // connections, client sessions, descriptors.
    auto& g = gw.srv().gw();
    CHECK(eventually([&] { return g.gauges().inflight_slots == 0; }));
    CHECK(eventually([&] { return up.stats.in_flight.load() == 0; }));
    CHECK(eventually([&] { return g.gauges().client_connections == 0; }));
    CHECK(eventually([&] { return g.gauges().upstream_connections == 0; }));
    const bool fds_back = eventually([&] { return open_fds() <= baseline; });
    INFO("fds " << open_fds() << ", baseline " << baseline);
    CHECK(fds_back);

    // And the proxy still serves.
    auto res = get(gw.port(), "/echo");
    CHECK(res.result_int() == 200);
}

TEST_CASE("faults: connections past client.max_connections are closed and counted", "[faults]") {
    test_upstream up;
    auto cfg = test_config(up.port());
    cfg.threads = 1;
    cfg.client.max_connections = 2;
    running_proxy gw(cfg);
    auto first = std::make_unique<client>(gw.port());
    client second(gw.port());
    request req{http::verb::get, "/echo", 11};
    req.set(http::field::host, "localhost");
    REQUIRE(first->send(req).result_int() == 200);
    REQUIRE(second.send(req).result_int() == 200);
    client third(gw.port());
    CHECK(third.closed_by_peer());
    CHECK(get(gw.admin_port(), "/metrics").body().find("tollgate_connections_refused_total 1\n") !=
          std::string::npos);
    // A place that frees up is taken again.
    first.reset();
    CHECK(eventually([&] {
        try {
            return get(gw.port(), "/echo").result_int() == 200;
        } catch (const std::exception&) {
            return false;
        }
    }));
}

TEST_CASE("faults: an upstream that answers with broken framing gives 502, never a hang",
          "[faults]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    // /status?code=101 is an unsolicited switch of protocols: invalid here.
    auto res = get(gw.port(), "/status?code=101");
    CHECK(res.result_int() == 502);
    CHECK(get(gw.port(), "/echo").result_int() == 200);
}

namespace {

// Sends `request` on a fresh connection and reads until the server ends it:
// what arrived, and how the connection ended (eof: a clean close; a reset;
// would_block: nothing ended it within 10 s).
std::pair<std::string, error_code> read_to_end(std::uint16_t port, std::string_view request) {
    asio::io_context ioc;
    tcp::socket s(ioc);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    timeval limit{10, 0};
    ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    asio::write(s, asio::buffer(request));
    std::string got;
    char buf[8192];
    error_code ec;
    while (!ec) {
        const std::size_t n = s.read_some(asio::buffer(buf), ec);
        got.append(buf, n);
    }
    return {got, ec};
}

}  // namespace

TEST_CASE("an upstream cut mid-body resets an HTTP/1.0 client instead of ending it cleanly",
          "[faults]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    // The 1.0 client gets the chunked body until close: only a reset tells it
    // that the body it has is not all of it.
    auto [got, ec] = read_to_end(gw.port(), "GET /reset-chunked HTTP/1.0\r\n\r\n");
    CHECK(got.rfind("HTTP/1.0 200", 0) == 0);
    CHECK(ec == asio::error::connection_reset);
    CHECK(gw.srv().gw().gauges().inflight_slots == 0);
}

TEST_CASE("a complete close-delimited response to an HTTP/1.0 client ends with a clean close",
          "[faults]") {
    test_upstream up;
    running_proxy gw(test_config(up.port()));
    for (const std::string_view target : {"/close?n=50000", "/chunked?n=50000"}) {
        INFO(target);
        auto [got, ec] = read_to_end(gw.port(), "GET " + std::string(target) + " HTTP/1.0\r\n\r\n");
        CHECK(ec == asio::error::eof);
        const auto body_at = got.find("\r\n\r\n");
        REQUIRE(body_at != std::string::npos);
        CHECK(got.rfind("HTTP/1.0 200", 0) == 0);
        CHECK(fnv1a(std::string_view(got).substr(body_at + 4)) == fnv1a(pattern_body(50000)));
    }
}
