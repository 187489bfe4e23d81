// The support code of the WebSocket and TLS tests, checked on its own
// (no tollgate in between): if these fail, a failure in test_websocket.cpp
// or test_tls.cpp says nothing about the proxy.

#include <catch2/catch.hpp>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <filesystem>

#include "test_clients.hpp"
#include "tls_certs.hpp"
#include "ws_upstream.hpp"

using namespace tollgate;
using namespace tollgate::test;

namespace {

x509_ptr parse_pem(const std::string& pem) {
    BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    x509_ptr cert(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr));
    BIO_free(bio);
    return cert;
}

/// X509_verify_cert of `leaf` against the single trust anchor `ca`, for
/// host "localhost"; the X509_V_* result.
int verify(const std::string& leaf_pem, const std::string& ca_pem) {
    auto leaf = parse_pem(leaf_pem);
    auto ca = parse_pem(ca_pem);
    X509_STORE* store = X509_STORE_new();
    X509_STORE_add_cert(store, ca.get());
    X509_STORE_CTX* ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, store, leaf.get(), nullptr);
    X509_VERIFY_PARAM_set1_host(X509_STORE_CTX_get0_param(ctx), "localhost", 0);
    X509_VERIFY_PARAM_set_purpose(X509_STORE_CTX_get0_param(ctx), X509_PURPOSE_SSL_SERVER);
    int result = X509_verify_cert(ctx) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return result;
}

request make_get(std::string_view target) {
    request req{http::verb::get, target, 11};
    req.set(http::field::host, "localhost");
    return req;
}

}  // namespace

TEST_CASE("test certificates: leaves verify against their CA only, and the files go away",
          "[support][tls]") {
    std::filesystem::path dir;
    {
        tls_certs certs;
        dir = certs.dir();
        for (const auto& file : {certs.ca_file, certs.other_ca_file, certs.cert_file,
                                 certs.key_file, certs.second_cert_file, certs.second_key_file}) {
            INFO(file);
            CHECK(std::filesystem::file_size(file) > 100);
        }
        CHECK(verify(certs.first().cert, certs.ca().cert_pem()) == X509_V_OK);
        CHECK(verify(certs.second().cert, certs.ca().cert_pem()) == X509_V_OK);
        test_ca unrelated("yet another CA");
        CHECK(verify(certs.first().cert, unrelated.cert_pem()) ==
              X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);

        auto first = parse_pem(certs.first().cert);
        auto second = parse_pem(certs.second().cert);
        CHECK(certificate_serial(first.get()) == tls_certs::first_serial);
        CHECK(certificate_common_name(first.get()) == tls_certs::first_cn);
        CHECK(certificate_serial(second.get()) == tls_certs::second_serial);
        CHECK(certificate_common_name(second.get()) == tls_certs::second_cn);
        CHECK(X509_get_version(first.get()) == X509_VERSION_3);
        CHECK(X509_check_host(first.get(), "localhost", 0, 0, nullptr) == 1);
        CHECK(X509_check_ip_asc(first.get(), "127.0.0.1", 0) == 1);
        CHECK(X509_check_host(first.get(), "example.com", 0, 0, nullptr) == 0);
        CHECK(certs.first().key.find("BEGIN PRIVATE KEY") != std::string::npos);
        CHECK(std::filesystem::exists(dir));
    }
    CHECK_FALSE(std::filesystem::exists(dir));
}

TEST_CASE("https_upstream: TLS with SNI, header echo and keep-alive", "[support][tls]") {
    tls_certs certs;
    https_upstream up(certs.cert_file, certs.key_file);
    auto ctx = client_tls_context(certs.ca_file);
    tls_client c(up.port(), ctx);
    CHECK(c.peer_serial() == tls_certs::first_serial);
    CHECK(c.peer_common_name() == tls_certs::first_cn);
    CHECK(up.last_sni() == "localhost");
    for (int i = 0; i < 3; ++i) {
        auto req = make_get("/echo?i=" + std::to_string(i));
        req.set("X-Probe", "p" + std::to_string(i));
        auto res = c.send(std::move(req));
        REQUIRE(res.result_int() == 200);
        CHECK(res[http::field::server] == "https-upstream");
        auto body = nlohmann::json::parse(res.body());
        CHECK(body["target"] == "/echo?i=" + std::to_string(i));
        CHECK(body["headers"]["x-probe"] == "p" + std::to_string(i));
    }
    CHECK(up.requests == 3);
    CHECK(up.connections == 1);
    CHECK(up.last_headers()["x-probe"] == "p2");

    // A client trusting another CA refuses the upstream's certificate.
    auto wrong = client_tls_context(certs.other_ca_file);
    auto ec = tls_handshake_error(up.port(), wrong);
    CHECK(ec);
    CHECK(eventually([&] { return up.failed_handshakes.load() == 1; }));
}

