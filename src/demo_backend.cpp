// tollgate-demo-backend: the small HTTP backend the README's first command
// puts behind tollgate, so a newcomer sees a proxied response at once.
//
//   GET /            JSON echo of what arrived (method, path, forwarding headers)
//   GET /slow?ms=N   the same after N milliseconds (at most 60000)
//   GET /bytes?n=N   N bytes of 'x' (at most 1 GiB)
//
// Usage: tollgate-demo-backend [--listen 127.0.0.1:9000]

#include <charconv>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "tollgate/net.hpp"

using namespace tollgate;

namespace {

std::uint64_t query_number(std::string_view target, std::string_view name, std::uint64_t max) {
    auto q = target.find('?');
    if (q == std::string_view::npos) {
        return 0;
    }
    std::string_view query = target.substr(q + 1);
    std::string key = std::string(name) + "=";
    auto at = query.find(key);
    if (at == std::string_view::npos) {
        return 0;
    }
    std::string_view digits = query.substr(at + key.size());
    std::uint64_t value = 0;
    std::from_chars(digits.data(), digits.data() + digits.size(), value);
    return std::min(value, max);
}

class connection : public std::enable_shared_from_this<connection> {
public:
    explicit connection(tcp::socket socket)
        : stream_(std::move(socket)), timer_(stream_.get_executor()) {}

    void start() { do_read(); }

private:
    void do_read() {
        req_ = {};
        stream_.expires_after(std::chrono::seconds(60));
        http::async_read(stream_, buffer_, req_,
                         beast::bind_front_handler(&connection::on_read, shared_from_this()));
    }

    void on_read(error_code ec, std::size_t) {
        if (ec) {
            return;
        }
        std::string_view target = req_.target();
        std::uint64_t delay = target.starts_with("/slow") ? query_number(target, "ms", 60000) : 0;
        timer_.expires_after(std::chrono::milliseconds(delay));
        timer_.async_wait([self = shared_from_this()](error_code) { self->respond(); });
    }

    void respond() {
        std::string_view target = req_.target();
        auto res =
            std::make_shared<http::response<http::string_body>>(http::status::ok, req_.version());
        res->set(http::field::server, "tollgate-demo-backend");
        if (target.starts_with("/bytes")) {
            res->set(http::field::content_type, "application/octet-stream");
            res->body().assign(query_number(target, "n", 1ull << 30), 'x');
        } else {
            nlohmann::json body{
                {"service", "tollgate-demo-backend"},
                {"method", std::string(req_.method_string())},
                {"path", std::string(target.substr(0, target.find('?')))},
                {"x_forwarded_for", std::string(req_["X-Forwarded-For"])},
                {"via", std::string(req_[http::field::via])},
                {"body_bytes", req_.body().size()},
            };
            res->set(http::field::content_type, "application/json");
            res->body() = body.dump() + "\n";
        }
        res->keep_alive(req_.keep_alive());
        res->prepare_payload();
        http::async_write(stream_, *res,
                          [self = shared_from_this(), res](error_code ec, std::size_t) {
                              if (!ec && res->keep_alive()) {
                                  self->do_read();
                              }
                          });
    }

    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    http::request<http::string_body> req_;
    asio::steady_timer timer_;
};

void do_accept(tcp::acceptor& acceptor) {
    acceptor.async_accept([&acceptor](error_code ec, tcp::socket socket) {
        if (!ec) {
            std::make_shared<connection>(std::move(socket))->start();
        }
        do_accept(acceptor);
    });
}

}  // namespace

int main(int argc, char** argv) {
    std::string listen = "127.0.0.1:9000";
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--listen" && i + 1 < argc) {
            listen = argv[++i];
        } else {
            std::cerr << "usage: tollgate-demo-backend [--listen HOST:PORT]\n";
            return 2;
        }
    }
    try {
        auto colon = listen.rfind(':');
        if (colon == std::string::npos) {
            throw std::runtime_error("--listen: expected HOST:PORT, got \"" + listen + "\"");
        }
        std::string host = listen.substr(0, colon);
        if (host.size() > 1 && host.front() == '[') {
            host = host.substr(1, host.size() - 2);
        }
        auto port = static_cast<std::uint16_t>(std::stoul(listen.substr(colon + 1)));
        asio::io_context ioc{1};
        tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::make_address(host), port));
        std::cerr << "tollgate-demo-backend listening on " << acceptor.local_endpoint() << "\n";
        do_accept(acceptor);
        asio::signal_set signals(ioc, SIGINT, SIGTERM);
        signals.async_wait([&](error_code, int) { ioc.stop(); });
        ioc.run();
    } catch (const std::exception& e) {
        std::cerr << "tollgate-demo-backend: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
