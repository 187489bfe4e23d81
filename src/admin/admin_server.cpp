#include "tollgate/admin/admin_server.hpp"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string_view>

#include "tollgate/http/date.hpp"

namespace tollgate::admin {

response text_response(const request& req, http::status status, std::string body,
                       std::string_view content_type) {
    response res{status, req.version()};
    res.set(http::field::server, "tollgate");
    res.set(http::field::date, http_date_now());
    res.set(http::field::content_type, content_type);
    res.set(http::field::cache_control, "no-store");
    res.keep_alive(req.keep_alive());
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
}

namespace {

/// A token character (RFC 9110 5.6.2): what a method is made of.
bool is_tchar(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

/// False when no valid request head starts with `head` (the bytes of one
/// head, complete or not): a byte before the first space that no method has
/// (a TLS ClientHello, binary noise), or a line end other than CRLF. Beast's
/// parser refuses these too, but only when they come in its first read:
/// once it has asked for more bytes, it waits for a CRLF CRLF that such a
/// client may never send, until the read timeout.
bool could_start_request(std::string_view head) {
    const std::size_t space = head.find(' ');
    const std::string_view method = head.substr(0, space);
    if (space == 0 || !std::all_of(method.begin(), method.end(), is_tchar)) {
        return false;
    }
    for (std::size_t i = head.find_first_of("\r\n"); i != std::string_view::npos;
         i = head.find_first_of("\r\n", i + 1)) {
        const bool bare_lf = head[i] == '\n' && (i == 0 || head[i - 1] != '\r');
        const bool bare_cr = head[i] == '\r' && i + 1 < head.size() && head[i + 1] != '\n';
        if (bare_lf || bare_cr) {
            return false;
        }
    }
    return true;
}

bool is_parse_error(error_code ec) {
    static const auto& http_errors = error_code(http::error::end_of_stream).category();
    // end_of_stream and partial_message: the client closed, nobody to answer.
    return ec.category() == http_errors && ec != http::error::end_of_stream &&
           ec != http::error::partial_message;
}

std::string refusal_text(http::status status) {
    switch (status) {
        case http::status::request_header_fields_too_large:
            return "request header too large\n";
        case http::status::payload_too_large:
            return "request body too large\n";
        default:
            return "bad request\n";
    }
}

}  // namespace

// One admin client: read a small request, answer it, repeat while kept alive.
class admin_server::connection : public std::enable_shared_from_this<connection> {
public:
    connection(tcp::socket socket, admin_server& owner)
        : stream_(std::move(socket)), owner_(owner) {
        owner_.open_.push_back(this);
    }
    ~connection() { std::erase(owner_.open_, this); }
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    void start() { do_read(); }

    /// Since when it has waited for a request without a byte of one; nullopt
    /// while it reads, answers or closes.
    std::optional<std::chrono::steady_clock::time_point> waiting_since() const {
        return waiting_since_;
    }

    /// Closed to make room for a new connection: its pending read ends.
    void make_room() {
        waiting_since_.reset();
        close();
    }

private:
    void do_read() {
        parser_.emplace();
        parser_->header_limit(static_cast<std::uint32_t>(max_head_bytes));
        parser_->body_limit(max_body_bytes);
        head_ = false;
        stream_.expires_after(std::chrono::seconds(30));
        if (buffer_.size() == 0) {
            waiting_since_ = std::chrono::steady_clock::now();
        }
        read_head();
    }

    // The head is read here, and handed to Beast's parser only when complete
    // (or refused), so that a malformed one is answered when its bytes come.
    void read_head() {
        // Empty lines before a request line are ignored (RFC 9112 2.2): some
        // clients send a CRLF after a request's body.
        std::string_view data(static_cast<const char*>(buffer_.data().data()), buffer_.size());
        std::size_t blank = 0;
        while (data.substr(blank).starts_with("\r\n")) {
            blank += 2;
        }
        buffer_.consume(blank);
        data.remove_prefix(blank);
        const std::string_view window = data.substr(0, max_head_bytes);
        const std::size_t end = window.find("\r\n\r\n");
        const std::string_view head =
            end == std::string_view::npos ? window : data.substr(0, end + 4);
        if (!could_start_request(head)) {
            refuse(http::status::bad_request);
            return;
        }
        if (end != std::string_view::npos) {
            parse_head(head);
            return;
        }
        if (data.size() >= max_head_bytes) {
            refuse(http::status::request_header_fields_too_large);
            return;
        }
        stream_.async_read_some(
            buffer_.prepare(max_head_bytes - data.size()),
            beast::bind_front_handler(&connection::on_head_bytes, shared_from_this()));
    }

    void on_head_bytes(error_code ec, std::size_t n) {
        waiting_since_.reset();
        if (ec) {
            close();  // gone, silent for 30 s, or closed to make room: nobody to answer
            return;
        }
        buffer_.commit(n);
        read_head();
    }

    void parse_head(std::string_view head) {
        error_code ec;
        const std::size_t used = parser_->put(asio::buffer(head.data(), head.size()), ec);
        if (!ec && !parser_->is_header_done()) {
            ec = http::error::partial_message;
        }
        if (ec) {
            refuse(ec == http::error::body_limit ? http::status::payload_too_large
                                                 : http::status::bad_request);
            return;
        }
        buffer_.consume(used);
        // The body, if any (no admin path takes one), to keep the next
        // request on the connection in step.
        http::async_read(stream_, buffer_, *parser_,
                         beast::bind_front_handler(&connection::on_body, shared_from_this()));
    }

