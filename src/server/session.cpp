#include "tollgate/server/session.hpp"

#include "tollgate/proxy/headers.hpp"
#include "tollgate/server/worker.hpp"

namespace tollgate::server {
namespace {

constexpr std::size_t max_response_header_bytes = 64 * 1024;
constexpr std::string_view continue_line = "HTTP/1.1 100 Continue\r\n\r\n";

bool is_disconnect(const error_code& ec) {
    return ec == asio::error::eof || ec == http::error::end_of_stream ||
           ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
           ec == asio::error::connection_aborted || ec == http::error::partial_message;
}

}  // namespace

session::session(tcp::socket socket, worker& owner)
    : owner_(owner), stream_(std::move(socket)), header_timer_(stream_.get_executor()) {
    owner_.sessions_.insert(this);
    owner_.session_count_++;
    error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    peer_ip_ = ec ? std::string("0.0.0.0") : ep.address().to_string();
    stream_.socket().set_option(tcp::no_delay(true), ec);
}

session::~session() {
    owner_.sessions_.erase(this);
    owner_.session_count_--;
    owner_.gw.client_connections--;
}

void session::start() {
    draining_ = owner_.gw.draining();
    do_wait_for_request();
}

void session::drain() {
    draining_ = true;
    if (idle_) {
        close();
    }
}

void session::abort() {
    close();
}

void session::close() {
    if (closed_) {
        return;
    }
    closed_ = true;
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
    upstream_.close();
}

// Wait for the first byte of the next request. A keep-alive connection may
// idle for client.idle_timeout; the header deadline starts with that byte.
void session::do_wait_for_request() {
    if (draining_ && !first_request_) {
        close();
        return;
    }
    if (buffer_.size() > 0) {
        do_read_header();
        return;
    }
    idle_ = true;
    const auto& c = owner_.gw.current()->cfg->client;
    stream_.expires_after(first_request_ ? c.header_timeout : c.idle_timeout);
    stream_.async_read_some(
        buffer_.prepare(4096),
        beast::bind_front_handler(&session::on_first_bytes, shared_from_this()));
}

void session::on_first_bytes(error_code ec, std::size_t n) {
    idle_ = false;
    if (ec || n == 0) {
        // Idle timeout, client closed, or drain: nothing was asked, nothing to answer.
        close();
        return;
    }
    buffer_.commit(n);
    do_read_header();
}

// Read the whole header within client.header_timeout of its first byte.
void session::do_read_header() {
    rt_ = owner_.gw.current();
    const auto& c = rt_->cfg->client;
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(c.max_header_bytes));
    parser_->body_limit(c.max_body_bytes);
    // A deadline of our own rather than the stream's: the stream closes its
    // socket on timeout, and we still want to answer 408 on it.
    stream_.expires_never();
    header_timed_out_ = false;
    header_timer_.expires_after(c.header_timeout);
    header_timer_.async_wait([self = shared_from_this()](error_code ec) {
        if (!ec) {
            self->header_timed_out_ = true;
            error_code ignored;
            self->stream_.socket().cancel(ignored);
        }
    });
    http::async_read_header(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&session::on_read_header, shared_from_this()));
}

void session::on_read_header(error_code ec, std::size_t) {
    first_request_ = false;
    header_timer_.cancel();
    if (header_timed_out_) {
        send_local(
            make_error_reply(http::status::request_timeout, "request header timeout", 11, false));
        return;
    }
    if (ec == http::error::end_of_stream || (ec && is_disconnect(ec)) ||
        ec == asio::error::operation_aborted) {
        close();
        return;
    }
    if (ec == http::error::header_limit) {
        send_local(make_error_reply(http::status::request_header_fields_too_large,
                                    "request header too large", 11, false));
        return;
    }
    if (ec == http::error::body_limit) {
        send_local(
            make_error_reply(http::status::payload_too_large, "request body too large", 11, false));
        return;
    }
    if (ec) {
        send_local(make_error_reply(http::status::bad_request, "malformed request", 11, false));
        return;
    }
    handle_request();
}

