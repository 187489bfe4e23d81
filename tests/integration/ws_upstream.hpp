#pragma once
// Upstreams for the Upgrade and TLS tests, in the style of test_upstream:
// 127.0.0.1:<ephemeral>, synchronous Beast, one thread per connection.
//
//   ws_upstream     a WebSocket echo server that also answers plain HTTP
//   https_upstream  an HTTPS server that echoes the request headers as JSON

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/ssl.hpp>

#include "tls_certs.hpp"
#include "tollgate/net.hpp"

namespace tollgate::test {

namespace ssl = boost::asio::ssl;

/// Counters the WebSocket upstream keeps; safe to read from the test thread.
struct ws_upstream_stats {
    std::atomic<int> connections{0};     ///< TCP connections accepted
    std::atomic<int> plain_requests{0};  ///< HTTP requests that were not an upgrade
    /// Upgrade requests answered with 101 (counted, like `open` and the
    /// recorded headers, before the 101 is written).
    std::atomic<int> handshakes{0};
    std::atomic<int> open{0};           ///< WebSocket sessions open right now
    std::atomic<int> messages{0};       ///< messages received
    std::atomic<int> peer_closes{0};    ///< close frames received from the peer
    std::atomic<int> server_closes{0};  ///< closing handshakes started here ("close-me")
    std::atomic<int> ended{0};          ///< WebSocket sessions over, however they ended
};

/// WebSocket echo upstream. On an `Upgrade: websocket` request (any path)
/// it accepts the handshake and echoes every message with its text/binary
/// flag, except the text message "close-me", on which it starts the
/// closing handshake itself (code 4000, reason "server says bye").
/// Plain HTTP requests:
///   /upgrade-anyway  an unsolicited `101 Switching Protocols`, then silence
///   anything else    200, JSON {"headers": {...}, "method", "target"}
class ws_upstream {
public:
    static constexpr std::uint16_t server_close_code = 4000;

    ws_upstream();
    ~ws_upstream();
    ws_upstream(const ws_upstream&) = delete;
    ws_upstream& operator=(const ws_upstream&) = delete;

    std::uint16_t port() const { return port_; }
    ws_upstream_stats stats;

    /// Headers of the last upgrade request it accepted (names lowercased).
    std::map<std::string, std::string> last_handshake_headers();
    /// Headers of the last plain HTTP request (names lowercased).
    std::map<std::string, std::string> last_plain_headers();
    /// Code and reason of the last close frame a peer sent (0 and "" if none).
    std::pair<std::uint16_t, std::string> last_peer_close();

    /// Blocks until `counter` reaches `n` (or 10 s passed).
    static bool wait_for(const std::atomic<int>& counter, int n);

private:
    void accept_loop();
    void serve(std::shared_ptr<tcp::socket> socket);
    void run_websocket(tcp::socket& socket, const http::request<http::string_body>& req);

    asio::io_context ioc_;
    tcp::acceptor acceptor_;
    std::uint16_t port_ = 0;
    std::thread accept_thread_;
    std::mutex mutex_;
    std::vector<std::thread> connection_threads_;
    std::vector<std::shared_ptr<tcp::socket>> sockets_;
    std::map<std::string, std::string> handshake_headers_;
    std::map<std::string, std::string> plain_headers_;
    std::uint16_t peer_close_code_ = 0;
    std::string peer_close_reason_;
    std::atomic<bool> stopping_{false};
};

/// HTTPS upstream with the given certificate and key (PEM files). Every
/// request gets 200 with JSON {"headers": {...}, "method", "target"} and
/// `Server: https-upstream`; keep-alive is honoured. A request with an
/// `Upgrade` field gets a `101` to that protocol, then silence until the
/// peer closes (an idle tunnel).
class https_upstream {
public:
    https_upstream(const std::string& cert_file, const std::string& key_file);
    explicit https_upstream(const pem_files& files) : https_upstream(files.cert, files.key) {}
    ~https_upstream();
    https_upstream(const https_upstream&) = delete;
    https_upstream& operator=(const https_upstream&) = delete;

    std::uint16_t port() const { return port_; }

    std::atomic<int> connections{0};        ///< TCP connections accepted
    std::atomic<int> handshakes{0};         ///< TLS handshakes completed
    std::atomic<int> failed_handshakes{0};  ///< TLS handshakes that failed
    std::atomic<int> requests{0};

    /// The SNI host name of the last ClientHello ("" when it carried none,
    /// or before the first one). Recorded even when the handshake then fails.
    std::string last_sni();
    /// Headers of the last request (names lowercased).
    std::map<std::string, std::string> last_headers();

private:
    static int on_servername(SSL* ssl, int* alert, void* self);
    void accept_loop();
    void serve(std::shared_ptr<tcp::socket> socket);

    asio::io_context ioc_;
    ssl::context ctx_;
    tcp::acceptor acceptor_;
    std::uint16_t port_ = 0;
    std::thread accept_thread_;
    std::mutex mutex_;
    std::vector<std::thread> connection_threads_;
    std::vector<std::shared_ptr<tcp::socket>> sockets_;
    std::string last_sni_;
    std::map<std::string, std::string> last_headers_;
    std::atomic<bool> stopping_{false};
};

}  // namespace tollgate::test
