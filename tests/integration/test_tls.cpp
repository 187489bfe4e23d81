// TLS (issue #10) over real loopback sockets: a TLS listener in front of a
// plain upstream, and https:// upstreams behind a plain listener. The
// certificates are made per test (tls_certs.hpp); the reload test runs the
// real binary.

#include <catch2/catch.hpp>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <signal.h>

#include <chrono>
#include <ctime>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <thread>
#include <utility>

#include "framing_upstream.hpp"
#include "process.hpp"
#include "support.hpp"
#include "test_clients.hpp"
#include "tls_certs.hpp"
#include "ws_upstream.hpp"

using namespace tollgate;
using namespace tollgate::test;
using namespace std::chrono_literals;

namespace {

/// A process config: a TLS listener with `cert` and `key` (files), two
/// threads, the upstream on 127.0.0.1:`upstream_port`, no access log.
std::string tls_listener_yaml(const std::string& cert, const std::string& key,
                              std::uint16_t upstream_port) {
    return "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nthreads: 2\ntls:\n"
           "  listen: 127.0.0.1:0\n  cert: \"" +
           cert + "\"\n  key: \"" + key +
           "\"\nupstream:\n  servers: [http://127.0.0.1:" + std::to_string(upstream_port) +
           "]\nlog: {access_log: false}\n";
}

request make_get(std::string_view target) {
    request req{http::verb::get, target, 11};
    req.set(http::field::host, "localhost");
    return req;
}

/// test_config plus a TLS listener on 127.0.0.1:0 with `cert`/`key`.
config tls_listener_config(std::uint16_t upstream_port, const std::string& cert,
                           const std::string& key) {
    auto cfg = test_config(upstream_port);
    cfg.tls.listen = listen_address{"127.0.0.1", 0};
    cfg.tls.cert = cert;
    cfg.tls.key = key;
    return cfg;
}

/// `https://<host>:<port>` as an upstream server.
upstream_server https_server(std::uint16_t port, const std::string& host = "localhost") {
    upstream_server server;
    server.scheme = "https";
    server.host = host;
    server.port = port;
    server.url = "https://" + host + ":" + std::to_string(port);
    return server;
}

/// test_config with the single upstream https://<host>:<port>.
config https_upstream_config(std::uint16_t port, const std::string& host = "localhost") {
    auto cfg = test_config(port);
    cfg.upstream.servers = {https_server(port, host)};
    return cfg;
}

/// A loopback listener that never accepts: the kernel completes the TCP
/// handshake (the accept queue has room), but no ClientHello is answered.
struct silent_listener {
    asio::io_context ioc;
    tcp::acceptor acceptor{ioc};

    silent_listener() {
        acceptor.open(tcp::v4());
        acceptor.bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
        acceptor.listen(16);
    }
    std::uint16_t port() const { return acceptor.local_endpoint().port(); }
};

/// Whether the Prometheus text `metrics` has the sample line `sample`.
bool has_sample(const std::string& metrics, const std::string& sample) {
    return metrics.find(sample + "\n") != std::string::npos;
}

/// A blocking OpenSSL client on its own socket. Unlike tls_client (Asio's
/// engine), leave() sends close_notify and the FIN without waiting for the
/// server's close_notify, as curl and Python's unwrap() do. Reads give up
/// after 10 s (SO_RCVTIMEO), so a server that never answers fails the test.
class openssl_client {
public:
    openssl_client(std::uint16_t port, ssl::context& ctx) : socket_(ioc_) {
        socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
        timeval limit{10, 0};
        setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
        ssl_ = SSL_new(ctx.native_handle());
        SSL_set_fd(ssl_, socket_.native_handle());
        SSL_set_tlsext_host_name(ssl_, "localhost");
        if (SSL_connect(ssl_) != 1) {
            SSL_free(ssl_);
            throw std::runtime_error("TLS handshake failed");
        }
    }
    ~openssl_client() { SSL_free(ssl_); }
    openssl_client(const openssl_client&) = delete;
    openssl_client& operator=(const openssl_client&) = delete;

    void write(std::string_view bytes) {
        if (SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size())) !=
            static_cast<int>(bytes.size())) {
            throw std::runtime_error("TLS write failed");
        }
    }
    /// Reads one response (Content-Length or chunked).
    response read() {
        http::response_parser<http::string_body> parser;
        parser.eager(true);
        while (true) {
            error_code ec;
            const std::size_t used = pending_.empty() ? 0 : parser.put(asio::buffer(pending_), ec);
            pending_.erase(0, used);
            if (parser.is_done()) {
                return parser.release();
            }
            if (ec && ec != http::error::need_more) {
                throw boost::system::system_error(ec, "TLS client parse");
            }
            char buf[4096];
            const int n = SSL_read(ssl_, buf, sizeof buf);
            if (n <= 0) {
                throw std::runtime_error("TLS read failed");
            }
            pending_.append(buf, static_cast<std::size_t>(n));
        }
    }
    /// Reads to the end of the connection, keeping what it reads for read();
    /// returns how it ended: SSL_ERROR_ZERO_RETURN for a close_notify,
    /// SSL_ERROR_SSL or SSL_ERROR_SYSCALL for a TCP close without one.
    int read_to_end() {
        char buf[4096];
        while (true) {
            const int n = SSL_read(ssl_, buf, sizeof buf);
            if (n <= 0) {
                return SSL_get_error(ssl_, n);
            }
            pending_.append(buf, static_cast<std::size_t>(n));
        }
    }
    /// What read_to_end() kept that read() did not use.
    std::string take_pending() { return std::exchange(pending_, {}); }
    /// close_notify, then the FIN.
    void leave() {
        SSL_shutdown(ssl_);
        error_code ignored;
        socket_.shutdown(tcp::socket::shutdown_both, ignored);
        socket_.close(ignored);
    }

private:
    asio::io_context ioc_;
    tcp::socket socket_;
    SSL* ssl_ = nullptr;
    std::string pending_;
};

