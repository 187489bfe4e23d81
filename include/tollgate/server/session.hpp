#pragma once
/// @file session.hpp
/// One client connection and the exchanges it carries, one at a time:
/// read the header, decide, forward to an upstream connection from the
/// worker's pool, relay the response, repeat while both sides keep alive.
///
/// A session lives on its worker's io_context only; every handler binds
/// shared_from_this(). Bodies are streamed through fixed buffers
/// (`buffer_body`), so memory per exchange does not grow with body size.

#include <array>
#include <memory>
#include <optional>

#include "tollgate/http/local_reply.hpp"
#include "tollgate/net.hpp"
#include "tollgate/proxy/upstream_pool.hpp"
#include "tollgate/server/gateway.hpp"

namespace tollgate::server {

class worker;

class session : public std::enable_shared_from_this<session> {
public:
    session(tcp::socket socket, worker& owner);
    ~session();
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    void start();
    /// Shutdown: an idle connection closes now; a busy one answers its
    /// current request with `Connection: close`, then closes.
    void drain();
    /// Closes the client connection (and with it any exchange) at once.
    void abort();

private:
    using request_parser = http::request_parser<http::buffer_body>;
    using response_parser = http::response_parser<http::buffer_body>;

    // Between requests.
    void do_wait_for_request();
    void on_first_bytes(error_code ec, std::size_t n);
    void do_read_header();
    void on_read_header(error_code ec, std::size_t n);

    // Decision and upstream connection.
    void handle_request();
    void do_acquire_upstream();
    void on_upstream(error_code ec, proxy::upstream_pool::lease conn);

    // Request: header then streamed body, client -> upstream.
    void do_write_request_header();
    void on_write_request_header(error_code ec, std::size_t n);
    void on_continue_sent(error_code ec, std::size_t n);
    void do_read_request_body();
    void on_read_request_body(error_code ec, std::size_t n);
    void do_write_request_body();
    void on_write_request_body(error_code ec, std::size_t n);

    // Response: header then streamed body, upstream -> client.
    void do_read_response_header();
    void on_read_response_header(error_code ec, std::size_t n);
    void do_write_response_header();
    void on_write_response_header(error_code ec, std::size_t n);
    void do_read_response_body();
    void on_read_response_body(error_code ec, std::size_t n);
    void do_write_response_body();
    void on_write_response_body(error_code ec, std::size_t n);
    void finish_exchange();

    // Replies tollgate makes itself, and failure paths.
    void send_local(local_response res);
    void on_local_sent(error_code ec, std::size_t n);
    void upstream_failed(error_code ec, bool timeout_is_504);
    void close();
    void lingering_close();
    void do_linger();

    std::shared_ptr<const runtime> rt_;
    worker& owner_;
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    asio::steady_timer header_timer_;
    bool header_timed_out_ = false;
    std::string peer_ip_;

    // The current exchange.
    std::optional<request_parser> parser_;
    std::optional<http::request_serializer<http::buffer_body>> req_sr_;
    std::optional<response_parser> res_parser_;
    std::optional<http::response_serializer<http::buffer_body>> res_sr_;
    std::optional<local_response> local_;
    std::shared_ptr<const proxy::upstream_group> upstream_group_;
    proxy::upstream_pool::lease upstream_;
    std::unique_ptr<std::array<char, 32 * 1024>> body_buf_;
    unsigned client_version_ = 11;
    bool client_keep_alive_ = true;
    bool upstream_keep_alive_ = true;
    bool send_continue_ = false;
    bool request_has_body_ = false;
    std::size_t linger_budget_ = 0;
    bool response_started_ = false;
    bool head_request_ = false;
    bool header_only_response_ = false;
    bool retried_ = false;

    // Connection state.
    bool idle_ = false;      ///< waiting for the next request
    bool draining_ = false;  ///< close after the current exchange
    bool closed_ = false;
    bool first_request_ = true;
};

}  // namespace tollgate::server
