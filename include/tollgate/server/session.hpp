#pragma once
/// @file session.hpp
/// One client connection and the exchanges it carries, one at a time:
/// read the header, decide, forward to an upstream connection from the
/// worker's pool, relay the response, repeat while both sides keep alive.
///
/// A session lives on its worker's io_context only; every handler binds
/// shared_from_this(). Bodies are streamed through fixed buffers
/// (`buffer_body`), so memory per exchange does not grow with body size.

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>

#include "tollgate/admin/metrics.hpp"
#include "tollgate/http/local_reply.hpp"
#include "tollgate/keying/key_resolver.hpp"
#include "tollgate/limit/algorithms.hpp"
#include "tollgate/limit/concurrency.hpp"
#include "tollgate/net.hpp"
#include "tollgate/proxy/flat_write.hpp"
#include "tollgate/proxy/framing.hpp"
#include "tollgate/proxy/parser.hpp"
#include "tollgate/proxy/stream.hpp"
#include "tollgate/proxy/upstream_pool.hpp"
#include "tollgate/server/gateway.hpp"
#include "tollgate/store/rate_store.hpp"

namespace tollgate::server {

class worker;

/// Reads from a client stream and shows every byte read to a chunked body's
/// line check before the reader (Beast's parser) sees it: a misplaced line
/// ending fails the read with `bad_chunk` (answered 400) instead of leaving
/// Beast waiting for a CRLF that never comes.
class line_checked_reader {
public:
    using executor_type = proxy::stream::executor_type;
    line_checked_reader(proxy::stream& next, proxy::chunked_line_check& check)
        : next_(next), check_(check) {}
    executor_type get_executor() const { return next_.get_executor(); }

    template <class MutableBuffers, class Handler>
    void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
        next_.async_read_some(
            buffers, [buffers, check = &check_, handler = std::forward<Handler>(handler)](
                         error_code ec, std::size_t n) mutable {
                std::size_t left = ec ? 0 : n;
                for (auto it = asio::buffer_sequence_begin(buffers);
                     left > 0 && it != asio::buffer_sequence_end(buffers); ++it) {
                    const asio::const_buffer piece = *it;
                    const std::size_t take = std::min(left, piece.size());
                    if (!check->feed({static_cast<const char*>(piece.data()), take})) {
                        ec = http::error::bad_chunk;
                        break;
                    }
                    left -= take;
                }
                handler(ec, n);
            });
    }

private:
    proxy::stream& next_;
    proxy::chunked_line_check& check_;
};

class session : public std::enable_shared_from_this<session> {
public:
    /// `tls`: the listener's TLS context, or null for plain TCP.
    session(proxy::socket_type socket, worker& owner,
            std::shared_ptr<asio::ssl::context> tls = nullptr);
    ~session();
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    void start();
    /// Shutdown: an idle connection closes now; a busy one answers its
    /// current request with `Connection: close`, then closes.
    void drain();
    /// Closes the client connection (and with it any exchange) at once.
    void abort();
    /// From worker::watch_later(): still waiting for the upstream's
    /// response head, so start watching for a client that leaves.
    void on_watch_due();

private:
    using request_parser = proxy::header_only_parser<true, http::buffer_body>;
    using response_parser = proxy::header_only_parser<false, http::buffer_body>;

    // Between requests.
    void wait_for_next_request();
    void do_wait_for_request();
    void on_first_bytes(error_code ec, std::size_t n);
    void do_read_header();
    void read_request_head();
    void on_request_head_bytes(error_code ec, std::size_t n);
    void parse_request_head(std::string_view head);
    void refuse_head(std::string_view head, const proxy::framing_error& bad);

    // Decision: route, key, slot, rate token.
    void handle_request();
    void admit();
    void wait_for_slot(const std::shared_ptr<limit::concurrency_limiter>& slots);
    void on_slot(std::optional<limit::concurrency_limiter::slot> granted);
    void decide_rate();
    void on_rate_decision(const store::store_result& result);
    void refuse(admin::reason_kind reason);
    void reject(http::status status, std::string_view message, admin::reason_kind reason);
    void record(admin::decision_kind decision, admin::reason_kind reason);
    void forward(admin::reason_kind reason);
    /// X-Forwarded-Proto for the upstream (key_resolver::forwarded_proto):
    /// a trusted proxy's own, else the scheme the client used.
    std::string_view forwarded_proto() const;

    // Upstream connection.
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
    bool answered_early();
    unsigned early_final_status();
    void take_early_answer();
    void watch_upstream();
    void on_upstream_readable(std::uint32_t generation, error_code ec);
    void stop_watching_upstream();