std::string raw_get(std::string_view target) {
    return "GET " + std::string(target) + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
}

/// A date of the PEM certificate `pem` (`X509_get0_notAfter` or
/// `..._notBefore`), as tollgate's warnings write it: `2026-11-24 19:05:06Z`.
std::string certificate_date(const std::string& pem, const ASN1_TIME* (*which)(const X509*)) {
    bio_ptr in(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    x509_ptr cert(PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr));
    std::tm tm{};
    REQUIRE(cert);
    REQUIRE(ASN1_TIME_to_tm(which(cert.get()), &tm) == 1);
    char text[32];
    REQUIRE(std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%SZ", &tm) > 0);
    return text;
}

/// A TLS client whose /hold request the upstream is holding.
struct tls_client_holding {
    tls_certs certs;
    test_upstream up;
    running_proxy gw{tls_listener_config(up.port(), certs.cert_file, certs.key_file)};
    ssl::context ctx = client_tls_context(certs.ca_file);
    openssl_client c{gw.tls_port(), ctx};

    tls_client_holding() {
        c.write(raw_get("/hold"));
        REQUIRE(up.wait_in_flight(1));
    }
};

}  // namespace

TEST_CASE("tls: an HTTPS client is proxied to a plain upstream with X-Forwarded-Proto: https",
          "[tls]") {
    tls_certs certs;
    test_upstream up;
    running_proxy gw(tls_listener_config(up.port(), certs.cert_file, certs.key_file));
    auto ctx = client_tls_context(certs.ca_file);
    tls_client c(gw.tls_port(), ctx);
    CHECK(c.peer_serial() == tls_certs::first_serial);
    CHECK(c.alpn() == "http/1.1");
    auto res = c.send(make_get("/echo?tls=1"));
    REQUIRE(res.result_int() == 200);
    auto body = nlohmann::json::parse(res.body());
    CHECK(body["target"] == "/echo?tls=1");
    CHECK(body["headers"]["x-forwarded-proto"] == "https");
    CHECK(body["headers"]["x-forwarded-for"] == "127.0.0.1");
    CHECK(res["X-RateLimit-Remaining"] == "599");
}

TEST_CASE("tls: the plain and the TLS listener serve side by side", "[tls]") {
    tls_certs certs;
    test_upstream up;
    running_proxy gw(tls_listener_config(up.port(), certs.cert_file, certs.key_file));
    REQUIRE(gw.port() != gw.tls_port());
    auto plain = get(gw.port(), "/echo");
    REQUIRE(plain.result_int() == 200);
    CHECK(nlohmann::json::parse(plain.body())["headers"]["x-forwarded-proto"] == "http");
    auto ctx = client_tls_context(certs.ca_file);
    tls_client secure(gw.tls_port(), ctx);
    auto res = secure.send(make_get("/echo"));
    REQUIRE(res.result_int() == 200);
    CHECK(nlohmann::json::parse(res.body())["headers"]["x-forwarded-proto"] == "https");
    // Each port speaks only its own protocol.
    CHECK(tls_handshake_error(gw.port(), ctx));
    raw_connection cleartext(gw.tls_port());
    cleartext.write("GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n");
    CHECK(cleartext.wait_closed(5s));
    CHECK(up.stats.requests == 2);
}

TEST_CASE("tls: keep-alive serves many requests on one TLS connection", "[tls]") {
    tls_certs certs;
    test_upstream up;
    running_proxy gw(tls_listener_config(up.port(), certs.cert_file, certs.key_file));
    auto ctx = client_tls_context(certs.ca_file);
    tls_client c(gw.tls_port(), ctx);
    for (int i = 0; i < 10; ++i) {
        auto req = make_get("/big?n=" + std::to_string(1000 * (i + 1)));
        auto res = c.send(std::move(req));
        REQUIRE(res.result_int() == 200);
        CHECK(res.keep_alive());
        CHECK(fnv1a(res.body()) == fnv1a(pattern_body(1000 * (i + 1))));
    }
    // A body larger than a TLS record (16 KiB) both ways, on the same connection.
    const std::string body = pattern_body(3 * 1024 * 1024 + 5);
    request post{http::verb::post, "/echo?echo=1", 11};
    post.set(http::field::host, "localhost");
    post.body() = body;
    post.prepare_payload();
    auto res = c.send(std::move(post));
    REQUIRE(res.result_int() == 200);
    CHECK(res["X-Body-Fnv"] == std::to_string(fnv1a(body)));
    CHECK(fnv1a(res.body()) == fnv1a(body));
    CHECK(up.stats.requests == 11);
}

TEST_CASE("tls: min_version 1.3 refuses a client that stops at TLS 1.2", "[tls]") {
    tls_certs certs;
    test_upstream up;
    auto cfg = tls_listener_config(up.port(), certs.cert_file, certs.key_file);
    cfg.tls.min_version = "1.3";
    running_proxy gw(cfg);
    auto tls12_only = client_tls_context(certs.ca_file, TLS1_2_VERSION);
    CHECK(tls_handshake_error(gw.tls_port(), tls12_only));
    auto modern = client_tls_context(certs.ca_file);
    tls_client c(gw.tls_port(), modern);
    CHECK(c.protocol_version() == TLS1_3_VERSION);
    CHECK(c.send(make_get("/echo")).result_int() == 200);
    CHECK(up.stats.requests == 1);
}

TEST_CASE("tls: the default min_version 1.2 accepts a TLS 1.2 client", "[tls]") {
    tls_certs certs;
    test_upstream up;
    running_proxy gw(tls_listener_config(up.port(), certs.cert_file, certs.key_file));
    auto tls12_only = client_tls_context(certs.ca_file, TLS1_2_VERSION);
    tls_client c(gw.tls_port(), tls12_only);
    CHECK(c.protocol_version() == TLS1_2_VERSION);
    CHECK(c.send(make_get("/echo")).result_int() == 200);
}

