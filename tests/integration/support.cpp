#include "support.hpp"

#include <poll.h>

#include <charconv>
#include <chrono>
#include <nlohmann/json.hpp>

#include <catch2/catch.hpp>

namespace tollgate::test {
namespace {

std::uint64_t query_number(std::string_view target, std::string_view name) {
    auto q = target.find('?');
    if (q == std::string_view::npos) {
        return 0;
    }
    std::string key = std::string(name) + "=";
    auto at = target.find(key, q);
    if (at == std::string_view::npos) {
        return 0;
    }
    std::string_view digits = target.substr(at + key.size());
    std::uint64_t value = 0;
    std::from_chars(digits.data(), digits.data() + digits.size(), value);
    return value;
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return out;
}

}  // namespace

std::uint16_t free_port() {
    asio::io_context ioc;
    tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    return acceptor.local_endpoint().port();
}

std::uint64_t fnv1a(std::string_view data) {
    std::uint64_t h = 1469598103934665603ull;
    for (unsigned char c : data) {
        h ^= c;
        h *= 1099511628211ull;
    }
    return h;
}

std::string pattern_body(std::size_t n) {
    std::string out(n, '\0');
    for (std::size_t i = 0; i < n; ++i) {
        out[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
    }
    return out;
}

test_upstream::test_upstream()
    : acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { accept_loop(); });
}

test_upstream::~test_upstream() {
    stopping_ = true;
    release_held();
    error_code ignored;
    // Wake the blocking accept with a connection of our own; the acceptor is
    // closed only once its thread is done with it (closing it under a
    // blocking accept is a data race on the socket's state).
    {
        asio::io_context ioc;
        tcp::socket s(ioc);
        s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ignored);
    }
    accept_thread_.join();
    acceptor_.close(ignored);
    {
        std::lock_guard lock(mutex_);
        for (auto& s : sockets_) {
            s->shutdown(tcp::socket::shutdown_both, ignored);
        }
    }
    for (auto& t : connection_threads_) {
        t.join();
    }
}

// Closes a connection socket under the mutex the destructor holds while it
// shuts the open ones down, so the two never touch one socket at once.
void test_upstream::close_locked(tcp::socket& socket) {
    std::lock_guard lock(mutex_);
    error_code ignored;
    socket.close(ignored);
}

void test_upstream::accept_loop() {
    while (!stopping_) {
        tcp::socket socket(ioc_);
        error_code ec;
        acceptor_.accept(socket, ec);
        if (ec || stopping_) {
            return;
        }
        stats.connections++;
        std::lock_guard lock(mutex_);
        connection_threads_.emplace_back(
            [this, s = std::move(socket)]() mutable { serve(std::move(s)); });
    }
}

std::map<std::string, std::string> test_upstream::last_headers() {
    std::lock_guard lock(mutex_);
    return last_headers_;
}

bool test_upstream::wait_in_flight(int n) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (stats.in_flight.load() < n) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
}

bool test_upstream::wait_closed(int n) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (stats.closed_connections.load() < n) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
}

void test_upstream::release_held() {
    std::lock_guard lock(mutex_);
    held_released_ = true;
    cv_.notify_all();
}

