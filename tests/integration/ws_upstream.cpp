#include "ws_upstream.hpp"

#include <chrono>

#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

namespace tollgate::test {
namespace {

namespace websocket = boost::beast::websocket;

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return out;
}

template <class Fields>
std::map<std::string, std::string> header_map(const Fields& fields) {
    std::map<std::string, std::string> out;
    for (const auto& f : fields) {
        auto& slot = out[lower(f.name_string())];
        slot = slot.empty() ? std::string(f.value()) : slot + "," + std::string(f.value());
    }
    return out;
}

/// The JSON both upstreams answer with: what they received.
std::string echo_json(const http::request<http::string_body>& req) {
    nlohmann::json headers = nlohmann::json::object();
    for (const auto& [name, value] : header_map(req)) {
        headers[name] = value;
    }
    return nlohmann::json{{"headers", headers},
                          {"method", std::string(req.method_string())},
                          {"target", std::string(req.target())}}
        .dump();
}

/// Half-closes, then reads until the peer closes too, so "ended" means
/// closed by both sides (as in test_upstream). The close happens under
/// `sockets_mutex`, which the destructor holds while it shuts sockets down.
void linger_until_peer_closes(tcp::socket& socket, std::mutex& sockets_mutex) {
    error_code ec;
    socket.shutdown(tcp::socket::shutdown_send, ec);
    char buf[512];
    while (!ec) {
        socket.read_some(asio::buffer(buf), ec);
    }
    std::lock_guard lock(sockets_mutex);
    socket.close(ec);
}

/// Connects to our own acceptor so its blocking accept returns.
void wake_acceptor(std::uint16_t port) {
    asio::io_context ioc;
    tcp::socket s(ioc);
    error_code ignored;
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ignored);
}

bool wait_counter(const std::atomic<int>& counter, int n) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (counter.load() < n) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
}

}  // namespace

// ---- ws_upstream -------------------------------------------------------------

ws_upstream::ws_upstream()
    : acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { accept_loop(); });
}

ws_upstream::~ws_upstream() {
    stopping_ = true;
    error_code ignored;
    wake_acceptor(port_);
    accept_thread_.join();
    acceptor_.close(ignored);  // only now: not under a blocking accept
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

bool ws_upstream::wait_for(const std::atomic<int>& counter, int n) {
    return wait_counter(counter, n);
}

std::map<std::string, std::string> ws_upstream::last_handshake_headers() {
    std::lock_guard lock(mutex_);
    return handshake_headers_;
}

std::map<std::string, std::string> ws_upstream::last_plain_headers() {
    std::lock_guard lock(mutex_);
    return plain_headers_;
}

std::pair<std::uint16_t, std::string> ws_upstream::last_peer_close() {
    std::lock_guard lock(mutex_);
    return {peer_close_code_, peer_close_reason_};
}

void ws_upstream::accept_loop() {
    while (!stopping_) {
        auto socket = std::make_shared<tcp::socket>(ioc_);
        error_code ec;
        acceptor_.accept(*socket, ec);
        if (ec || stopping_) {
            return;
        }
        stats.connections++;
        std::lock_guard lock(mutex_);
        sockets_.push_back(socket);
        connection_threads_.emplace_back([this, socket] { serve(socket); });
    }
}

void ws_upstream::serve(std::shared_ptr<tcp::socket> socket) {
    beast::flat_buffer buffer;
    error_code ec;
    while (!stopping_) {
        http::request_parser<http::string_body> parser;
        http::read(*socket, buffer, parser, ec);
        if (ec) {
            break;
        }
        auto req = parser.release();
        if (websocket::is_upgrade(req)) {
            run_websocket(*socket, req);
            break;
        }
        stats.plain_requests++;
        {
            std::lock_guard lock(mutex_);
            plain_headers_ = header_map(req);
        }
        std::string_view target = req.target();
        if (target.substr(0, target.find('?')) == "/upgrade-anyway") {
            // Nobody asked to switch protocols; stay silent after the 101 so
            // the proxy's answer comes from the 101 itself, not from an EOF.
            std::string_view head =
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
                "Upgrade\r\n\r\n";
            asio::write(*socket, asio::buffer(head), ec);
            char c;
            while (!ec) {
                socket->read_some(asio::buffer(&c, 1), ec);
            }
            break;
        }
        http::response<http::string_body> res{http::status::ok, req.version()};
        res.set(http::field::server, "ws-upstream");
        res.set(http::field::content_type, "application/json");
        res.keep_alive(req.keep_alive());
        res.body() = echo_json(req);
        res.prepare_payload();
        http::write(*socket, res, ec);
        if (ec || !req.keep_alive()) {
            break;
        }
    }
    linger_until_peer_closes(*socket, mutex_);
}

void ws_upstream::run_websocket(tcp::socket& socket, const http::request<http::string_body>& req) {
    websocket::stream<tcp::socket&> ws(socket);
    ws.read_message_max(64 * 1024 * 1024);
    ws.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "ws-upstream"); }));
    // Booked before the 101 goes out: a client holding its 101 must find them.
    {
        std::lock_guard lock(mutex_);
        handshake_headers_ = header_map(req);
    }
    stats.handshakes++;
    stats.open++;
    error_code ec;
    ws.accept(req, ec);
    beast::flat_buffer buffer;
    while (!ec && !stopping_) {
        buffer.clear();
        ws.read(buffer, ec);
        if (ec == websocket::error::closed) {
            std::lock_guard lock(mutex_);
            peer_close_code_ = ws.reason().code;
            peer_close_reason_ = std::string(ws.reason().reason.c_str());
            stats.peer_closes++;
            break;
        }
        if (ec) {
            break;  // the connection went away without a close frame
        }
        stats.messages++;
        if (ws.got_text() && beast::buffers_to_string(buffer.data()) == "close-me") {
            stats.server_closes++;
            ws.close(websocket::close_reason(static_cast<websocket::close_code>(server_close_code),
                                             "server says bye"),
                     ec);
            // The session ends with the peer's close frame or with the connection.
            for (int i = 0; !ec && i < 1000; ++i) {
                buffer.clear();
                ws.read(buffer, ec);
            }
            break;
        }
        ws.text(ws.got_text());
        ws.write(buffer.data(), ec);
        if (ec) {
            break;
        }
    }
    stats.open--;
    stats.ended++;
}