TEST_CASE("tls: a client that never completes the handshake is closed after header_timeout",
          "[tls][timeouts]") {
    tls_certs certs;
    test_upstream up;
    auto cfg = tls_listener_config(up.port(), certs.cert_file, certs.key_file);
    cfg.client.header_timeout = 300ms;
    running_proxy gw(cfg);
    // Timed from before the connects: the handshake clock cannot start earlier.
    const auto start = std::chrono::steady_clock::now();
    raw_connection silent(gw.tls_port());
    // The first bytes of a ClientHello record, then nothing.
    raw_connection partial(gw.tls_port());
    partial.write(std::string("\x16\x03\x01\x02\x00\x01\x00\x01", 8));
    CHECK(silent.wait_closed(5s));
    CHECK(partial.wait_closed(5s));
    const auto elapsed = std::chrono::steady_clock::now() - start;
    CHECK(elapsed >= 280ms);
    CHECK(elapsed < 3s);
    // Neither one kept the listener from serving others.
    auto ctx = client_tls_context(certs.ca_file);
    tls_client c(gw.tls_port(), ctx);
    CHECK(c.send(make_get("/echo")).result_int() == 200);
    CHECK(up.stats.requests == 1);
}

TEST_CASE("tls: a reload hands new connections the new certificate, old ones keep working",
          "[tls][reload]") {
    tls_certs certs;
    test_upstream up;
    const auto [cert, key] = certs.write("live", certs.first());
    auto cfg = tls_listener_config(up.port(), cert, key);
    running_proxy gw(cfg);
    auto ctx = client_tls_context(certs.ca_file);
    tls_client old(gw.tls_port(), ctx);
    REQUIRE(old.peer_serial() == tls_certs::first_serial);
    REQUIRE(old.send(make_get("/echo")).result_int() == 200);

    certs.write("live", certs.second());
    gw.srv().reload(std::make_shared<const config>(cfg));

    tls_client fresh(gw.tls_port(), ctx);
    CHECK(fresh.peer_serial() == tls_certs::second_serial);
    CHECK(fresh.peer_common_name() == tls_certs::second_cn);
    CHECK(fresh.send(make_get("/echo")).result_int() == 200);
    auto res = old.send(make_get("/echo"));
    CHECK(res.result_int() == 200);
    CHECK(old.peer_serial() == tls_certs::first_serial);
}

TEST_CASE("tls: a reload without tls: keeps the TLS listener serving until a restart",
          "[tls][reload]") {
    // Listeners change only on restart; a TLS port must never fall back to
    // plaintext because the reloaded file dropped its `tls:` section.
    tls_certs certs;
    test_upstream up;
    auto cfg = tls_listener_config(up.port(), certs.cert_file, certs.key_file);
    running_proxy gw(cfg);
    auto without_tls = cfg;
    without_tls.tls = tls_config{};
    gw.srv().reload(std::make_shared<const config>(without_tls));

    auto ctx = client_tls_context(certs.ca_file);
    tls_client fresh(gw.tls_port(), ctx);
    CHECK(fresh.peer_serial() == tls_certs::first_serial);
    CHECK(fresh.send(make_get("/echo")).result_int() == 200);
}

TEST_CASE("tls: an https:// upstream verified with ca_file gets SNI from the URL host",
          "[tls][upstream]") {
    tls_certs certs;
    https_upstream up(certs.cert_file, certs.key_file);
    auto cfg = https_upstream_config(up.port());
    cfg.upstream.ca_file = certs.ca_file;
    cfg.threads = 1;
    running_proxy gw(cfg);
    client c(gw.port());
    for (int i = 0; i < 5; ++i) {
        auto res = c.send(make_get("/echo?i=" + std::to_string(i)));
        REQUIRE(res.result_int() == 200);
        auto body = nlohmann::json::parse(res.body());
        CHECK(body["target"] == "/echo?i=" + std::to_string(i));
        CHECK(body["headers"]["x-forwarded-proto"] == "http");
        CHECK(body["headers"]["host"] == "localhost");
    }
    CHECK(up.last_sni() == "localhost");
    CHECK(up.requests == 5);
    CHECK(up.failed_handshakes == 0);
    // The TLS connection to the upstream is pooled like a plain one.
    CHECK(up.handshakes == 1);
}

TEST_CASE("tls: an https:// upstream that does not verify gives 502", "[tls][upstream]") {
    tls_certs certs;
    SECTION("signed by a CA other than ca_file") {
        https_upstream up(certs.cert_file, certs.key_file);
        auto cfg = https_upstream_config(up.port());
        cfg.upstream.ca_file = certs.other_ca_file;
        running_proxy gw(cfg);
        auto res = get(gw.port(), "/echo");
        CHECK(res.result_int() == 502);
        CHECK(res[http::field::content_type] == "application/json");
        CHECK(nlohmann::json::parse(res.body()).contains("error"));
        CHECK(eventually([&] { return up.failed_handshakes.load() >= 1; }));
        CHECK(up.requests == 0);
        CHECK(up.last_sni() == "localhost");
        // Counted as a TLS failure, not as a server that refused the connection.
        const auto metrics = get(gw.admin_port(), "/metrics").body();
        CHECK(metrics.find("tollgate_upstream_errors_total{kind=\"tls\"} 1") != std::string::npos);
        CHECK(metrics.find("tollgate_upstream_errors_total{kind=\"connect_refused\"} 0") !=
              std::string::npos);
    }
    SECTION("unknown to the system trust store (no ca_file)") {
        https_upstream up(certs.cert_file, certs.key_file);
        running_proxy gw(https_upstream_config(up.port()));
        CHECK(get(gw.port(), "/echo").result_int() == 502);
        CHECK(up.requests == 0);
    }
    SECTION("signed by ca_file, but for another host name") {
        auto elsewhere = certs.ca().issue("elsewhere", 2001, "DNS:elsewhere.example");
        https_upstream up(certs.write("elsewhere", elsewhere));
        auto cfg = https_upstream_config(up.port());
        cfg.upstream.ca_file = certs.ca_file;
        running_proxy gw(cfg);
        CHECK(get(gw.port(), "/echo").result_int() == 502);
        CHECK(up.requests == 0);
    }
}

