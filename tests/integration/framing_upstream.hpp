#pragma once
// Raw-socket upstreams for the framing tests. Unlike test_upstream (which
// parses with Beast and so shares its leniency), these see the exact bytes
// tollgate sends, cut them into requests themselves, and check every head
// they receive with the strict validator: tollgate must never forward
// anything that it would refuse itself.

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tollgate/net.hpp"

namespace tollgate::test::framing {

/// One request as the upstream received it.
struct received_request {
    std::string method;
    std::string target;
    std::string head;  ///< the raw head bytes
    std::string body;  ///< the decoded body
    bool complete = false;
    std::size_t connection = 0;  ///< index of the upstream connection (accept order)
};

/// Base: accept loop on 127.0.0.1:<ephemeral>, one thread per connection,
/// bookkeeping of open connections so a test can wait until tollgate has
/// closed all of them.
class raw_upstream {
public:
    raw_upstream();
    virtual ~raw_upstream();
    raw_upstream(const raw_upstream&) = delete;
    raw_upstream& operator=(const raw_upstream&) = delete;

    std::uint16_t port() const { return port_; }
    /// Blocks until no upstream connection is open (or `timeout` passed).
    bool wait_all_closed(std::chrono::milliseconds timeout);
    /// Blocks until `n` connections were accepted and closed by the peer.
    bool wait_closed_count(std::size_t n, std::chrono::milliseconds timeout);
    std::size_t connections();
    /// Writes `bytes` on the most recently accepted connection, from the
    /// caller's thread, as an upstream that speaks unasked would.
    bool send_on_last(std::string_view bytes);

protected:
    /// Serves one connection until it ends; `index` counts accepted ones.
    virtual void serve(tcp::socket& socket, std::size_t index) = 0;
    /// Must be called by the derived destructor before its members go.
    void stop();
    std::mutex mutex_;
    std::condition_variable cv_;

private:
    void accept_loop();

    asio::io_context ioc_;
    tcp::acceptor acceptor_;
    std::uint16_t port_ = 0;
    std::thread accept_thread_;
    std::vector<std::thread> threads_;
    std::vector<std::shared_ptr<tcp::socket>> sockets_;
    std::size_t accepted_ = 0;
    std::size_t open_ = 0;
    std::size_t closed_ = 0;
    bool stopping_ = false;
};

/// Records every request and answers each complete one with
/// `200` + `Content-Length: 2` + `ok`, keeping the connection alive.
class recording_upstream final : public raw_upstream {
public:
    recording_upstream() = default;
    ~recording_upstream() override { stop(); }

    /// Requests in the order their heads arrived.
    std::vector<received_request> requests();
    /// Heads that the strict validator refused, printable (must stay empty).
    std::vector<std::string> refused_heads();
    /// Bytes that arrived on a connection after its last request and could
    /// not be cut into a request (must stay empty).
    std::vector<std::string> stray_bytes();

private:
    void serve(tcp::socket& socket, std::size_t index) override;

    std::vector<received_request> requests_;
    std::vector<std::string> refused_;
    std::vector<std::string> stray_;
};

/// Answers every request with fixed bytes: `/sentinel` gets a plain 200
/// `ok`, anything else `answer` (then closes its side when `eof`). Counts
/// the connections tollgate closed after being answered with `answer`.
class scripted_upstream final : public raw_upstream {
public:
    scripted_upstream(std::string answer, bool eof) : answer_(std::move(answer)), eof_(eof) {}
    ~scripted_upstream() override { stop(); }

    std::size_t requests();

private:
    void serve(tcp::socket& socket, std::size_t index) override;

    std::string answer_;
    bool eof_;
    std::size_t requests_ = 0;
};

/// Answers the first request of each connection with `answer` (a `200 ok`
/// by default); reads the second and closes without a word, as a server
/// that dies while acting on it. Records the request lines it read.
class answer_once_upstream final : public raw_upstream {
public:
    answer_once_upstream() = default;
    explicit answer_once_upstream(std::string answer) : answer_(std::move(answer)) {}
    ~answer_once_upstream() override { stop(); }

    std::vector<std::string> request_lines();

private:
    void serve(tcp::socket& socket, std::size_t index) override;

    std::string answer_ = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    std::vector<std::string> lines_;
};

}  // namespace tollgate::test::framing