    // Response: header then streamed body, upstream -> client.
    void do_read_response_header();
    void read_response_head();
    void on_response_head_bytes(error_code ec, std::size_t n);
    void parse_response_head(std::string_view head);
    bool relay_whole_response(std::string_view head, const proxy::head_info& info);
    void on_response_head();
    void relay_interim(response_parser::value_type& res);
    void write_whole_response(std::size_t body_bytes);
    void do_write_response_header();
    void on_write_response_header(error_code ec, std::size_t n);
    void do_read_response_body();
    void on_read_response_body(error_code ec, std::size_t n);
    void do_write_response_body();
    void on_write_response_body(error_code ec, std::size_t n);
    void finish_exchange();

    // Tunnel (after `101 Switching Protocols`): bytes both ways until both
    // sides have closed, or nothing moved for client.tunnel_idle_timeout.
    bool select_upgrade(const route_config* route);
    void start_tunnel();
    void on_tunnel_head_sent(error_code ec, std::size_t n);
    void tunnel_read(std::size_t from);
    void on_tunnel_read(std::size_t from, error_code ec, std::size_t n);
    void on_tunnel_written(std::size_t from, error_code ec, std::size_t n);
    void tunnel_side_ended(std::size_t from);
    void end_tunnel();
    void arm_tunnel_idle();
    proxy::stream& tunnel_end(std::size_t side);

    // The waits of every exchange (the next request's first byte, the
    // upstream's response head) arm no timer of their own: they set a
    // deadline that one timer per session, re-armed only when it fires or
    // must fire sooner, checks. A busy keep-alive connection then costs a
    // timer operation every timeout or so, not two per request.
    enum class wait_kind : std::uint8_t { none, request, response_head };
    void begin_wait(wait_kind kind, std::chrono::steady_clock::duration timeout);
    void end_wait() { waiting_ = wait_kind::none; }
    void arm_wait_timer();
    void on_wait_timer(error_code ec);

    // Replies tollgate makes itself, and failure paths.
    template <class Handler>
    void write_flat(proxy::stream& to, std::chrono::nanoseconds timeout, Handler&& done);
    void send_local(local_response res);
    bool may_keep_alive() const;
    void write_local(unsigned status, bool keep_alive);
    void on_local_sent(error_code ec, std::size_t n);
    enum class upstream_phase { connect, exchange };
    void upstream_failed(error_code ec, upstream_phase phase);
    void set_rate_limit_fields(http::fields& head) const;
    void respond_error(http::status status, std::string_view message);
    void log_access(unsigned status);
    void close();
    void watch_client();
    void read_watched();
    void stop_watching();
    void lingering_close();
    void keep_request_line(std::string_view head);
    void answer_plain_http();
    void linger_tcp();
    void do_linger();

    std::shared_ptr<const runtime> rt_;
    worker& owner_;
    std::shared_ptr<asio::ssl::context> tls_ctx_;  ///< the context this connection started with
    proxy::stream stream_;
    beast::flat_buffer buffer_;
    asio::steady_timer header_timer_;
    bool header_timed_out_ = false;
    proxy::head_start_check head_check_{proxy::head_limits{}};  ///< the request head so far
    asio::steady_timer wait_timer_;                             ///< see begin_wait()
    std::chrono::steady_clock::time_point wait_deadline_{};
    wait_kind waiting_ = wait_kind::none;
    bool wait_timer_armed_ = false;
    bool response_timed_out_ = false;         ///< the response-head wait ran out
    proxy::head_start_check response_check_;  ///< the response head so far
    std::string peer_ip_;
    ip_address peer_addr_;