    void on_body(error_code ec, std::size_t) {
        if (ec == http::error::body_limit) {
            refuse(http::status::payload_too_large);
            return;
        }
        if (is_parse_error(ec)) {
            refuse(http::status::bad_request);  // a malformed chunked body
            return;
        }
        if (ec) {
            close();
            return;
        }
        req_ = parser_->release();
        head_ = req_.method() == http::verb::head;
        try {
            res_ = owner_.handler_(req_);
        } catch (const std::exception& e) {
            // The text is for the operator: it may quote the request's
            // bytes, and a client can do nothing with it.
            owner_.handler_warning_.warn(std::string("admin: answered 500: ") + e.what());
            res_ = text_response(req_, http::status::internal_server_error, "internal error\n");
        } catch (...) {
            owner_.handler_warning_.warn("admin: answered 500: an exception of unknown type");
            res_ = text_response(req_, http::status::internal_server_error, "internal error\n");
        }
        do_write();
    }

    // A request that could not be read: answered, then the connection is
    // closed, since where the next request would start is unknown.
    void refuse(http::status status) {
        // The method is known once Beast has read the request line, before
        // the header is done (a Content-Length over the limit is refused
        // there); until then it is verb::unknown.
        head_ = parser_->get().method() == http::verb::head;
        request closing{http::verb::get, "/", 11};
        closing.keep_alive(false);
        res_ = text_response(closing, status, refusal_text(status));
        do_write();
    }

    void do_write() {
        serializer_.emplace(res_);
        stream_.expires_after(std::chrono::seconds(30));
        // A reply to HEAD has the head a GET would get, Content-Length
        // included, and no body: a body would be read as the start of the
        // next response on the connection.
        if (head_) {
            http::async_write_header(
                stream_, *serializer_,
                beast::bind_front_handler(&connection::on_write, shared_from_this()));
            return;
        }
        http::async_write(stream_, *serializer_,
                          beast::bind_front_handler(&connection::on_write, shared_from_this()));
    }

    void on_write(error_code ec, std::size_t) {
        if (ec) {
            close();
            return;
        }
        if (!res_.keep_alive()) {
            lingering_close();
            return;
        }
        do_read();
    }

    // Closing a socket with unread bytes in it sends a reset, which can
    // destroy the reply just written before the client reads it (the rest
    // of a refused 100 KB body is still on its way). So: stop sending, drop
    // what the client still sends for up to 2 s, then close.
    void lingering_close() {
        error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
        stream_.expires_after(std::chrono::seconds(2));
        buffer_.clear();
        do_linger();
    }

    void do_linger() {
        stream_.async_read_some(buffer_.prepare(16 * 1024),
                                [self = shared_from_this()](error_code ec, std::size_t) {
                                    if (ec) {
                                        self->close();
                                        return;
                                    }
                                    self->do_linger();
                                });
    }

    void close() { stream_.close(); }

    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    request req_;
    response res_;
    std::optional<http::response_serializer<http::string_body>> serializer_;
    bool head_ = false;  ///< answering a HEAD request
    std::optional<std::chrono::steady_clock::time_point> waiting_since_;
    admin_server& owner_;
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
        if (open_.size() >= max_connections && !close_longest_waiting()) {
            refuse_connection(socket);
        } else {
            std::make_shared<connection>(std::move(socket), *this)->start();
        }
        do_accept();
    });
}

bool admin_server::close_longest_waiting() {
    // Idle: a second without a byte of a request. A client that has just
    // connected (its request may be in the socket, not read yet) is not.
    const auto idle_since = std::chrono::steady_clock::now() - std::chrono::seconds(1);
    connection* longest = nullptr;
    for (connection* c : open_) {
        const auto since = c->waiting_since();
        if (since && *since <= idle_since &&
            (longest == nullptr || *since < *longest->waiting_since())) {
            longest = c;
        }
    }
    if (longest == nullptr) {
        return false;
    }
    // Counted out when its read's handler has run; one over the cap meanwhile.
    longest->make_room();
    return true;
}

// Over max_connections, every one inside a request: a 503 and a close,
// without waiting for anything, so that a flood of connections costs the
// admin thread nothing more.
void admin_server::refuse_connection(tcp::socket& socket) {
    static const std::string reply = [] {
        constexpr std::string_view body = "too many admin connections\n";
        return "HTTP/1.1 503 Service Unavailable\r\nServer: tollgate\r\n"
               "Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n"
               "Connection: close\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
    }();
    error_code ignored;
    // A fresh socket's send buffer takes the reply at once. A client whose
    // request is already here may see a reset instead of it (a close with
    // unread bytes resets): still a prompt refusal.
    socket.non_blocking(true, ignored);
    socket.write_some(asio::buffer(reply), ignored);
    socket.close(ignored);
    full_warning_.warn("admin: " + std::to_string(max_connections) +
                       " connections open and none idle; new ones are closed at once");
}

}  // namespace tollgate::admin
