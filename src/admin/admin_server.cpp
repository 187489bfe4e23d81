#include "tollgate/admin/admin_server.hpp"

namespace tollgate::admin {

response text_response(const request& req, http::status status, std::string body,
                       std::string_view content_type) {
    response res{status, req.version()};
    res.set(http::field::server, "tollgate");
    res.set(http::field::content_type, content_type);
    res.set(http::field::cache_control, "no-store");
    res.keep_alive(req.keep_alive());
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
}

// One admin client: read a small request, answer it, repeat while kept alive.
class admin_server::connection : public std::enable_shared_from_this<connection> {
public:
    connection(tcp::socket socket, const handler& h) : stream_(std::move(socket)), handler_(h) {}

    void start() { do_read(); }

private:
    void do_read() {
        req_ = {};
        parser_.emplace();
        parser_->header_limit(16 * 1024);
        parser_->body_limit(64 * 1024);
        stream_.expires_after(std::chrono::seconds(30));
        http::async_read(stream_, buffer_, *parser_,
                         beast::bind_front_handler(&connection::on_read, shared_from_this()));
    }

    void on_read(error_code ec, std::size_t) {
        if (ec) {
            error_code ignored;
            stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
            return;
        }
        req_ = parser_->release();
        try {
            res_ = handler_(req_);
        } catch (const std::exception& e) {
            res_ = text_response(req_, http::status::internal_server_error, e.what());
        }
        http::async_write(stream_, res_,
                          beast::bind_front_handler(&connection::on_write, shared_from_this()));
    }

    void on_write(error_code ec, std::size_t) {
        if (ec || !res_.keep_alive()) {
            error_code ignored;
            stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
            return;
        }
        do_read();
    }

    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    request req_;
    response res_;
    const handler& handler_;
};

admin_server::admin_server(const tcp::endpoint& endpoint, handler h) : handler_(std::move(h)) {
    acceptor_.open(endpoint.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(endpoint);
    acceptor_.listen();
}

admin_server::~admin_server() {
    stop();
}

tcp::endpoint admin_server::local_endpoint() const {
    return acceptor_.local_endpoint();
}

void admin_server::start() {
    do_accept();
    thread_ = std::thread([this] { ioc_.run(); });
}

void admin_server::stop() {
    if (!thread_.joinable()) {
        return;
    }
    ioc_.stop();
    thread_.join();
}

void admin_server::do_accept() {
    acceptor_.async_accept([this](error_code ec, tcp::socket socket) {
        if (ec == asio::error::operation_aborted) {
            return;
        }
        if (ec) {
            // Out of descriptors (or another transient failure): back off,
            // as the proxy's listeners do, instead of spinning on an accept
            // that keeps failing.
            accept_warning_.warn("admin: cannot accept a connection (" + ec.message() +
                                 "); retrying every 50 ms");
            accept_backoff_.expires_after(std::chrono::milliseconds(50));
            accept_backoff_.async_wait([this](error_code wait_ec) {
                if (!wait_ec) {
                    do_accept();
                }
            });
            return;
        }
        std::make_shared<connection>(std::move(socket), handler_)->start();
        do_accept();
    });
}

}  // namespace tollgate::admin