    // The current exchange.
    /// Chunk extensions of the request body, checked as Beast parses each
    /// chunk header (Beast keeps a reference: it lives as long as parser_).
    struct chunk_header_check {
        proxy::chunk_extension_budget budget;
        void operator()(std::uint64_t, std::string_view extensions, error_code& ec) {
            if (budget.add(extensions)) {
                ec = http::error::bad_chunk_extension;
            }
        }
    };
    chunk_header_check chunk_check_;
    proxy::chunked_line_check chunk_lines_;  ///< a chunked request body's line endings
    line_checked_reader body_reader_;        ///< stream_ through chunk_lines_
    /// A chunked response body's line endings, and the upstream's stream
    /// through them (set for each chunked response).
    proxy::chunked_line_check response_chunk_lines_;
    std::optional<line_checked_reader> response_body_reader_;
    std::string path_scratch_;  ///< normalised path, when it differs from the target
    std::optional<request_parser> parser_;
    std::optional<http::request_serializer<http::buffer_body>> req_sr_;
    std::optional<response_parser> res_parser_;
    std::optional<http::response_serializer<http::buffer_body>> res_sr_;
    bool local_keep_alive_ = false;  ///< after the local reply being written
    std::shared_ptr<const proxy::upstream_group> upstream_group_;
    proxy::upstream_pool::lease upstream_;
    std::unique_ptr<std::array<char, 32 * 1024>> body_buf_;
    proxy::write_scratch write_scratch_;  ///< see proxy/flat_write.hpp
    /// write_flat() completions run inline, one inside the other while
    /// pipelined requests are answered from the buffer: bounded, then posted.
    unsigned inline_writes_ = 0;
    unsigned client_version_ = 11;
    bool client_keep_alive_ = true;
    bool upstream_keep_alive_ = true;
    /// The request head's own say (every Connection field), before draining.
    bool request_keep_alive_ = true;
    bool send_continue_ = false;
    bool request_has_body_ = false;
    std::size_t linger_budget_ = 0;
    bool response_started_ = false;
    bool whole_request_ = false;      ///< no body: forwarded by render_forwarded_request
    unsigned response_status_ = 0;    ///< the upstream's final status
    bool response_complete_ = false;  ///< written whole by write_whole_response()
    bool head_request_ = false;
    bool header_only_response_ = false;
    bool retried_ = false;
    /// The upstream answered before the whole request went out (answered_early).
    bool request_cut_ = false;

    // Upgrade: what the client asked for (allowed protocols only), and the
    // tunnel once the upstream switched.
    std::string upgrade_;  ///< `Upgrade` value forwarded; empty = no upgrade
    limit::tunnel_limiter::ticket tunnel_ticket_;
    struct tunnel_pipe {
        std::array<char, 16 * 1024> buf;
        bool ended = false;    ///< its source closed (EOF)
        bool writing = false;  ///< a write of what it read is pending
    };
    std::unique_ptr<std::array<tunnel_pipe, 2>> pipes_;  ///< [0] client->upstream, [1] back
    std::chrono::steady_clock::time_point tunnel_active_{};
    bool tunnel_ending_ = false;  ///< end_tunnel() took over: pipes stop

    // The decision for the current exchange.
    int route_index_ = -1;
    resolved_key key_;
    admin::key_kind key_kind_ = admin::key_kind::none;
    bool decided_ = false;  ///< record() ran for this exchange
    admin::decision_kind decision_kind_ = admin::decision_kind::allowed;
    admin::reason_kind reason_ = admin::reason_kind::ok;
    std::optional<limit::decision> decision_;
    limit::concurrency_limiter::slot slot_;  ///< held until the last response byte
    std::shared_ptr<limit::concurrency_limiter> queue_;
    limit::concurrency_limiter::waiter_id waiter_ = 0;
    std::chrono::steady_clock::time_point t_start_{};
    std::chrono::steady_clock::time_point t_upstream_{};  ///< forwarded at; unset: not forwarded
    std::uint64_t bytes_in_ = 0;
    std::uint64_t bytes_out_ = 0;
    /// A request refused before Beast parsed its head: its method and target
    /// as the request line says, for the access log (see keep_request_line).
    std::string refused_method_;
    std::string refused_target_;
    bool logged_ = false;
    bool watching_ = false;  ///< a peeking receive is pending on the client socket
    /// Waiting for the response head with nothing else pending on the client
    /// socket: the worker may have us watch it (on_watch_due).
    bool watch_wanted_ = false;
    char peek_ = 0;
    bool upstream_watching_ = false;  ///< a peeking receive is pending on the upstream socket
    std::uint32_t upstream_watch_generation_ = 0;  ///< tells a stale watch's completion apart
    bool upstream_watch_done_ = false;  ///< the upstream's answer waits until the body is sent
    char upstream_peek_ = 0;
    bool body_io_pending_ = false;  ///< a request body read or write is pending

    // Connection state.
    bool idle_ = false;      ///< waiting for the next request
    bool draining_ = false;  ///< close after the current exchange
    bool closed_ = false;
    /// close() resets the client connection (SO_LINGER 0, no shutdown): a
    /// response cut after it started must not end like a complete one.
    bool reset_client_ = false;
    /// The TLS layer is not used (any more): a plain request on the TLS port,
    /// or a lingering close after the TLS shutdown. Reads go to the TCP layer.
    bool tcp_only_ = false;
    bool first_request_ = true;
};

}  // namespace tollgate::server