TEST_CASE("tls: an https:// upstream that does not verify is named in one warning with the reason",
          "[tls][upstream]") {
    tls_certs certs;
    // Four requests, four failed handshakes: the stderr they leave.
    const auto log_of = [](const config& cfg) {
        captured_stderr log;
        {
            running_proxy gw(cfg);
            for (int i = 0; i < 4; ++i) {
                CHECK(get(gw.port(), "/echo").result_int() == 502);
            }
        }
        return log.text();
    };
    const auto check_one_warning = [](const std::string& text, const config& cfg,
                                      const std::string& reason) {
        INFO(text);
        const std::string named =
            "upstream " + cfg.upstream.servers.front().url + ": TLS handshake failed: ";
        const auto first = text.find(named);
        REQUIRE(first != std::string::npos);
        CHECK(text.substr(first + named.size(), reason.size()) == reason);
        // Each request failed alike: the interval keeps that to one line.
        CHECK(text.find(named, first + 1) == std::string::npos);
    };
    SECTION("signed by a CA other than ca_file") {
        https_upstream up(certs.cert_file, certs.key_file);
        auto cfg = https_upstream_config(up.port());
        cfg.upstream.ca_file = certs.other_ca_file;
        check_one_warning(log_of(cfg), cfg,
                          "certificate verify failed: unable to get local issuer certificate");
    }
    SECTION("signed by ca_file, but for another host name") {
        auto elsewhere = certs.ca().issue("elsewhere", 2003, "DNS:elsewhere.example");
        https_upstream up(certs.write("elsewhere", elsewhere));
        auto cfg = https_upstream_config(up.port());
        cfg.upstream.ca_file = certs.ca_file;
        check_one_warning(log_of(cfg), cfg, "certificate verify failed: hostname mismatch");
    }
    SECTION("expired") {
        auto expired = certs.ca().issue("expired", 2004, "DNS:localhost",
                                        validity{-7L * 24 * 3600, -24 * 3600});
        https_upstream up(certs.write("expired", expired));
        auto cfg = https_upstream_config(up.port());
        cfg.upstream.ca_file = certs.ca_file;
        check_one_warning(log_of(cfg), cfg, "certificate verify failed: certificate has expired");
    }
    SECTION("addressed by IP, with a certificate for its name only") {
        auto named_only = certs.ca().issue("named only", 2005, "DNS:localhost");
        https_upstream up(certs.write("named", named_only));
        auto cfg = https_upstream_config(up.port(), "127.0.0.1");
        cfg.upstream.ca_file = certs.ca_file;
        check_one_warning(log_of(cfg), cfg, "certificate verify failed: IP address mismatch");
    }
}

TEST_CASE("tls: an https:// server whose handshake fails is skipped for the next one, and rests",
          "[tls][upstream]") {
    tls_certs certs;
    https_upstream good(certs.cert_file, certs.key_file);
    // Before anything is sent, as for a refused connect: each case is one
    // nginx's proxy_next_upstream error would move on from too.
    const auto check_failover = [&](const upstream_server& bad, const std::string& warning,
                                    const std::function<int()>& bad_requests) {
        auto cfg = test_config(good.port());
        cfg.upstream.ca_file = certs.ca_file;
        // The bad server first: the group's first turn is its.
        cfg.upstream.servers = {bad, https_server(good.port())};
        const auto [metrics, text] = run_logged(cfg, 6);
        CHECK(good.requests == 6);
        CHECK(bad_requests() == 0);
        // The first request met the bad server and moved on; it then rested
        // from its turns, so no other request tried it; none failed.
        CHECK(has_sample(metrics, "tollgate_upstream_connect_failovers_total 1"));
        CHECK(has_sample(metrics, "tollgate_upstream_errors_total{kind=\"tls\"} 0"));
        // The handshake's warning names the server and the reason, once.
        INFO(text);
        const std::string named = "upstream " + bad.url + ": TLS handshake failed: " + warning;
        const auto first = text.find(named);
        CHECK(first != std::string::npos);
        CHECK(text.find(named, first + 1) == std::string::npos);
        // Not said to have refused a connection: it did not.
        CHECK(text.find("upstream " + bad.url + " ") == std::string::npos);
    };
    SECTION("signed by ca_file, but for another host name") {
        auto elsewhere = certs.ca().issue("elsewhere", 2011, "DNS:elsewhere.example");
        https_upstream bad(certs.write("elsewhere", elsewhere));
        check_failover(https_server(bad.port()), "certificate verify failed: hostname mismatch",
                       [&] { return bad.requests.load(); });
        CHECK(eventually([&] { return bad.failed_handshakes >= 1; }));
        CHECK(bad.failed_handshakes == 1);
    }
    SECTION("expired") {
        auto expired = certs.ca().issue("expired", 2012, "DNS:localhost",
                                        validity{-7L * 24 * 3600, -24 * 3600});
        https_upstream bad(certs.write("expired", expired));
        check_failover(https_server(bad.port()),
                       "certificate verify failed: certificate has expired",
                       [&] { return bad.requests.load(); });
        CHECK(eventually([&] { return bad.failed_handshakes >= 1; }));
        CHECK(bad.failed_handshakes == 1);
    }
    SECTION("a server that speaks plain HTTP") {
        test_upstream plain;
        check_failover(https_server(plain.port(), "127.0.0.1"), "",
                       [&] { return plain.stats.requests.load(); });
    }
}