TEST_CASE("ws_upstream: echoes text and binary, records the handshake, closes on close-me",
          "[support][ws]") {
    ws_upstream up;
    ws_client c(up.port(), "/chat?room=1", {{"X-Probe", "ws"}});
    REQUIRE(c.upgraded());
    CHECK(c.response().result_int() == 101);
    CHECK(c.response()[http::field::server] == "ws-upstream");
    CHECK(up.last_handshake_headers()["x-probe"] == "ws");
    CHECK(up.last_handshake_headers()["upgrade"] == "websocket");
    REQUIRE(ws_upstream::wait_for(up.stats.open, 1));

    std::string got;
    REQUIRE_FALSE(c.write("hello"));
    REQUIRE_FALSE(c.read(got));
    CHECK(got == "hello");
    CHECK(c.got_text());
    const std::string bytes("\x00\x01\xff\xfe binary", 12);
    REQUIRE_FALSE(c.write(bytes, true));
    REQUIRE_FALSE(c.read(got));
    CHECK(got == bytes);
    CHECK_FALSE(c.got_text());
    const std::string big = pattern_body(4 * 1024 * 1024 + 3);
    REQUIRE_FALSE(c.write(big, true));
    REQUIRE_FALSE(c.read(got));
    CHECK(got.size() == big.size());
    CHECK(fnv1a(got) == fnv1a(big));

    REQUIRE_FALSE(c.write("close-me"));
    CHECK(c.read(got) == websocket::error::closed);
    CHECK(c.peer_close().code == ws_upstream::server_close_code);
    CHECK(std::string(c.peer_close().reason.c_str()) == "server says bye");
    CHECK(ws_upstream::wait_for(up.stats.ended, 1));
    CHECK(up.stats.open == 0);
    CHECK(up.stats.server_closes == 1);
    CHECK(up.stats.messages == 4);
}

TEST_CASE("ws_upstream: sees the client's close frame with its code and reason", "[support][ws]") {
    ws_upstream up;
    ws_client a(up.port());
    ws_client b(up.port());
    REQUIRE(a.upgraded());
    REQUIRE(b.upgraded());
    REQUIRE(ws_upstream::wait_for(up.stats.open, 2));
    CHECK_FALSE(a.close(websocket::close_reason(websocket::close_code::normal, "bye")));
    REQUIRE(ws_upstream::wait_for(up.stats.peer_closes, 1));
    CHECK(up.last_peer_close() == std::pair<std::uint16_t, std::string>{1000, "bye"});
    CHECK(eventually([&] { return up.stats.open.load() == 1; }));
    CHECK(up.stats.handshakes == 2);
}

TEST_CASE("ws_upstream: plain requests get JSON, /upgrade-anyway gets an unsolicited 101",
          "[support][ws]") {
    ws_upstream up;
    auto plain = get(up.port(), "/plain", {{"X-Probe", "plain"}});
    REQUIRE(plain.result_int() == 200);
    CHECK(nlohmann::json::parse(plain.body())["headers"]["x-probe"] == "plain");
    CHECK(up.last_plain_headers()["x-probe"] == "plain");

    client c(up.port());
    c.write_raw("GET /upgrade-anyway HTTP/1.1\r\nHost: localhost\r\n\r\n");
    auto res = c.read();
    CHECK(res.result_int() == 101);
    CHECK(res[http::field::upgrade] == "websocket");
    CHECK(up.stats.handshakes == 0);
    CHECK(up.stats.plain_requests == 2);
}

TEST_CASE("raw_connection tells a closed connection from a silent one, and metric_value parses",
          "[support]") {
    asio::io_context ioc;
    tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    const auto port = acceptor.local_endpoint().port();
    {
        raw_connection silent(port);
        tcp::socket peer(ioc);
        acceptor.accept(peer);
        auto start = std::chrono::steady_clock::now();
        CHECK_FALSE(silent.wait_closed(std::chrono::milliseconds(200)));
        CHECK(std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(190));
    }
    {
        raw_connection closing(port);
        tcp::socket peer(ioc);
        acceptor.accept(peer);
        asio::write(peer, asio::buffer("stray bytes", 11));
        peer.close();
        CHECK(closing.wait_closed(std::chrono::milliseconds(5000)));
    }
    const std::string text =
        "# HELP tollgate_tunnels_open x\n# TYPE tollgate_tunnels_open gauge\n"
        "tollgate_tunnels_open_total 9\ntollgate_tunnels_open 3\n";
    CHECK(metric_value(text, "tollgate_tunnels_open") == 3);
    CHECK(metric_value(text, "tollgate_missing") == -1);
}
