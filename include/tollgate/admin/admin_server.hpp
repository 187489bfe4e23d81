#pragma once
/// @file admin_server.hpp
/// The admin listener (DESIGN.md section 7): its own thread and io_context,
/// so it answers while the proxy port is saturated. Never rate-limited.
///
/// What the listener does itself, the same for every path, before and
/// after the handler:
///  * A request that cannot be read as HTTP/1.0 or 1.1 is answered `400`
///    (`431` for a head over `max_head_bytes`, `413` for a body over
///    `max_body_bytes`) with `Connection: close`, then the connection is
///    closed; a head that can never become valid (a byte no method has, a
///    bare LF or CR) is refused when it arrives, not at the read timeout.
///  * The reply to `HEAD` is the head of the handler's reply (the
///    Content-Length of the body a `GET` would get) without the body.
///  * At most `max_connections` connections are open at once. One more
///    takes the place of the connection that has waited longest for a
///    request, at least a second (an idle keep-alive one, or one that never
///    sent a byte), which is closed; when none has, it is sent a `503` and
///    closed at once. So idle connections cannot lock probes and scrapes out.
/// The handler never sees a malformed request, and never throws at a
/// client: an exception it throws is answered `500` without its text.

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tollgate/log.hpp"
#include "tollgate/net.hpp"

namespace tollgate::admin {

using request = http::request<http::string_body>;
using response = http::response<http::string_body>;
/// Builds the response for one admin request; called on the admin thread.
using handler = std::function<response(const request&)>;

class admin_server {
public:
    /// Connections open at once, idle keep-alive ones included. The admin
    /// port shares the process's descriptor limit with the proxy: without
    /// a cap, a client holding thousands of idle admin connections (each
    /// kept up to the 30 s read timeout) would take descriptors the proxy
    /// needs. A Prometheus server, a probe or two and a few status pages
    /// need far fewer.
    static constexpr std::size_t max_connections = 64;
    /// Request line and header fields together.
    static constexpr std::size_t max_head_bytes = 16 * 1024;
    /// No admin path takes a body; this is what is read and dropped.
    static constexpr std::size_t max_body_bytes = 64 * 1024;

    /// Binds `endpoint` (throws boost::system::system_error).
    admin_server(const tcp::endpoint& endpoint, handler h);
    ~admin_server();
    admin_server(const admin_server&) = delete;
    admin_server& operator=(const admin_server&) = delete;

    tcp::endpoint local_endpoint() const;
    void start();
    void stop();

private:
    class connection;
    void do_accept();
    void refuse_connection(tcp::socket& socket);

    /// Closes the open connection that has waited longest for a request,
    /// at least a second; false when none has.
    bool close_longest_waiting();

    /// Open connections; admin thread only. Declared before ioc_: pending
    /// handlers, and the connections they hold, are destroyed with ioc_,
    /// and each one takes itself out.
    std::vector<connection*> open_;
    asio::io_context ioc_{1};
    tcp::acceptor acceptor_{ioc_};
    asio::steady_timer accept_backoff_{ioc_};
    throttled_warning accept_warning_{std::chrono::seconds(10)};
    throttled_warning full_warning_{std::chrono::seconds(10)};
    throttled_warning handler_warning_{std::chrono::seconds(10)};
    handler handler_;
    std::thread thread_;
};

/// A plain-text response with `status` and `body`.
response text_response(const request& req, http::status status, std::string body,
                       std::string_view content_type = "text/plain; charset=utf-8");

}  // namespace tollgate::admin