TEST_CASE("tls: when every https:// server of a group fails its handshake, the answer is 502",
          "[tls][upstream]") {
    tls_certs certs;
    auto elsewhere = certs.ca().issue("elsewhere", 2013, "DNS:elsewhere.example");
    https_upstream a(certs.write("elsewhere", elsewhere));
    https_upstream b(certs.cert_file, certs.key_file);
    auto cfg = test_config(a.port());
    cfg.upstream.ca_file = certs.other_ca_file;  // trusts neither
    cfg.upstream.servers = {https_server(a.port()), https_server(b.port())};
    running_proxy gw(cfg);
    for (int i = 0; i < 3; ++i) {
        auto res = get(gw.port(), "/echo");
        CHECK(res.result_int() == 502);
        CHECK(nlohmann::json::parse(res.body()).contains("error"));
    }
    // Each request tried both (when the whole group rests, its servers are
    // tried in turn anyway): one failover, then the last handshake's error.
    CHECK(eventually([&] { return a.failed_handshakes + b.failed_handshakes >= 6; }));
    CHECK(a.failed_handshakes == 3);
    CHECK(b.failed_handshakes == 3);
    CHECK(a.requests + b.requests == 0);
    const auto metrics = get(gw.admin_port(), "/metrics").body();
    CHECK(has_sample(metrics, "tollgate_upstream_connect_failovers_total 3"));
    CHECK(has_sample(metrics, "tollgate_upstream_errors_total{kind=\"tls\"} 3"));
}

TEST_CASE("tls: an https:// server that does not finish its handshake within connect_timeout rests",
          "[tls][upstream]") {
    tls_certs certs;
    https_upstream good(certs.cert_file, certs.key_file);
    silent_listener silent;
    auto cfg = test_config(good.port());
    cfg.threads = 1;
    cfg.upstream.ca_file = certs.ca_file;
    cfg.upstream.connect_timeout = std::chrono::milliseconds(300);
    cfg.upstream.servers = {https_server(silent.port(), "127.0.0.1"), https_server(good.port())};
    running_proxy gw(cfg);
    for (int i = 0; i < 6; ++i) {
        CHECK(get(gw.port(), "/echo").result_int() == 200);
    }
    CHECK(good.requests == 6);
    const std::string metrics = get(gw.admin_port(), "/metrics").body();
    CHECK(has_sample(metrics, "tollgate_upstream_connect_failovers_total 1"));
    CHECK(has_sample(metrics, "tollgate_upstream_errors_total{kind=\"connect_timeout\"} 0"));
}

TEST_CASE(
    "tls: when every https:// server of a group times out its handshake, a request waits "
    "for one, not all",
    "[tls][upstream]") {
    silent_listener a;
    silent_listener b;
    auto cfg = test_config(a.port());
    cfg.threads = 1;
    cfg.upstream.insecure_skip_verify = true;
    cfg.upstream.connect_timeout = std::chrono::milliseconds(300);
    cfg.upstream.servers = {https_server(a.port(), "127.0.0.1"),
                            https_server(b.port(), "127.0.0.1")};
    running_proxy gw(cfg);
    // The first request tries both (neither was known to be down); then both
    // rest, and the next ones try one and give up, as after connect timeouts.
    for (int i = 0; i < 3; ++i) {
        CHECK(get(gw.port(), "/echo").result_int() == 504);
    }
    const std::string metrics = get(gw.admin_port(), "/metrics").body();
    CHECK(has_sample(metrics, "tollgate_upstream_connect_failovers_total 1"));
    CHECK(has_sample(metrics, "tollgate_upstream_errors_total{kind=\"connect_timeout\"} 3"));
}

TEST_CASE("tls: an https:// upstream addressed by IP is verified against its IP SAN",
          "[tls][upstream]") {
    tls_certs certs;  // IP:127.0.0.1 among the leaf's names
    https_upstream up(certs.cert_file, certs.key_file);
    auto cfg = https_upstream_config(up.port(), "127.0.0.1");
    cfg.upstream.ca_file = certs.ca_file;
    running_proxy gw(cfg);
    CHECK(get(gw.port(), "/echo").result_int() == 200);
    CHECK(up.requests == 1);
    // No SNI for an address (RFC 6066 section 3).
    CHECK(up.last_sni().empty());
}

TEST_CASE("tls: insecure_skip_verify accepts an https:// upstream nobody vouches for",
          "[tls][upstream]") {
    tls_certs certs;
    // Neither trusted (no ca_file, test CA unknown to the system) nor for this name.
    auto elsewhere = certs.ca().issue("elsewhere", 2002, "DNS:elsewhere.example");
    https_upstream up(certs.write("elsewhere", elsewhere));
    auto cfg = https_upstream_config(up.port());
    cfg.upstream.insecure_skip_verify = true;
    running_proxy gw(cfg);
    auto res = get(gw.port(), "/echo");
    CHECK(res.result_int() == 200);
    CHECK(up.requests == 1);
    CHECK(up.last_sni() == "localhost");
}

TEST_CASE("tls: SIGHUP reloads cert and key, and the open connection keeps working",
          "[tls][lifecycle]") {
    tls_certs certs;
    test_upstream up;
    const auto [cert, key] = certs.write("live", certs.first());
    auto path = write_temp_file("tls-reload.yaml", tls_listener_yaml(cert, key, up.port()));
    tollgate_process p({"--config", path});
    REQUIRE(p.wait_listening());
    const auto tls_port = p.tls_port();
    REQUIRE(tls_port != 0);
    auto ctx = client_tls_context(certs.ca_file);
    tls_client old(tls_port, ctx);
    REQUIRE(old.peer_serial() == tls_certs::first_serial);
    REQUIRE(old.peer_common_name() == tls_certs::first_cn);
    auto before = old.send(make_get("/echo"));
    REQUIRE(before.result_int() == 200);
    CHECK(nlohmann::json::parse(before.body())["headers"]["x-forwarded-proto"] == "https");

    certs.write("live", certs.second());
    p.signal(SIGHUP);
    REQUIRE(p.wait_for_log("configuration reloaded"));

    tls_client fresh(tls_port, ctx);
    CHECK(fresh.peer_serial() == tls_certs::second_serial);
    CHECK(fresh.peer_common_name() == tls_certs::second_cn);
    CHECK(fresh.send(make_get("/echo")).result_int() == 200);
    auto after = old.send(make_get("/echo"));
    CHECK(after.result_int() == 200);
    CHECK(old.peer_serial() == tls_certs::first_serial);
    p.signal(SIGTERM);
    CHECK(p.wait_exit() == 0);
}