void test_upstream::serve(tcp::socket raw) {
    auto socket = std::make_shared<tcp::socket>(std::move(raw));
    {
        std::lock_guard lock(mutex_);
        sockets_.push_back(socket);
    }
    beast::flat_buffer buffer;
    error_code ec;
    while (!stopping_) {
        http::request_parser<http::string_body> parser;
        parser.body_limit(boost::none);
        http::read(*socket, buffer, parser, ec);
        if (ec) {
            break;
        }
        auto req = parser.release();
        stats.requests++;
        int now = ++stats.in_flight;
        int seen = stats.max_in_flight.load();
        while (now > seen && !stats.max_in_flight.compare_exchange_weak(seen, now)) {
        }
        {
            std::lock_guard lock(mutex_);
            last_headers_.clear();
            for (const auto& f : req) {
                std::string name = lower(f.name_string());
                auto& slot = last_headers_[name];
                slot = slot.empty() ? std::string(f.value()) : slot + "," + std::string(f.value());
            }
        }
        std::string_view target = req.target();
        std::string path(target.substr(0, target.find('?')));
        bool keep = req.keep_alive();
        struct in_flight_guard {
            upstream_stats& s;
            ~in_flight_guard() { s.in_flight--; }
        } guard{stats};

        if (path == "/hangup") {
            break;
        }
        if (path == "/stall") {
            char c;
            socket->read_some(asio::buffer(&c, 1), ec);  // until tollgate gives up
            break;
        }
        if (path == "/hold") {
            std::unique_lock lock(mutex_);
            cv_.wait(lock, [&] { return held_released_; });
        }
        if (path == "/slow") {
            std::this_thread::sleep_for(std::chrono::milliseconds(query_number(target, "ms")));
        }
        if (path == "/reset-mid") {
            std::string head =
                "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\nContent-Type: text/plain\r\n\r\n";
            asio::write(*socket, asio::buffer(head), ec);
            asio::write(*socket, asio::buffer(pattern_body(1000)), ec);
            socket->set_option(asio::socket_base::linger(true, 0), ec);
            close_locked(*socket);
            break;
        }
        if (path == "/reset-chunked") {
            std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
            asio::write(*socket, asio::buffer(head), ec);
            asio::write(*socket, http::make_chunk(asio::buffer(pattern_body(1000))), ec);
            socket->set_option(asio::socket_base::linger(true, 0), ec);
            close_locked(*socket);
            break;
        }
        if (path == "/chunked") {
            std::size_t n = query_number(target, "n");
            std::string body = pattern_body(n);
            http::response<http::empty_body> res{http::status::ok, 11};
            res.chunked(true);
            res.keep_alive(keep);
            http::response_serializer<http::empty_body> sr{res};
            http::write_header(*socket, sr, ec);
            for (std::size_t at = 0; at < n && !ec; at += 7001) {
                std::size_t len = std::min<std::size_t>(7001, n - at);
                asio::write(*socket, http::make_chunk(asio::buffer(body.data() + at, len)), ec);
            }
            asio::write(*socket, http::make_chunk_last(), ec);
            if (ec || !keep) {
                break;
            }
            continue;
        }
        if (path == "/close") {
            std::string head =
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n";
            asio::write(*socket, asio::buffer(head), ec);
            asio::write(*socket, asio::buffer(pattern_body(query_number(target, "n"))), ec);
            break;
        }

        response res{http::status::ok, 11};
        res.set(http::field::server, "test-upstream");
        res.keep_alive(keep);
        if (path == "/status") {
            res.result(static_cast<unsigned>(query_number(target, "code")));
        } else if (path == "/big") {
            res.body() = pattern_body(query_number(target, "n"));
        } else {
            nlohmann::json headers = nlohmann::json::object();
            for (const auto& f : req) {
                headers[lower(f.name_string())] = std::string(f.value());
            }
            res.set("X-Body-Size", std::to_string(req.body().size()));
            res.set("X-Body-Fnv", std::to_string(fnv1a(req.body())));
            res.set(http::field::content_type, "application/json");
            res.body() = query_number(target, "echo")
                             ? req.body()
                             : nlohmann::json{{"headers", headers},
                                              {"method", std::string(req.method_string())},
                                              {"target", std::string(target)}}
                                   .dump();
        }
        const unsigned status = res.result_int();
        if (status == 204 || status == 304) {
            http::response<http::empty_body> empty{res.result(), 11};
            empty.keep_alive(keep);
            if (status == 304) {
                empty.content_length(10);  // what the full response would have had
            }
            http::write(*socket, empty, ec);
        } else if (req.method() == http::verb::head) {
            http::response<http::empty_body> head{res.result(), 11};
            head.keep_alive(keep);
            head.content_length(res.body().size());
            http::write(*socket, head, ec);
        } else {
            res.prepare_payload();
            http::write(*socket, res, ec);
        }
        if (ec || !keep) {
            break;
        }
    }
    socket->shutdown(tcp::socket::shutdown_send, ec);
    // Wait for the peer to close so "closed" means closed by both sides.
    char c;
    while (!ec) {
        socket->read_some(asio::buffer(&c, 1), ec);
    }
    close_locked(*socket);
    stats.closed_connections++;
}

client::client(std::uint16_t port) : stream_(ioc_) {
    stream_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
}

response client::send(request req) {
    http::write(stream_, req);
    return read(req.method() == http::verb::head);
}

void client::write_raw(std::string_view bytes) {
    asio::write(stream_, asio::buffer(bytes));
}

response client::read(bool head) {
    http::response_parser<http::string_body> parser;
    parser.body_limit(boost::none);
    parser.skip(head);
    stream_.expires_after(std::chrono::seconds(20));
    http::read(stream_, buffer_, parser);
    return parser.release();
}

bool client::closed_within(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        pollfd p{stream_.socket().native_handle(), POLLIN, 0};
        if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
            return false;  // still open at the deadline
        }
        char c;
        error_code ec;
        stream_.socket().read_some(asio::buffer(&c, 1), ec);
        if (ec) {
            return ec == asio::error::eof || ec == asio::error::connection_reset;
        }
    }
}

upstream_server http_server(std::uint16_t port) {
    upstream_server s;
    s.host = "127.0.0.1";
    s.port = port;
    s.url = "http://127.0.0.1:" + std::to_string(port);
    return s;
}

config test_config(std::uint16_t upstream_port) {
    config cfg;
    cfg.listen = {"127.0.0.1", 0};
    cfg.admin.listen = {"127.0.0.1", 0};
    cfg.threads = 2;
    cfg.upstream.servers = {http_server(upstream_port)};
    cfg.upstream.connect_timeout = std::chrono::milliseconds(2000);
    cfg.upstream.response_timeout = std::chrono::milliseconds(5000);
    cfg.client.header_timeout = std::chrono::milliseconds(5000);
    cfg.shutdown.drain_timeout = std::chrono::milliseconds(5000);
    cfg.log.access_log = false;
    return cfg;
}

running_proxy::running_proxy(config cfg, const limit::clock* time)
    : srv_(std::make_unique<server::server>(std::make_shared<const config>(std::move(cfg)), time)) {
    srv_->start();
}

running_proxy::~running_proxy() {
    srv_->drain_and_stop();
}

response get(std::uint16_t port, std::string_view target,
             const std::vector<std::pair<std::string, std::string>>& headers) {
    client c(port);
    request req{http::verb::get, target, 11};
    req.set(http::field::host, "localhost");
    for (const auto& [name, value] : headers) {
        req.set(name, value);
    }
    return c.send(std::move(req));
}

logged_run run_logged(const config& cfg, int count, unsigned status) {
    logged_run run;
    const captured_stderr log;
    {
        running_proxy gw(cfg);
        for (int i = 0; i < count; ++i) {
            CHECK(get(gw.port(), "/echo").result_int() == status);
        }
        run.metrics = get(gw.admin_port(), "/metrics").body();
    }
    run.log = log.text();
    return run;
}

}  // namespace tollgate::test
