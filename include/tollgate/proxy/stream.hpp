#pragma once
/// @file stream.hpp
/// One connection, plain TCP or TLS over TCP, as one type, so that a
/// session and the upstream pool serve both with the same code. The branch
/// per operation costs nothing next to the system call behind it.
///
/// Timeouts are the TCP layer's (`beast::tcp_stream`): `expires_after`
/// closes the socket when it fires, which fails any pending TLS operation
/// as well. Without one (`expires_never`), no timer is armed at all.
/// Satisfies Beast's AsyncReadStream and AsyncWriteStream for completion
/// handlers (not for other completion tokens).

#include <cerrno>
#include <cstddef>
#include <memory>
#include <string_view>

#include <sys/socket.h>

#include <boost/beast/ssl.hpp>

#include "tollgate/net.hpp"

namespace tollgate::proxy {

/// Every socket of a worker runs on that worker's io_context: its executor
/// type is known, so handlers and timers carry it directly instead of the
/// type-erased `any_io_executor` (whose copies show up in a profile).
using executor_type = asio::io_context::executor_type;
using socket_type = asio::basic_stream_socket<tcp, executor_type>;
using acceptor_type = asio::basic_socket_acceptor<tcp, executor_type>;
using tcp_stream = beast::basic_stream<tcp, executor_type, beast::unlimited_rate_policy>;

class stream {
public:
    using executor_type = proxy::executor_type;
    using tls_stream = beast::ssl_stream<tcp_stream>;

    /// Not connected yet (an upstream connection before its connect).
    explicit stream(asio::io_context& ioc) : ex_(ioc.get_executor()), plain_(ioc) {}
    /// Plain TCP over an accepted socket.
    explicit stream(socket_type socket) : ex_(socket.get_executor()), plain_(std::move(socket)) {}
    /// TLS over an accepted socket; the handshake is still to do.
    stream(socket_type socket, asio::ssl::context& ctx)
        : ex_(socket.get_executor()),
          plain_(ex_),
          tls_(std::make_unique<tls_stream>(std::move(socket), ctx)) {}

    stream(const stream&) = delete;
    stream& operator=(const stream&) = delete;

    /// Turns a connected plain stream into TLS over the same socket (an
    /// upstream after its TCP connect); the handshake is still to do.
    void start_tls(asio::ssl::context& ctx) {
        tls_ = std::make_unique<tls_stream>(std::move(plain_), ctx);
    }

    bool is_tls() const { return tls_ != nullptr; }
    /// The TLS layer; only when is_tls().
    tls_stream& tls() { return *tls_; }
    tcp_stream& tcp_layer() { return tls_ ? tls_->next_layer() : plain_; }
    socket_type& socket() { return tcp_layer().socket(); }
    executor_type get_executor() const { return ex_; }

    template <class Duration>
    void expires_after(Duration d) {
        tcp_layer().expires_after(d);
        timed_ = true;
    }
    /// Free when no timeout is set, the usual case between operations.
    void expires_never() {
        if (timed_) {
            tcp_layer().expires_never();
            timed_ = false;
        }
    }

    /// Sends as much of `data` as the socket takes right now: no timer, no
    /// trip through the event loop. Most replies fit the socket buffer, so
    /// this is all a write costs; what is left goes to an asynchronous write
    /// under a timeout. Plain TCP only (a TLS stream returns 0). A would-block
    /// or an error returns what was sent so far, and the asynchronous write
    /// that follows reports the error. Never call it with a write pending.
    std::size_t send_now(std::string_view data) noexcept {
        if (tls_ || !plain_.socket().is_open()) {
            return 0;
        }
        const int fd = plain_.socket().native_handle();
        std::size_t sent = 0;
        while (sent < data.size()) {
            const ssize_t n =
                ::send(fd, data.data() + sent, data.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) {
                sent += static_cast<std::size_t>(n);
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else {
                break;
            }
        }
        return sent;
    }

    /// A plain read without a timeout goes to the socket directly: Beast's
    /// per-operation bookkeeping is there for the timer, and there is none.
    template <class MutableBuffers, class Handler>
    void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
        if (tls_) {
            tls_->async_read_some(buffers, std::forward<Handler>(handler));
        } else if (!timed_) {
            plain_.socket().async_read_some(buffers, std::forward<Handler>(handler));
        } else {
            plain_.async_read_some(buffers, std::forward<Handler>(handler));
        }
    }

    template <class ConstBuffers, class Handler>
    void async_write_some(const ConstBuffers& buffers, Handler&& handler) {
        if (tls_) {
            tls_->async_write_some(buffers, std::forward<Handler>(handler));
        } else {
            plain_.async_write_some(buffers, std::forward<Handler>(handler));
        }
    }

private:
    executor_type ex_;
    tcp_stream plain_;  ///< moved into tls_ by start_tls()
    std::unique_ptr<tls_stream> tls_;
    bool timed_ = false;  ///< a timeout is set (expires_after since expires_never)
};

}  // namespace tollgate::proxy