TEST_CASE("tls: --check-config loads cert and key as startup does", "[tls][lifecycle]") {
    tls_certs certs;
    const auto check = [&](const std::string& cert, const std::string& key) {
        auto path = write_temp_file("tls-check.yaml",
                                    "listen: 127.0.0.1:0\n"
                                    "upstream: {servers: [http://127.0.0.1:1]}\n"
                                    "tls:\n  listen: 127.0.0.1:0\n  cert: \"" +
                                        cert + "\"\n  key: \"" + key + "\"\n");
        return std::make_unique<tollgate_process>(
            std::vector<std::string>{"--check-config", "--config", path});
    };
    SECTION("a pair that matches is valid") {
        auto p = check(certs.cert_file, certs.key_file);
        CHECK(p->wait_exit() == 0);
        CHECK(p->stdout_text().find("configuration is valid") != std::string::npos);
        CHECK(p->stderr_text().find("clients will refuse") == std::string::npos);
    }
    SECTION("an expired certificate is valid, with a warning") {
        auto expired = certs.ca().issue("expired", 3001, "DNS:localhost",
                                        validity{-30L * 24 * 3600, -24 * 3600});
        const auto [cert, key] = certs.write("expired", expired);
        auto p = check(cert, key);
        CHECK(p->wait_exit() == 0);
        CHECK(p->stdout_text().find("configuration is valid") != std::string::npos);
        INFO(p->stderr_text());
        CHECK(p->stderr_text().find("warning: ") != std::string::npos);
        CHECK(p->stderr_text().find("tls.cert " + cert + ": the certificate expired at " +
                                    certificate_date(expired.cert, &X509_get0_notAfter) +
                                    " (notAfter): clients will refuse it") != std::string::npos);
    }
    SECTION("a certificate not valid yet is valid, with a warning") {
        auto early =
            certs.ca().issue("early", 3002, "DNS:localhost", validity{24 * 3600, 30L * 24 * 3600});
        const auto [cert, key] = certs.write("early", early);
        auto p = check(cert, key);
        CHECK(p->wait_exit() == 0);
        CHECK(p->stdout_text().find("configuration is valid") != std::string::npos);
        INFO(p->stderr_text());
        CHECK(p->stderr_text().find("tls.cert " + cert + ": the certificate is not valid before " +
                                    certificate_date(early.cert, &X509_get0_notBefore) +
                                    " (notBefore): clients will refuse it until then") !=
              std::string::npos);
    }
    SECTION("a certificate file that is not PEM") {
        auto not_pem = certs.write("not-pem.txt", "just a host name\n");
        auto p = check(not_pem, certs.key_file);
        CHECK(p->wait_exit() == 1);
        CHECK(p->stderr_text().find("tls.cert " + not_pem + ": ") != std::string::npos);
        CHECK(p->stdout_text().find("configuration is valid") == std::string::npos);
    }
    SECTION("a key file that is not PEM") {
        auto not_pem = certs.write("not-pem.txt", "just a host name\n");
        auto p = check(certs.cert_file, not_pem);
        CHECK(p->wait_exit() == 1);
        CHECK(p->stderr_text().find("tls.key " + not_pem + ": ") != std::string::npos);
    }
    SECTION("a key file that holds a certificate") {
        auto p = check(certs.cert_file, certs.cert_file);
        CHECK(p->wait_exit() == 1);
        INFO(p->stderr_text());
        CHECK(p->stderr_text().find("tls.key " + certs.cert_file + ": holds no PEM private key") !=
              std::string::npos);
    }
    SECTION("an empty key file") {
        auto empty = certs.write("empty-key.pem", "");
        auto p = check(certs.cert_file, empty);
        CHECK(p->wait_exit() == 1);
        INFO(p->stderr_text());
        CHECK(p->stderr_text().find("tls.key " + empty + ": holds no PEM private key") !=
              std::string::npos);
    }
    SECTION("a key file whose key does not decode") {
        auto damaged = certs.write(
            "damaged-key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        auto p = check(certs.cert_file, damaged);
        CHECK(p->wait_exit() == 1);
        INFO(p->stderr_text());
        CHECK(p->stderr_text().find("tls.key " + damaged + ": its private key cannot be decoded") !=
              std::string::npos);
    }
    SECTION("a key that belongs to another certificate") {
        auto p = check(certs.cert_file, certs.second_key_file);
        CHECK(p->wait_exit() == 1);
        INFO(p->stderr_text());
        // Both files named: either may be the wrong one.
        CHECK(p->stderr_text().find("tls.key " + certs.second_key_file +
                                    " does not match tls.cert " + certs.cert_file) !=
              std::string::npos);
        CHECK(p->stdout_text().find("configuration is valid") == std::string::npos);
    }
    SECTION("a chain with the server's certificate first is valid") {
        auto chain = certs.write("chain.pem", certs.first().cert + certs.ca().cert_pem());
        auto p = check(chain, certs.key_file);
        CHECK(p->wait_exit() == 0);
        CHECK(p->stdout_text().find("configuration is valid") != std::string::npos);
    }
    SECTION("a chain with the CA before the server's certificate") {
        auto chain = certs.write("chain.pem", certs.ca().cert_pem() + certs.first().cert);
        auto p = check(chain, certs.key_file);
        CHECK(p->wait_exit() == 1);
        INFO(p->stderr_text());
        // The key is right; the certificate file is at fault.
        CHECK(p->stderr_text().find("tls.cert " + chain + ": the chain is in the wrong order") !=
              std::string::npos);
        CHECK(p->stderr_text().find("tls.key " + certs.key_file + " is the key of certificate 2") !=
              std::string::npos);
    }
}

TEST_CASE(
    "tls: a listener certificate out of its validity period is warned about at start and "
    "on SIGHUP",
    "[tls][lifecycle]") {
    tls_certs certs;
    test_upstream up;
    auto early =
        certs.ca().issue("early", 3003, "DNS:localhost", validity{24 * 3600, 30L * 24 * 3600});
    auto expired =
        certs.ca().issue("expired", 3004, "DNS:localhost", validity{-30L * 24 * 3600, -24 * 3600});
    const auto [cert, key] = certs.write("live", early);
    auto path = write_temp_file("tls-dates.yaml", tls_listener_yaml(cert, key, up.port()));
    tollgate_process p({"--config", path});
    // It starts: an operator may run such a certificate knowingly.
    REQUIRE(p.wait_listening());
    CHECK(p.stderr_text().find("tls.cert " + cert + ": the certificate is not valid before " +
                               certificate_date(early.cert, &X509_get0_notBefore) +
                               " (notBefore): clients will refuse it until then") !=
          std::string::npos);

    certs.write("live", expired);
    p.signal(SIGHUP);
    CHECK(p.wait_for_log("tls.cert " + cert + ": the certificate expired at " +
                         certificate_date(expired.cert, &X509_get0_notAfter) +
                         " (notAfter): clients will refuse it"));
    CHECK(p.stderr_text().find("configuration reloaded") != std::string::npos);
    p.signal(SIGTERM);
    CHECK(p.wait_exit() == 0);
}

TEST_CASE("tls: a client that sends close_notify while the upstream works gets its slot back",
          "[tls][slots]") {
    tls_client_holding t;
    auto& [certs, up, gw, ctx, c] = t;
    REQUIRE(gw.srv().gw().gauges().inflight_slots == 1);
    c.leave();
    // Noticed by the watch (a worker tick or two), not when the upstream answers.
    CHECK(eventually([&] { return gw.srv().gw().gauges().inflight_slots == 0; }, 3000ms));
    CHECK(up.stats.in_flight == 1);
    up.release_held();
}

TEST_CASE("tls: a client that sends close_notify while queued for a slot leaves the queue",
          "[tls][slots]") {
    tls_certs certs;
    test_upstream up;
    auto cfg = tls_listener_config(up.port(), certs.cert_file, certs.key_file);
    cfg.concurrency.capacity = 1;
    cfg.concurrency.queue_timeout = 8000ms;
    running_proxy gw(cfg);
    client held(gw.port());
    held.write_raw(raw_get("/hold"));
    REQUIRE(up.wait_in_flight(1));
    auto ctx = client_tls_context(certs.ca_file);
    openssl_client queued(gw.tls_port(), ctx);
    queued.write(raw_get("/echo"));
    auto& slots = *gw.srv().gw().current()->slots;
    REQUIRE(eventually([&] { return slots.queued() == 1; }));
    queued.leave();
    CHECK(eventually([&] { return slots.queued() == 0; }, 3000ms));
    CHECK(gw.srv().gw().gauges().inflight_slots == 1);
    up.release_held();
    CHECK(held.read().result_int() == 200);
    CHECK(eventually([&] { return gw.srv().gw().gauges().inflight_slots == 0; }));
    CHECK(up.stats.requests == 1);  // the one that left was never forwarded
}

TEST_CASE("tls: a request pipelined while the upstream works is served after the first",
          "[tls][slots]") {
    tls_client_holding t;
    auto& [certs, up, gw, ctx, c] = t;
    // Found by the watch, read through TLS, and kept as the next request.
    c.write(raw_get("/echo?second=1"));
    up.release_held();
    CHECK(c.read().result_int() == 200);
    auto second = c.read();
    CHECK(second.result_int() == 200);
    CHECK(nlohmann::json::parse(second.body())["target"] == "/echo?second=1");
    CHECK(up.stats.requests == 2);
}

TEST_CASE("tls: a response that ends the connection is followed by close_notify", "[tls]") {
    tls_certs certs;
    test_upstream up;
    running_proxy gw(tls_listener_config(up.port(), certs.cert_file, certs.key_file));
    auto ctx = client_tls_context(certs.ca_file);
    SECTION("the client asked to close") {
        openssl_client c(gw.tls_port(), ctx);
        c.write("GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        CHECK(c.read_to_end() == SSL_ERROR_ZERO_RETURN);
        CHECK(c.read().result_int() == 200);
    }
    SECTION("an HTTP/1.0 client, sent a close-delimited body") {
        openssl_client c(gw.tls_port(), ctx);
        c.write("GET /close?n=100000 HTTP/1.0\r\nHost: localhost\r\n\r\n");
        CHECK(c.read_to_end() == SSL_ERROR_ZERO_RETURN);
        const std::string all = c.take_pending();
        const auto body_at = all.find("\r\n\r\n");
        REQUIRE(body_at != std::string::npos);
        CHECK(all.substr(0, all.find("\r\n")) == "HTTP/1.0 200 OK");
        CHECK(all.find("\r\nContent-Length:") == std::string::npos);
        CHECK(all.substr(body_at + 4) == pattern_body(100000));
    }
    SECTION("a malformed request, answered 400") {
        openssl_client c(gw.tls_port(), ctx);
        c.write("GET /echo HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n");
        CHECK(c.read_to_end() == SSL_ERROR_ZERO_RETURN);
        CHECK(c.read().result_int() == 400);
    }
}

namespace {

/// Upgrades `c` to a WebSocket tunnel, then reads until tollgate ends the
/// connection, which must be with a close_notify; returns what was read.
std::string upgrade_until_tollgate_ends(openssl_client& c) {
    c.write(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    CHECK(c.read_to_end() == SSL_ERROR_ZERO_RETURN);
    return c.take_pending();
}

/// Polls /metrics until no tunnel is open (at most 10 s).
bool tunnels_close(std::uint16_t admin_port) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (scrape(admin_port, "tollgate_tunnels_open") != 0) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
}

}  // namespace

TEST_CASE("tls: a tunnel tollgate ends is followed by close_notify", "[tls][websocket]") {
    // Without one, a TLS client cannot tell the tunnel's end from a cut
    // (OpenSSL 3: unexpected EOF), which protocols without close frames of
    // their own rely on. Ended by the upstream, or idle past its timeout.
    const bool upstream_ends = GENERATE(true, false);
    INFO((upstream_ends ? "the upstream ends" : "idle past client.tunnel_idle_timeout"));
    tls_certs certs;
    framing::scripted_upstream up(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        "last words",
        upstream_ends);
    auto cfg = tls_listener_config(up.port(), certs.cert_file, certs.key_file);
    cfg.client.tunnel_idle_timeout = std::chrono::milliseconds(300);
    running_proxy gw(cfg);
    auto ctx = client_tls_context(certs.ca_file);
    openssl_client c(gw.tls_port(), ctx);
    const std::string all = upgrade_until_tollgate_ends(c);
    CHECK(all.substr(0, all.find("\r\n")) == "HTTP/1.1 101 Switching Protocols");
    CHECK(all.substr(all.find("\r\n\r\n") + 4) == "last words");
    c.leave();
    CHECK(tunnels_close(gw.admin_port()));
}

TEST_CASE("tls: a tunnel to an https:// upstream that idles out ends cleanly", "[tls][websocket]") {
    // The upstream's TLS read is still pending when the tunnel ends: its
    // stream must outlive it (ASan saw it freed under the read before).
    tls_certs certs;
    https_upstream up(certs.cert_file, certs.key_file);
    auto cfg = tls_listener_config(up.port(), certs.cert_file, certs.key_file);
    cfg.upstream.servers = https_upstream_config(up.port()).upstream.servers;
    cfg.upstream.ca_file = certs.ca_file;
    cfg.client.tunnel_idle_timeout = std::chrono::milliseconds(300);
    running_proxy gw(cfg);
    auto ctx = client_tls_context(certs.ca_file);
    openssl_client c(gw.tls_port(), ctx);
    const std::string all = upgrade_until_tollgate_ends(c);
    CHECK(all.substr(0, all.find("\r\n")) == "HTTP/1.1 101 Switching Protocols");
    c.leave();
    CHECK(tunnels_close(gw.admin_port()));
    CHECK(get(gw.port(), "/echo").result_int() == 200);
}

TEST_CASE("tls: a client still sending a body refused as too large gets its whole 413", "[tls]") {
    tls_certs certs;
    test_upstream up;
    auto cfg = tls_listener_config(up.port(), certs.cert_file, certs.key_file);
    cfg.client.max_body_bytes = 1000;
    running_proxy gw(cfg);
    auto ctx = client_tls_context(certs.ca_file);
    openssl_client c(gw.tls_port(), ctx);
    const std::size_t body = 256 * 1024;
    c.write("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: " + std::to_string(body) +
            "\r\n\r\n");
    // Written after the 413 is on its way: the lingering close reads it
    // (through the TLS shutdown, then from the TCP layer) instead of
    // resetting the connection under the reply.
    const std::string chunk(16 * 1024, 'x');
    for (std::size_t sent = 0; sent < body; sent += chunk.size()) {
        c.write(chunk);
    }
    auto res = c.read();
    CHECK(res.result_int() == 413);
    CHECK_FALSE(res.keep_alive());
    CHECK(up.stats.requests == 0);
}

TEST_CASE("tls: a plain HTTP request on the TLS port gets a plain-text 400", "[tls]") {
    tls_certs certs;
    test_upstream up;
    running_proxy gw(tls_listener_config(up.port(), certs.cert_file, certs.key_file));
    client c(gw.tls_port());
    c.write_raw(raw_get("/echo"));
    auto res = c.read();
    CHECK(res.result_int() == 400);
    CHECK(res[http::field::content_type] == "application/json");
    CHECK(nlohmann::json::parse(res.body())["error"] == "plain HTTP request sent to the TLS port");
    CHECK_FALSE(res.keep_alive());
    CHECK(c.closed_by_peer());
    CHECK(up.stats.requests == 0);
    // Counted as a failed handshake, which it is.
    CHECK(get(gw.admin_port(), "/metrics").body().find("tollgate_tls_handshake_failures_total 1") !=
          std::string::npos);
    // The listener still speaks TLS to the next client.
    auto ctx = client_tls_context(certs.ca_file);
    tls_client secure(gw.tls_port(), ctx);
    CHECK(secure.send(make_get("/echo")).result_int() == 200);
}

TEST_CASE("tls: ALPN http/1.0 is accepted, and http/1.1 preferred when both are offered", "[tls]") {
    tls_certs certs;
    test_upstream up;
    running_proxy gw(tls_listener_config(up.port(), certs.cert_file, certs.key_file));
    auto ctx = client_tls_context(certs.ca_file);
    SECTION("http/1.0 alone") {
        static const unsigned char http10[] = "\x08http/1.0";
        SSL_CTX_set_alpn_protos(ctx.native_handle(), http10, sizeof http10 - 1);
        tls_client c(gw.tls_port(), ctx);
        CHECK(c.alpn() == "http/1.0");
        request req{http::verb::get, "/echo?v=10", 10};
        auto res = c.send(std::move(req));
        CHECK(res.result_int() == 200);
        CHECK(res.version() == 10);
        CHECK(nlohmann::json::parse(res.body())["target"] == "/echo?v=10");
    }
    SECTION("http/1.0 first, then http/1.1") {
        static const unsigned char both[] = "\x08http/1.0\x08http/1.1";
        SSL_CTX_set_alpn_protos(ctx.native_handle(), both, sizeof both - 1);
        tls_client c(gw.tls_port(), ctx);
        CHECK(c.alpn() == "http/1.1");
        CHECK(c.send(make_get("/echo")).result_int() == 200);
    }
    SECTION("neither") {
        static const unsigned char h2[] = "\x02h2";
        SSL_CTX_set_alpn_protos(ctx.native_handle(), h2, sizeof h2 - 1);
        CHECK(tls_handshake_error(gw.tls_port(), ctx));
    }
}
