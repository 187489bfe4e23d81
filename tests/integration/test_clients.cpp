#include "test_clients.hpp"

#include <optional>
#include <sstream>

#include "tls_certs.hpp"

namespace tollgate::test {
namespace {

tcp::endpoint loopback(std::uint16_t port) {
    return tcp::endpoint(asio::ip::make_address("127.0.0.1"), port);
}

/// Starts one async operation on `lowest` (via `start(handler)`) and runs
/// `ioc` until it completes; the tcp_stream deadline bounds it to `limit`
/// (then the stream is closed and the result is beast::error::timeout).
template <class Start>
error_code run_bounded(asio::io_context& ioc, beast::tcp_stream& lowest,
                       std::chrono::milliseconds limit, Start start) {
    lowest.expires_after(limit);
    std::optional<error_code> result;
    start([&result](error_code ec, std::size_t = 0) { result = ec; });
    ioc.restart();
    while (!result && ioc.run_one() != 0) {
    }
    lowest.expires_never();
    return result.value_or(asio::error::timed_out);
}

}  // namespace

double metric_value(const std::string& text, std::string_view name) {
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
        if (line.size() > name.size() && line.compare(0, name.size(), name) == 0 &&
            line[name.size()] == ' ') {
            return std::stod(line.substr(name.size() + 1));
        }
    }
    return -1;
}

double scrape(std::uint16_t admin_port, std::string_view name) {
    return metric_value(get(admin_port, "/metrics").body(), name);
}

// ---- ws_client ---------------------------------------------------------------

template <class Start>
error_code ws_client::run(std::chrono::milliseconds limit, Start start) {
    return run_bounded(ioc_, beast::get_lowest_layer(ws_), limit, std::move(start));
}

ws_client::ws_client(std::uint16_t port, std::string_view target, const header_list& headers)
    : ws_(ioc_) {
    beast::get_lowest_layer(ws_).connect(loopback(port));
    ws_.read_message_max(64 * 1024 * 1024);
    ws_.set_option(websocket::stream_base::decorator([headers](websocket::request_type& req) {
        for (const auto& [name, value] : headers) {
            req.set(name, value);
        }
    }));
    handshake_error_ = run(op_limit, [&](auto handler) {
        ws_.async_handshake(response_, "localhost", target, std::move(handler));
    });
}

error_code ws_client::write(std::string_view payload, bool binary,
                            std::chrono::milliseconds limit) {
    ws_.binary(binary);
    return run(limit, [&](auto handler) {
        ws_.async_write(asio::buffer(payload.data(), payload.size()), std::move(handler));
    });
}

error_code ws_client::read(std::string& out, std::chrono::milliseconds limit) {
    beast::flat_buffer buffer;
    auto ec = run(limit, [&](auto handler) { ws_.async_read(buffer, std::move(handler)); });
    out = beast::buffers_to_string(buffer.data());
    return ec;
}

error_code ws_client::close(const websocket::close_reason& reason,
                            std::chrono::milliseconds limit) {
    return run(limit, [&](auto handler) { ws_.async_close(reason, std::move(handler)); });
}

// ---- TLS ---------------------------------------------------------------------

ssl::context client_tls_context(const std::string& ca_file, int max_version) {
    ssl::context ctx(ssl::context::tls_client);
    ctx.set_verify_mode(ssl::verify_peer);
    ctx.load_verify_file(ca_file);
    SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
    if (max_version != 0) {
        SSL_CTX_set_max_proto_version(ctx.native_handle(), max_version);
    }
    static const unsigned char http11[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx.native_handle(), http11, sizeof http11 - 1);
    return ctx;
}

namespace {

void prepare_client(beast::ssl_stream<beast::tcp_stream>& stream, const std::string& host) {
    SSL_set_tlsext_host_name(stream.native_handle(), host.c_str());
    stream.set_verify_callback(ssl::host_name_verification(host));
}

}  // namespace

template <class Start>
error_code tls_client::run(std::chrono::milliseconds limit, Start start) {
    return run_bounded(ioc_, beast::get_lowest_layer(stream_), limit, std::move(start));
}

tls_client::tls_client(std::uint16_t port, ssl::context& ctx, const std::string& host)
    : stream_(ioc_, ctx) {
    beast::get_lowest_layer(stream_).connect(loopback(port));
    prepare_client(stream_, host);
    auto ec = run(op_limit, [&](auto handler) {
        stream_.async_handshake(ssl::stream_base::client, std::move(handler));
    });
    if (ec) {
        throw boost::system::system_error(ec,
                                          "TLS handshake with 127.0.0.1:" + std::to_string(port));
    }
}

response tls_client::send(request req, std::chrono::milliseconds limit) {
    auto ec =
        run(limit, [&](auto handler) { http::async_write(stream_, req, std::move(handler)); });
    if (ec) {
        throw boost::system::system_error(ec, "TLS client write");
    }
    http::response_parser<http::string_body> parser;
    parser.body_limit(boost::none);
    ec = run(limit,
             [&](auto handler) { http::async_read(stream_, buffer_, parser, std::move(handler)); });
    if (ec) {
        throw boost::system::system_error(ec, "TLS client read");
    }
    return parser.release();
}

long tls_client::peer_serial() {
    x509_ptr cert(SSL_get1_peer_certificate(stream_.native_handle()));
    return certificate_serial(cert.get());
}

std::string tls_client::peer_common_name() {
    x509_ptr cert(SSL_get1_peer_certificate(stream_.native_handle()));
    return certificate_common_name(cert.get());
}

int tls_client::protocol_version() {
    return SSL_version(stream_.native_handle());
}

std::string tls_client::alpn() {
    const unsigned char* data = nullptr;
    unsigned int len = 0;
    SSL_get0_alpn_selected(stream_.native_handle(), &data, &len);
    return data ? std::string(reinterpret_cast<const char*>(data), len) : std::string();
}

error_code tls_handshake_error(std::uint16_t port, ssl::context& ctx, const std::string& host) {
    asio::io_context ioc;
    beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
    error_code ec;
    beast::get_lowest_layer(stream).socket().connect(loopback(port), ec);
    if (ec) {
        return ec;
    }
    prepare_client(stream, host);
    return run_bounded(ioc, beast::get_lowest_layer(stream), op_limit, [&](auto handler) {
        stream.async_handshake(ssl::stream_base::client, std::move(handler));
    });
}

// ---- raw_connection ----------------------------------------------------------

raw_connection::raw_connection(std::uint16_t port) : stream_(ioc_) {
    stream_.connect(loopback(port));
}

void raw_connection::write(std::string_view bytes) {
    asio::write(stream_.socket(), asio::buffer(bytes.data(), bytes.size()));
}

bool raw_connection::wait_closed(std::chrono::milliseconds limit) {
    return read_to_close(limit).has_value();
}

std::optional<std::string> raw_connection::read_to_close(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    std::string out;
    char buf[4096];
    while (true) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left <= std::chrono::milliseconds(0)) {
            return std::nullopt;
        }
        std::size_t n = 0;
        auto ec = run_bounded(ioc_, stream_, left, [&](auto handler) {
            stream_.async_read_some(asio::buffer(buf),
                                    [&n, handler](error_code read_ec, std::size_t got) mutable {
                                        n = got;
                                        handler(read_ec, got);
                                    });
        });
        out.append(buf, n);
        if (ec == asio::error::eof || ec == asio::error::connection_reset) {
            return out;
        }
        if (ec) {
            return std::nullopt;  // timeout (still open when the deadline came), or worse
        }
    }
}

}  // namespace tollgate::test
