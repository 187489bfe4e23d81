#pragma once
// Clients for the Upgrade and TLS tests. Unlike support.hpp's `client`,
// every operation here has a deadline (async operation on a beast::tcp_stream
// with expires_after, run to completion on a private io_context), so a proxy
// that never answers fails the test instead of hanging it.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>

#include "support.hpp"

namespace tollgate::test {

namespace ssl = boost::asio::ssl;
namespace websocket = boost::beast::websocket;
/// How long any single client operation may take before the test gives up on it.
inline constexpr std::chrono::milliseconds op_limit{10000};

using header_list = std::vector<std::pair<std::string, std::string>>;

/// The value of an unlabelled gauge or counter in Prometheus text, or -1
/// when the family is missing.
double metric_value(const std::string& text, std::string_view name);

/// GET /metrics from the admin port, then metric_value().
double scrape(std::uint16_t admin_port, std::string_view name);

/// A WebSocket client connection to 127.0.0.1:port. A refused upgrade is
/// not an exception: upgraded() is false and response() is the answer.
class ws_client {
public:
    ws_client(std::uint16_t port, std::string_view target = "/ws", const header_list& headers = {});
    ws_client(const ws_client&) = delete;
    ws_client& operator=(const ws_client&) = delete;

    bool upgraded() const { return !handshake_error_; }
    error_code handshake_error() const { return handshake_error_; }
    /// The handshake response (101, or the refusal with its body).
    const websocket::response_type& response() const { return response_; }

    error_code write(std::string_view payload, bool binary = false,
                     std::chrono::milliseconds limit = op_limit);
    /// Reads one message into `out`; `websocket::error::closed` after a close frame.
    error_code read(std::string& out, std::chrono::milliseconds limit = op_limit);
    /// Whether the last message read was text.
    bool got_text() const { return ws_.got_text(); }
    /// Sends `reason` and completes the closing handshake.
    error_code close(const websocket::close_reason& reason,
                     std::chrono::milliseconds limit = op_limit);
    /// The close frame the peer sent (after read() returned closed).
    const websocket::close_reason& peer_close() const { return ws_.reason(); }

    websocket::stream<beast::tcp_stream>& stream() { return ws_; }

private:
    template <class Start>
    error_code run(std::chrono::milliseconds limit, Start start);

    asio::io_context ioc_;
    websocket::stream<beast::tcp_stream> ws_;
    websocket::response_type response_;
    error_code handshake_error_;
};

/// Client context for TLS to tollgate or an upstream: verifies the peer
/// against `ca_file` only (never the system store), TLS 1.2 or newer.
/// `max_version`: e.g. TLS1_2_VERSION for a client that cannot do 1.3; 0 = no cap.
ssl::context client_tls_context(const std::string& ca_file, int max_version = 0);

/// A TLS client connection to 127.0.0.1:port that checks the certificate
/// for `host` (SNI and name check). Throws when the handshake fails; use
/// tls_handshake_error() to test a handshake expected to fail.
class tls_client {
public:
    tls_client(std::uint16_t port, ssl::context& ctx, const std::string& host = "localhost");
    tls_client(const tls_client&) = delete;
    tls_client& operator=(const tls_client&) = delete;

    /// Sends `req` (prepare_payload is the caller's job) and reads one response.
    response send(request req, std::chrono::milliseconds limit = op_limit);
    /// Serial and subject CN of the certificate the server presented.
    long peer_serial();
    std::string peer_common_name();
    /// The negotiated version (TLS1_2_VERSION, TLS1_3_VERSION).
    int protocol_version();
    /// The ALPN protocol the server chose ("" when none).
    std::string alpn();
    beast::ssl_stream<beast::tcp_stream>& stream() { return stream_; }

private:
    template <class Start>
    error_code run(std::chrono::milliseconds limit, Start start);

    asio::io_context ioc_;
    beast::ssl_stream<beast::tcp_stream> stream_;
    beast::flat_buffer buffer_;
};

/// Connects to 127.0.0.1:port and attempts a TLS handshake with `ctx`
/// (SNI and name check for `host`, up to 10 s); the error, none on success.
error_code tls_handshake_error(std::uint16_t port, ssl::context& ctx,
                               const std::string& host = "localhost");

/// A plain TCP connection that can wait, with a deadline, for the server to close it.
class raw_connection {
public:
    explicit raw_connection(std::uint16_t port);
    void write(std::string_view bytes);
    /// Reads (and discards) until EOF/reset or `limit`; true when the peer closed.
    bool wait_closed(std::chrono::milliseconds limit);
    /// Everything the peer sends until it closes (EOF or reset); nullopt
    /// when it is still open after `limit`.
    std::optional<std::string> read_to_close(std::chrono::milliseconds limit);

private:
    asio::io_context ioc_;
    beast::tcp_stream stream_;
};

}  // namespace tollgate::test
