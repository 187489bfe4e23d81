#pragma once
/// @file admin_server.hpp
/// The admin listener (DESIGN.md section 7): its own thread and io_context,
/// so it answers while the proxy port is saturated. Never rate-limited.

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "tollgate/log.hpp"
#include "tollgate/net.hpp"

namespace tollgate::admin {

using request = http::request<http::string_body>;
using response = http::response<http::string_body>;
/// Builds the response for one admin request; called on the admin thread.
using handler = std::function<response(const request&)>;

class admin_server {
public:
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

    asio::io_context ioc_{1};
    tcp::acceptor acceptor_{ioc_};
    asio::steady_timer accept_backoff_{ioc_};
    throttled_warning accept_warning_{std::chrono::seconds(10)};
    handler handler_;
    std::thread thread_;
};

/// A plain-text response with `status` and `body`.
response text_response(const request& req, http::status status, std::string body,
                       std::string_view content_type = "text/plain; charset=utf-8");

}  // namespace tollgate::admin