// ---- https_upstream ----------------------------------------------------------

https_upstream::https_upstream(const std::string& cert_file, const std::string& key_file)
    : ctx_(ssl::context::tls_server),
      acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    ctx_.use_certificate_chain_file(cert_file);
    ctx_.use_private_key_file(key_file, ssl::context::pem);
    SSL_CTX_set_tlsext_servername_callback(ctx_.native_handle(), &https_upstream::on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx_.native_handle(), this);
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { accept_loop(); });
}

https_upstream::~https_upstream() {
    stopping_ = true;
    error_code ignored;
    wake_acceptor(port_);
    accept_thread_.join();
    acceptor_.close(ignored);  // only now: not under a blocking accept
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

// OpenSSL calls this for every ClientHello, with or without SNI.
int https_upstream::on_servername(SSL* ssl, int* /*alert*/, void* self) {
    const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    auto* up = static_cast<https_upstream*>(self);
    std::lock_guard lock(up->mutex_);
    up->last_sni_ = name ? name : "";
    return SSL_TLSEXT_ERR_OK;
}

std::string https_upstream::last_sni() {
    std::lock_guard lock(mutex_);
    return last_sni_;
}

std::map<std::string, std::string> https_upstream::last_headers() {
    std::lock_guard lock(mutex_);
    return last_headers_;
}

void https_upstream::accept_loop() {
    while (!stopping_) {
        auto socket = std::make_shared<tcp::socket>(ioc_);
        error_code ec;
        acceptor_.accept(*socket, ec);
        if (ec || stopping_) {
            return;
        }
        connections++;
        std::lock_guard lock(mutex_);
        sockets_.push_back(socket);
        connection_threads_.emplace_back([this, socket] { serve(socket); });
    }
}

void https_upstream::serve(std::shared_ptr<tcp::socket> socket) {
    ssl::stream<tcp::socket&> stream(*socket, ctx_);
    error_code ec;
    stream.handshake(ssl::stream_base::server, ec);
    if (ec) {
        failed_handshakes++;
        linger_until_peer_closes(*socket, mutex_);
        return;
    }
    handshakes++;
    beast::flat_buffer buffer;
    while (!stopping_) {
        http::request_parser<http::string_body> parser;
        http::read(stream, buffer, parser, ec);
        if (ec) {
            break;
        }
        auto req = parser.release();
        requests++;
        {
            std::lock_guard lock(mutex_);
            last_headers_ = header_map(req);
        }
        if (const auto upgrade = req.find(http::field::upgrade); upgrade != req.end()) {
            // Switches, then says nothing: a tunnel that idles.
            const std::string switched =
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + std::string(upgrade->value()) +
                "\r\nConnection: Upgrade\r\n\r\n";
            asio::write(stream, asio::buffer(switched), ec);
            char buf[512];
            while (!ec) {
                socket->read_some(asio::buffer(buf), ec);
            }
            std::lock_guard lock(mutex_);
            socket->close(ec);
            return;
        }
        http::response<http::string_body> res{http::status::ok, req.version()};
        res.set(http::field::server, "https-upstream");
        res.set(http::field::content_type, "application/json");
        res.keep_alive(req.keep_alive());
        res.body() = echo_json(req);
        res.prepare_payload();
        http::write(stream, res, ec);
        if (ec || !req.keep_alive()) {
            break;
        }
    }
    // No close_notify: a TCP half-close is enough for length-delimited responses
    // and never blocks on a peer that does not answer one.
    linger_until_peer_closes(*socket, mutex_);
}

}  // namespace tollgate::test
