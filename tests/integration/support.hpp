#pragma once
// Test support for integration tests: a real upstream on a loopback port
// (thread per connection, synchronous Beast, so each scenario can misbehave
// exactly as it needs to), a small blocking HTTP client, and tollgate itself
// started in-process on port 0.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "../captured_stderr.hpp"
#include "tollgate/config/config.hpp"
#include "tollgate/limit/clock.hpp"
#include "tollgate/net.hpp"
#include "tollgate/server/server.hpp"

namespace tollgate::test {

using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

/// Polls `condition` every 2 ms until it holds (true) or `limit` has passed
/// (false): for state that changes on another thread or process.
template <class F>
bool eventually(F condition, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!condition()) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
}

/// 64-bit FNV-1a, to compare multi-megabyte bodies cheaply.
std::uint64_t fnv1a(std::string_view data);

/// A loopback port nobody listens on right now (bound to port 0, then
/// released): a refusing upstream, or a port for a server started later.
std::uint16_t free_port();

/// Deterministic body of `n` bytes (not all one byte, so a shifted or
/// truncated relay shows up in the checksum).
std::string pattern_body(std::size_t n);

/// Counters the upstream keeps; safe to read from the test thread.
struct upstream_stats {
    std::atomic<int> connections{0};
    std::atomic<int> requests{0};
    std::atomic<int> in_flight{0};
    std::atomic<int> max_in_flight{0};
    std::atomic<int> closed_connections{0};
};

/// A real HTTP/1.1 upstream on 127.0.0.1:<ephemeral>. Paths:
///   /echo            200, JSON of the request headers; body echoed back in
///                    `X-Body-Fnv`/`X-Body-Size` and, with ?echo=1, as the body
///   /big?n=N         N pattern bytes with Content-Length
///   /chunked?n=N     N pattern bytes, chunked, in pieces
///   /close?n=N       N pattern bytes, no length: body ends when the connection closes
///   /slow?ms=N       200 after N ms
///   /reset-mid       announces 1 MB, sends 1000 bytes, then resets the connection
///   /reset-chunked   a chunked head and one 1000-byte chunk, then resets the connection
///   /hangup          reads the request, closes without answering
///   /stall           reads the request, never answers (until the connection closes)
///   /status?code=N   empty response with status N
/// Anything else answers like /echo.
class test_upstream {
public:
    test_upstream();
    ~test_upstream();
    std::uint16_t port() const { return port_; }
    upstream_stats stats;
    /// Headers of the last request received (names lowercased).
    std::map<std::string, std::string> last_headers();
    /// Blocks until `stats.in_flight` reaches `n` (or 10 s passed).
    bool wait_in_flight(int n);
    /// Blocks until `stats.closed_connections` reaches `n` (or 10 s passed).
    bool wait_closed(int n);
    /// Releases requests to /hold (they wait until release_held()).
    void release_held();

private:
    void accept_loop();
    void serve(tcp::socket socket);
    void close_locked(tcp::socket& socket);

    asio::io_context ioc_;
    tcp::acceptor acceptor_;
    std::uint16_t port_ = 0;
    std::thread accept_thread_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<std::thread> connection_threads_;
    std::vector<std::shared_ptr<tcp::socket>> sockets_;
    std::map<std::string, std::string> last_headers_;
    bool held_released_ = false;
    std::atomic<bool> stopping_{false};
};

/// A blocking client connection to 127.0.0.1:port.
class client {
public:
    explicit client(std::uint16_t port);
    /// Sends `req` (prepare_payload is the caller's job) and reads one response.
    response send(request req);
    /// Writes raw bytes.
    void write_raw(std::string_view bytes);
    /// Reads one response (string body); `head` for a HEAD request.
    response read(bool head = false);
    /// True when the server has closed the connection (reads EOF within 5 s).
    bool closed_by_peer() { return closed_within(std::chrono::seconds(5)); }
    /// True when the server closes the connection (EOF or reset) within
    /// `limit`; bytes before the close are discarded.
    bool closed_within(std::chrono::milliseconds limit);
    tcp::socket& socket() { return stream_.socket(); }
    beast::tcp_stream& stream() { return stream_; }

private:
    asio::io_context ioc_;
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
};

/// `http://127.0.0.1:<port>` as an upstream server.
upstream_server http_server(std::uint16_t port);

/// A config for tests: loopback listeners on port 0, two threads, the
/// given upstream, short timeouts.
config test_config(std::uint16_t upstream_port);

/// tollgate started in-process with `cfg`, drained and stopped on destruction.
class running_proxy {
public:
    explicit running_proxy(config cfg, const limit::clock* time = nullptr);
    ~running_proxy();
    std::uint16_t port() const { return srv_->proxy_endpoint().port(); }
    std::uint16_t admin_port() const { return srv_->admin_endpoint().port(); }
    std::uint16_t tls_port() const { return srv_->tls_endpoint().port(); }
    server::server& srv() { return *srv_; }

private:
    std::unique_ptr<server::server> srv_;
};

/// GET `target` from 127.0.0.1:port on a fresh connection.
response get(std::uint16_t port, std::string_view target,
             const std::vector<std::pair<std::string, std::string>>& headers = {});

/// What a proxy said while it served `count` GETs of /echo, each of them
/// checked to get `status`: its /metrics after them, and its whole log
/// (read once the proxy has stopped).
struct logged_run {
    std::string metrics;
    std::string log;
};
logged_run run_logged(const config& cfg, int count, unsigned status = 200);

}  // namespace tollgate::test