void session::handle_request() {
    auto& req = parser_->get();
    const auto& cfg = *rt_->cfg;

    std::size_t field_count = 0;
    for (auto it = req.begin(); it != req.end(); ++it) {
        ++field_count;
    }
    if (field_count > cfg.client.max_headers) {
        send_local(make_error_reply(http::status::request_header_fields_too_large,
                                    "too many request header fields", req.version(), false));
        return;
    }

    client_version_ = req.version();
    client_keep_alive_ = req.keep_alive() && !draining_;
    head_request_ = req.method() == http::verb::head;
    send_continue_ = false;
    if (auto expect = req.find(http::field::expect); expect != req.end()) {
        if (!beast::iequals(expect->value(), "100-continue")) {
            send_local(make_error_reply(http::status::expectation_failed, "unsupported expectation",
                                        req.version(), false));
            return;
        }
        // tollgate answers the expectation itself, once it has decided to
        // forward; the upstream then gets an ordinary request.
        send_continue_ = req.version() >= 11 && !parser_->is_done();
        req.erase(http::field::expect);
    }

    // Framing is regenerated from what the parser saw, never copied.
    const bool chunked = parser_->chunked();
    const auto length = parser_->content_length();
    request_has_body_ = chunked || length.value_or(0) > 0;
    proxy::strip_hop_by_hop(req);
    proxy::add_forwarding_headers(req, peer_ip_, false);
    req.version(11);
    if (chunked) {
        req.chunked(true);
    } else if (length) {
        req.content_length(*length);
    }

    upstream_group_ = rt_->default_upstream;
    retried_ = false;
    response_started_ = false;
    do_acquire_upstream();
}

void session::do_acquire_upstream() {
    owner_.pool->acquire(upstream_group_,
                         beast::bind_front_handler(&session::on_upstream, shared_from_this()));
}

void session::on_upstream(error_code ec, proxy::upstream_pool::lease conn) {
    if (closed_) {
        return;  // the lease closes its connection
    }
    if (ec) {
        upstream_failed(ec, true);
        return;
    }
    upstream_ = std::move(conn);
    do_write_request_header();
}

void session::do_write_request_header() {
    req_sr_.emplace(parser_->get());
    upstream_->stream.expires_after(rt_->cfg->upstream.response_timeout);
    http::async_write_header(
        upstream_->stream, *req_sr_,
        beast::bind_front_handler(&session::on_write_request_header, shared_from_this()));
}

void session::on_write_request_header(error_code ec, std::size_t) {
    if (ec) {
        upstream_failed(ec, true);
        return;
    }
    if (send_continue_) {
        send_continue_ = false;
        stream_.expires_after(rt_->cfg->client.body_timeout);
        asio::async_write(
            stream_, asio::buffer(continue_line.data(), continue_line.size()),
            beast::bind_front_handler(&session::on_continue_sent, shared_from_this()));
        return;
    }
    do_read_request_body();
}

void session::on_continue_sent(error_code ec, std::size_t) {
    if (ec) {
        close();
        return;
    }
    do_read_request_body();
}

// Relay the request body through one fixed buffer: read some, write it all,
// repeat. An empty body still takes one pass to finish the serializer.
void session::do_read_request_body() {
    auto& body = parser_->get().body();
    if (parser_->is_done()) {
        body.data = nullptr;
        body.size = 0;
        body.more = false;
        do_write_request_body();
        return;
    }
    if (!body_buf_) {
        body_buf_ = std::make_unique<std::array<char, 32 * 1024>>();
    }
    body.data = body_buf_->data();
    body.size = body_buf_->size();
    stream_.expires_after(rt_->cfg->client.body_timeout);
    http::async_read_some(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&session::on_read_request_body, shared_from_this()));
}

void session::on_read_request_body(error_code ec, std::size_t) {
    if (ec == http::error::need_buffer) {
        ec = {};
    }
    if (ec) {
        upstream_.close();
        client_keep_alive_ = false;
        if (ec == http::error::body_limit) {
            send_local(make_error_reply(http::status::payload_too_large, "request body too large",
                                        11, false));
        } else if (ec == beast::error::timeout || is_disconnect(ec) ||
                   ec == asio::error::operation_aborted) {
            // A body that stalls past client.body_timeout: the stream has
            // closed the socket already, so there is nobody left to answer.
            close();
        } else {
            send_local(
                make_error_reply(http::status::bad_request, "malformed request body", 11, false));
        }
        return;
    }
    auto& body = parser_->get().body();
    body.size = body_buf_->size() - body.size;
    body.data = body_buf_->data();
    body.more = !parser_->is_done();
    if (body.size == 0) {
        // No data: a null buffer lets the serializer finish with the last
        // chunk alone instead of an empty chunk (which is a terminator too).
        body.data = nullptr;
    }
    if (body.size == 0 && body.more) {
        // Only framing was parsed (a chunk header): read on. An empty piece
        // must not reach a chunked serializer, where it would end the body.
        do_read_request_body();
        return;
    }
    do_write_request_body();
}

void session::do_write_request_body() {
    upstream_->stream.expires_after(rt_->cfg->upstream.response_timeout);
    http::async_write(
        upstream_->stream, *req_sr_,
        beast::bind_front_handler(&session::on_write_request_body, shared_from_this()));
}

void session::on_write_request_body(error_code ec, std::size_t) {
    if (ec == http::error::need_buffer) {
        ec = {};
    }
    if (ec) {
        upstream_failed(ec, true);
        return;
    }
    if (!parser_->is_done() && !req_sr_->is_done()) {
        do_read_request_body();
        return;
    }
    do_read_response_header();
}

// Wait up to upstream.response_timeout for the response header.
void session::do_read_response_header() {
    res_parser_.emplace();
    res_parser_->header_limit(max_response_header_bytes);
    res_parser_->body_limit(boost::none);
    if (head_request_) {
        res_parser_->skip(true);
    }
    upstream_->stream.expires_after(rt_->cfg->upstream.response_timeout);
    http::async_read_header(
        upstream_->stream, upstream_->buffer, *res_parser_,
        beast::bind_front_handler(&session::on_read_response_header, shared_from_this()));
}

void session::on_read_response_header(error_code ec, std::size_t) {
    if (ec) {
        // A pooled connection the server closed while idle fails here with
        // nothing received; a request without a body can safely go again.
        const bool retryable =
            upstream_.reused() && !retried_ && !request_has_body_ && is_disconnect(ec);
        if (retryable) {
            retried_ = true;
            upstream_.close();
            do_acquire_upstream();
            return;
        }
        upstream_failed(ec, true);
        return;
    }
    auto& res = res_parser_->get();
    const unsigned status = res.result_int();
    if (status >= 100 && status < 200 && status != 101) {
        // Interim responses are not relayed (tollgate answers 100-continue itself).
        do_read_response_header();
        return;
    }
    if (status == 101) {
        upstream_failed(http::error::bad_status, false);
        return;
    }

    upstream_keep_alive_ = res.keep_alive();
    const bool chunked = res_parser_->chunked();
    const auto length = res_parser_->content_length();
    header_only_response_ = head_request_ || status == 204 || status == 304;
    const bool until_close = !header_only_response_ && !chunked && !length;
    if (until_close) {
        upstream_keep_alive_ = false;
    }
    proxy::strip_hop_by_hop(res);
    // An HTTP/1.0 client needs a 1.0 response to see `Connection: keep-alive`.
    res.version(client_version_ >= 11 ? 11 : 10);
    if (!header_only_response_) {
        if (chunked || until_close) {
            // HTTP/1.0 clients cannot read chunks: they get the body until close.
            if (client_version_ >= 11) {
                res.chunked(true);
            } else {
                client_keep_alive_ = false;
            }
        } else {
            res.content_length(*length);
        }
    }
    if (draining_ || owner_.gw.draining()) {
        client_keep_alive_ = false;
    }
    res.keep_alive(client_keep_alive_);
    do_write_response_header();
}

void session::do_write_response_header() {
    response_started_ = true;
    res_sr_.emplace(res_parser_->get());
    stream_.expires_after(rt_->cfg->client.body_timeout);
    http::async_write_header(
        stream_, *res_sr_,
        beast::bind_front_handler(&session::on_write_response_header, shared_from_this()));
}

void session::on_write_response_header(error_code ec, std::size_t) {
    if (ec) {
        close();  // client went away; the upstream connection is not reusable
        return;
    }
    if (header_only_response_) {
        finish_exchange();
        return;
    }
    do_read_response_body();
}

void session::do_read_response_body() {
    auto& body = res_parser_->get().body();
    if (res_parser_->is_done()) {
        body.data = nullptr;
        body.size = 0;
        body.more = false;
        do_write_response_body();
        return;
    }
    if (!body_buf_) {
        body_buf_ = std::make_unique<std::array<char, 32 * 1024>>();
    }
    body.data = body_buf_->data();
    body.size = body_buf_->size();
    upstream_->stream.expires_after(rt_->cfg->upstream.response_timeout);
    http::async_read_some(
        upstream_->stream, upstream_->buffer, *res_parser_,
        beast::bind_front_handler(&session::on_read_response_body, shared_from_this()));
}

void session::on_read_response_body(error_code ec, std::size_t) {
    if (ec == http::error::need_buffer) {
        ec = {};
    }
    if (ec) {
        // The response has started: the only honest signal left is to cut
        // the client connection so it sees the truncation.
        close();
        return;
    }
    auto& body = res_parser_->get().body();
    body.size = body_buf_->size() - body.size;
    body.data = body_buf_->data();
    body.more = !res_parser_->is_done();
    if (body.size == 0) {
        // No data: a null buffer lets the serializer finish with the last
        // chunk alone instead of an empty chunk (which is a terminator too).
        body.data = nullptr;
    }
    if (body.size == 0 && body.more) {
        do_read_response_body();  // as for the request: never send an empty chunk
        return;
    }
    do_write_response_body();
}

void session::do_write_response_body() {
    stream_.expires_after(rt_->cfg->client.body_timeout);
    http::async_write(
        stream_, *res_sr_,
        beast::bind_front_handler(&session::on_write_response_body, shared_from_this()));
}

void session::on_write_response_body(error_code ec, std::size_t) {
    if (ec == http::error::need_buffer) {
        ec = {};
    }
    if (ec) {
        close();
        return;
    }
    if (!res_parser_->is_done() && !res_sr_->is_done()) {
        do_read_response_body();
        return;
    }
    finish_exchange();
}

void session::finish_exchange() {
    if (upstream_keep_alive_ && res_parser_->is_done() && parser_->is_done()) {
        upstream_.recycle();
    } else {
        upstream_.close();
    }
    req_sr_.reset();
    res_sr_.reset();
    res_parser_.reset();
    const bool keep = client_keep_alive_ && parser_->is_done();
    parser_.reset();
    rt_.reset();
    if (!keep) {
        lingering_close();
        return;
    }
    do_wait_for_request();
}

// Closing a socket with unread request bytes makes the kernel send a reset,
// which can destroy the reply we just wrote before the client reads it. So:
// stop sending, drain what the client still sends for a short while, close.
void session::lingering_close() {
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    upstream_.close();
    linger_budget_ = 1024 * 1024;
    stream_.expires_after(std::chrono::seconds(2));
    do_linger();
}

void session::do_linger() {
    if (!body_buf_) {
        body_buf_ = std::make_unique<std::array<char, 32 * 1024>>();
    }
    stream_.async_read_some(asio::buffer(*body_buf_),
                            [self = shared_from_this()](error_code ec, std::size_t n) {
                                if (ec || n >= self->linger_budget_) {
                                    self->close();
                                    return;
                                }
                                self->linger_budget_ -= n;
                                self->do_linger();
                            });
}

void session::upstream_failed(error_code ec, bool timeout_is_504) {
    upstream_.close();
    if (response_started_) {
        close();
        return;
    }
    // The request body may be half read; the connection cannot carry another request.
    const bool keep = client_keep_alive_ && parser_ && parser_->is_done();
    const unsigned version = client_version_;
    if (timeout_is_504 && ec == beast::error::timeout) {
        send_local(
            make_error_reply(http::status::gateway_timeout, "upstream timeout", version, keep));
    } else {
        send_local(
            make_error_reply(http::status::bad_gateway, "upstream unavailable", version, keep));
    }
}

void session::send_local(local_response res) {
    if (closed_) {
        return;
    }
    // A request whose body was not read cannot be followed by another one.
    if (!parser_ || !parser_->is_done() || draining_ || owner_.gw.draining()) {
        res.keep_alive(false);
    }
    local_.emplace(std::move(res));
    stream_.expires_after(rt_ ? rt_->cfg->client.body_timeout : std::chrono::seconds(10));
    http::async_write(stream_, *local_,
                      beast::bind_front_handler(&session::on_local_sent, shared_from_this()));
}

void session::on_local_sent(error_code ec, std::size_t) {
    const bool keep = !ec && local_->keep_alive();
    local_.reset();
    if (ec) {
        close();
        return;
    }
    if (!keep) {
        lingering_close();
        return;
    }
    parser_.reset();
    rt_.reset();
    do_wait_for_request();
}

}  // namespace tollgate::server
