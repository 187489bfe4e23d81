#include "tollgate/server/session.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <ctime>
#include <utility>

#include <boost/range/iterator_range.hpp>

#include "tollgate/http/date.hpp"
#include "tollgate/limit/headers.hpp"
#include "tollgate/proxy/flat_write.hpp"
#include "tollgate/proxy/framing.hpp"
#include "tollgate/proxy/headers.hpp"
#include "tollgate/server/worker.hpp"

namespace tollgate::server {
namespace {

constexpr std::size_t max_response_header_bytes = 64 * 1024;
constexpr std::string_view continue_line = "HTTP/1.1 100 Continue\r\n\r\n";

// RFC 3339 UTC with milliseconds, for the access log.
std::string format_utc_now() {
    const auto now = std::chrono::system_clock::now();
    const std::time_t secs = std::chrono::system_clock::to_time_t(now);
    const auto millis =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() %
        1000;
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[64];  // roomy enough for any int the compiler imagines
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(millis));
    return buf;
}

bool is_disconnect(const error_code& ec) {
    return ec == asio::error::eof || ec == http::error::end_of_stream ||
           ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
           ec == asio::error::connection_aborted || ec == http::error::partial_message;
}

/// RFC 9110 9.2.2: the methods a proxy may send again by itself. A server
/// may have acted on a POST or PATCH before its connection died.
bool idempotent(http::verb method) {
    switch (method) {
        case http::verb::get:
        case http::verb::head:
        case http::verb::options:
        case http::verb::trace:
        case http::verb::put:
        case http::verb::delete_:
            return true;
        default:
            return false;
    }
}

/// What `buffer` holds, as characters.
std::string_view bytes_of(const beast::flat_buffer& buffer) {
    const auto data = buffer.data();
    return {static_cast<const char*>(data.data()), data.size()};
}

}  // namespace

namespace {

proxy::stream make_stream(proxy::socket_type socket, asio::ssl::context* tls) {
    if (tls) {
        return proxy::stream(std::move(socket), *tls);
    }
    return proxy::stream(std::move(socket));
}

}  // namespace

session::session(proxy::socket_type socket, worker& owner, std::shared_ptr<asio::ssl::context> tls)
    : owner_(owner),
      tls_ctx_(std::move(tls)),
      stream_(make_stream(std::move(socket), tls_ctx_.get())),
      header_timer_(stream_.get_executor()),
      wait_timer_(stream_.get_executor()),
      body_reader_(stream_, chunk_lines_) {
    owner_.sessions_.insert(this);
    owner_.session_started();
    error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec && ep.address().is_v4()) {
        peer_addr_ = ip_address::from_v4(ep.address().to_v4().to_bytes());
    } else if (!ec) {
        peer_addr_ = ip_address::from_v6(ep.address().to_v6().to_bytes());
    }
    // As the key names it: a client that reached an IPv6 listener over IPv4
    // (::ffff:192.0.2.1) is 192.0.2.1 in X-Forwarded-For too.
    peer_ip_ = ec ? std::string("0.0.0.0") : peer_addr_.to_string();
    stream_.socket().set_option(tcp::no_delay(true), ec);
}

session::~session() {
    owner_.sessions_.erase(this);
    owner_.session_ended();
    owner_.gw.client_connections--;
}

// Writes write_scratch_.flat to `to`, then calls `done(ec, bytes)`. What the
// socket takes at once is sent on the spot, without a timer or a trip through
// the event loop (the common case: a reply that fits the socket buffer); the
// rest, if any, is written asynchronously within `timeout`.
template <class Handler>
void session::write_flat(proxy::stream& to, std::chrono::nanoseconds timeout, Handler&& done) {
    // Deep enough to skip the event loop for a burst of pipelined requests,
    // shallow enough that a buffer full of them cannot exhaust the stack.
    constexpr unsigned max_inline_writes = 8;
    const std::string& flat = write_scratch_.flat;
    const std::size_t sent = to.send_now(flat);
    if (sent == flat.size()) {
        if (inline_writes_ < max_inline_writes) {
            ++inline_writes_;
            done(error_code{}, sent);
            --inline_writes_;
        } else {
            asio::post(to.get_executor(), [done = std::forward<Handler>(done), sent]() mutable {
                done(error_code{}, sent);
            });
        }
        return;
    }
    to.expires_after(timeout);
    asio::async_write(to, asio::buffer(flat.data() + sent, flat.size() - sent),
                      [done = std::forward<Handler>(done), sent](
                          error_code ec, std::size_t n) mutable { done(ec, sent + n); });
}

namespace {

/// Every Expect field, and every element of each list, is 100-continue
/// (RFC 9110 10.1.1): one expectation tollgate cannot meet is a 417, not
/// skipped because another field came first. An empty Expect names none.
bool only_100_continue(const http::request_header<>& req) {
    const auto [first, last] = req.equal_range(http::field::expect);
    for (auto it = first; it != last; ++it) {
        bool named = false;
        bool met = true;
        proxy::for_each_token(it->value(), [&](std::string_view expectation) {
            named = true;
            met = met && beast::iequals(expectation, "100-continue");
        });
        if (!named || !met) {
            return false;
        }
    }
    return true;
}

}  // namespace

void session::start() {
    draining_ = owner_.gw.draining();
    if (!stream_.is_tls()) {
        do_wait_for_request();
        return;
    }
    // The handshake is part of the first header's time.
    stream_.expires_after(owner_.runtime_now()->cfg->client.header_timeout);
    stream_.tls().async_handshake(
        asio::ssl::stream_base::server, [self = shared_from_this()](error_code ec) {
            if (ec && ec != asio::error::operation_aborted) {  // not a shutdown's close
                self->owner_.gw.metrics.shard(self->owner_.index).tls_handshake_failed();
            }
            if (ec.category() == asio::error::get_ssl_category() &&
                ERR_GET_LIB(ec.value()) == ERR_LIB_SSL &&
                ERR_GET_REASON(ec.value()) == SSL_R_HTTP_REQUEST) {
                self->answer_plain_http();
                return;
            }
            if (ec) {
                self->close();
                return;
            }
            self->do_wait_for_request();
        });
}

// A plain HTTP request on the TLS port: OpenSSL found a method where the
// ClientHello should be. Answered as nginx does, in plain text on the TCP
// socket (there is no TLS session to answer through), then closed.
void session::answer_plain_http() {
    tcp_only_ = true;
    auto res = make_error_reply(http::status::bad_request,
                                "plain HTTP request sent to the TLS port", 11, false);
    render_local(res, write_scratch_.flat);
    owner_.gw.metrics.shard(owner_.index).response_status(res.result_int());
    stream_.expires_after(owner_.runtime_now()->cfg->client.header_timeout);
    asio::async_write(stream_.tcp_layer(), asio::buffer(write_scratch_.flat),
                      [self = shared_from_this()](error_code ec, std::size_t) {
                          if (ec) {
                              self->close();
                              return;
                          }
                          self->lingering_close();
                      });
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
    if (waiter_ != 0 && queue_) {
        queue_->cancel(waiter_);
        waiter_ = 0;
    }
    slot_.release();
    tunnel_ticket_.release();
    if (parser_ && !logged_) {
        // The exchange was cut short. Once the response had started, the
        // client saw its status line: that is the status it counts as.
        const unsigned status = response_started_ ? response_status_ : 0;
        if (status != 0) {
            auto& shard = owner_.gw.metrics.shard(owner_.index);
            shard.request_duration.observe(
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start_).count());
            shard.response_status(status);
        }
        log_access(status);
    }
    error_code ignored;
    header_timer_.cancel();
    waiting_ = wait_kind::none;
    if (wait_timer_armed_) {
        wait_timer_.cancel();
    }
    if (!reset_client_) {
        stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    }
    stream_.socket().close(ignored);
    // An upstream operation may be pending (the client left while the
    // upstream works): abort it, but keep its stream and buffer alive until
    // this session, which its handler holds, goes away.
    upstream_.abort();
}

// After a response: the client reads it before it sends the next request,
// so a receive right away finds nothing (Asio tries one before it waits: a
// failed system call per request). Started once the worker has handled the
// other events it has in hand, the receive often finds the request there.
void session::wait_for_next_request() {
    if (buffer_.size() > 0 || stream_.is_tls()) {
        // Pipelined, or TLS, whose record layer may hold the request already.
        do_wait_for_request();
        return;
    }
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
        if (!self->closed_) {
            self->do_wait_for_request();
        }
    });
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
    const auto& c = owner_.runtime_now()->cfg->client;
    stream_.expires_never();
    begin_wait(wait_kind::request, first_request_ ? c.header_timeout : c.idle_timeout);
    stream_.async_read_some(
        buffer_.prepare(4096),
        beast::bind_front_handler(&session::on_first_bytes, shared_from_this()));
}

void session::on_first_bytes(error_code ec, std::size_t n) {
    idle_ = false;
    end_wait();
    if (ec || n == 0 || closed_) {
        // Idle timeout, client closed, or drain: nothing was asked, nothing to answer.
        close();
        return;
    }
    buffer_.commit(n);
    do_read_header();
}

// Read the whole head within client.header_timeout of its first byte. The
// raw bytes are checked strictly (proxy/framing) before Beast parses them.
void session::do_read_header() {
    rt_ = owner_.runtime_now();
    const auto& c = rt_->cfg->client;
    key_kind_ = admin::key_kind::none;
    route_index_ = -1;
    client_version_ = 11;
    head_request_ = false;
    logged_ = false;
    // The exchange's duration (metric and access log) counts from the head's
    // first byte, as nginx's $request_time does: a slow head is part of it.
    t_start_ = std::chrono::steady_clock::now();
    t_upstream_ = {};  // unset until forwarded
    decided_ = false;
    decision_.reset();
    response_started_ = false;
    response_status_ = 0;
    bytes_in_ = 0;
    bytes_out_ = 0;
    refused_method_.clear();
    refused_target_.clear();
    // Bounded: a chunk header or extension that never ends must not grow
    // the buffer without limit (Beast then fails the read, answered 400).
    buffer_.max_size(std::max<std::size_t>(c.max_header_bytes, 64 * 1024));
    parser_.emplace();
    chunk_check_.budget = {};
    parser_->on_chunk_header(chunk_check_);
    parser_->header_limit(static_cast<std::uint32_t>(c.max_header_bytes));
    parser_->body_limit(c.max_body_bytes);
    header_timed_out_ = false;
    head_check_ = proxy::head_start_check({c.max_headers});
    if (buffer_.size() > 0) {
        // Most heads arrive whole with their first bytes: no timer needed.
        const std::string_view view = bytes_of(buffer_);
        const std::size_t end =
            proxy::find_head_end(view.substr(0, std::min(view.size(), c.max_header_bytes)));
        if (end != std::string_view::npos) {
            parse_request_head(view.substr(0, end));
            return;
        }
    }
    // A deadline of our own rather than the stream's: the stream closes its
    // socket on timeout, and we still want to answer 408 on it.
    stream_.expires_never();
    header_timer_.expires_after(c.header_timeout);
    header_timer_.async_wait([self = shared_from_this()](error_code ec) {
        if (!ec) {
            self->header_timed_out_ = true;
            error_code ignored;
            self->stream_.socket().cancel(ignored);
        }
    });
    read_request_head();
}

void session::read_request_head() {
    const std::string_view view = bytes_of(buffer_);
    // A refusal before the head is parsed (too large, malformed, too slow)
    // answers a HEAD without a body too.
    head_request_ = view.starts_with("HEAD ");
    const std::size_t max = rt_->cfg->client.max_header_bytes;
    const std::size_t end = view.empty()
                                ? std::string_view::npos
                                : proxy::find_head_end(view.substr(0, std::min(view.size(), max)));
    if (end != std::string_view::npos) {
        header_timer_.cancel();
        parse_request_head(view.substr(0, end));
        return;
    }
    if (view.size() >= max) {
        header_timer_.cancel();
        // A request line that alone fills the limit: its target is what is
        // too long (RFC 9112 3: 414), not the fields.
        if (view.substr(0, max).find('\n') == std::string_view::npos) {
            reject(http::status::uri_too_long, "request target too long",
                   admin::reason_kind::header_too_large);
            return;
        }
        keep_request_line(view);
        reject(http::status::request_header_fields_too_large, "request header too large",
               admin::reason_kind::header_too_large);
        return;
    }
    if (auto bad = head_check_.feed(view)) {
        header_timer_.cancel();
        refuse_head(view, *bad);
        return;
    }
    stream_.async_read_some(
        buffer_.prepare(std::min<std::size_t>(8192, max - view.size())),
        beast::bind_front_handler(&session::on_request_head_bytes, shared_from_this()));
}

void session::on_request_head_bytes(error_code ec, std::size_t n) {
    first_request_ = false;
    if (header_timed_out_) {
        // A whole request line is logged with the 408: which path a slow
        // client was after.
        keep_request_line(bytes_of(buffer_));
        reject(http::status::request_timeout, "request header timeout",
               admin::reason_kind::timeout);
        return;
    }
    if (ec) {
        header_timer_.cancel();
        close();  // the client went away mid-header
        return;
    }
    buffer_.commit(n);
    read_request_head();
}

void session::parse_request_head(std::string_view head) {
    first_request_ = false;
    head_request_ = head.starts_with("HEAD ");
    proxy::head_info info;
    if (auto bad = proxy::validate_request_head(head, {rt_->cfg->client.max_headers}, info)) {
        refuse_head(head, *bad);
        return;
    }
    request_keep_alive_ = proxy::keeps_alive(info);
    error_code ec;
    const std::size_t used = parser_->put(asio::buffer(head.data(), head.size()), ec);
    if (!ec && !parser_->is_header_done()) {
        ec = http::error::partial_message;
    }
    if (ec == http::error::body_limit) {
        keep_request_line(head);
        reject(http::status::payload_too_large, "request body too large",
               admin::reason_kind::body_too_large);
        return;
    }
    if (ec) {
        reject(http::status::bad_request, "malformed request", admin::reason_kind::bad_request);
        return;
    }
    buffer_.consume(used);
    handle_request();
}

void session::refuse_head(std::string_view head, const proxy::framing_error& bad) {
    keep_request_line(head);
    const auto reason =
        bad.status == 431 ? admin::reason_kind::header_too_large : admin::reason_kind::bad_request;
    reject(static_cast<http::status>(bad.status), bad.message, reason);
}

void session::handle_request() {
    auto& req = parser_->get();
    client_version_ = req.version();

    client_keep_alive_ = request_keep_alive_ && !draining_;
    request_cut_ = false;
    upgrade_.clear();
    head_request_ = req.method() == http::verb::head;
    send_continue_ = false;
    if (req.find(http::field::expect) != req.end()) {
        if (!only_100_continue(req)) {
            reject(http::status::expectation_failed, "unsupported expectation",
                   admin::reason_kind::bad_request);
            return;
        }
        // tollgate answers the expectation itself, once it has decided to
        // forward; the upstream then gets an ordinary request.
        send_continue_ = req.version() >= 11 && !parser_->is_done();
        req.erase(http::field::expect);
    }
    if (parser_->chunked()) {
        // What came with the head is checked now; the rest as it is read
        // (body_reader_).
        chunk_lines_ = {};
        if (!chunk_lines_.feed(bytes_of(buffer_))) {
            reject(http::status::bad_request, "malformed chunked body",
                   admin::reason_kind::bad_request);
            return;
        }
    }
    admit();
}

// Route, key, then the slot before the rate token (a refused slot burns no token).
void session::admit() {
    auto& req = parser_->get();
    const auto& cfg = *rt_->cfg;
    // Routes and ip_paths see the path as a backend would read it, so
    // `//login`, `/login;x` or an absolute-form target cannot dodge a route.
    const std::string_view path =
        proxy::normalize_path(proxy::request_path(req.target()), path_scratch_);
    // Without Host (HTTP/1.0), an absolute-form target names the host.
    std::string_view host = req[http::field::host];
    if (host.empty()) {
        host = proxy::request_authority(req.target());
    }
    route_index_ = rt_->match_route(host, path);
    const route_config* route = route_index_ >= 0 ? &cfg.routes[route_index_] : nullptr;

    request_facts facts;
    facts.peer = peer_addr_;
    facts.path = path;
    if (!rt_->keys.org_source_trusted(peer_addr_)) {
        // An untrusted peer cannot speak for an org: every instance goes,
        // before anything reads it, and the request is keyed as without one.
        req.erase(cfg.keying.org_header);
    }
    // The key comes from these fields: were one sent twice, tollgate would
    // count one value while the backend may act on the other.
    const auto repeated = [&req](auto field) {
        return field != req.end() && req.count(field->name_string()) > 1;
    };
    const auto org = req.find(cfg.keying.org_header);
    const auto auth = req.find(http::field::authorization);
    if (repeated(org) || repeated(auth)) {
        reject(http::status::bad_request,
               repeated(auth) ? "more than one Authorization" : "more than one org header",
               admin::reason_kind::bad_request);
        return;
    }
    // Nor may Connection name either: tollgate would key on a value that
    // is then stripped as hop-by-hop, and the backend would see a request
    // without it (anonymous, or of no org) under a bucket of its own.
    const auto named_in_connection = [&req](std::string_view name) {
        const auto fields = boost::make_iterator_range(req.equal_range(http::field::connection));
        return std::any_of(fields.begin(), fields.end(),
                           [&](const auto& f) { return proxy::list_contains(f.value(), name); });
    };
    if ((auth != req.end() && named_in_connection(auth->name_string())) ||
        (org != req.end() && named_in_connection(org->name_string()))) {
        reject(http::status::bad_request, "Connection names a field the key comes from",
               admin::reason_kind::bad_request);
        return;
    }
    if (org != req.end()) {
        facts.org_header = org->value();
    }
    if (auth != req.end()) {
        facts.authorization = auth->value();
    }
    std::string forwarded_for;
    for (const auto& f : boost::make_iterator_range(req.equal_range("X-Forwarded-For"))) {
        if (!forwarded_for.empty()) {
            forwarded_for += ',';
        }
        forwarded_for += f.value();
    }
    facts.forwarded_for = forwarded_for;
    key_ = rt_->keys.resolve(facts);
    key_kind_ = static_cast<admin::key_kind>(key_.type);

    if (select_upgrade(route)) {
        // A tunnel counts against the tunnel caps for as long as it is open.
        // Its handshake is a request like any other: it goes on below to a
        // completion slot (held until the upstream switches, or to the end
        // of a declined upgrade's response) and one rate token.
        auto ticket = owner_.gw.tunnels.try_open(key_.key, cfg.websocket.max_per_key,
                                                 cfg.websocket.max_tunnels);
        if (!ticket) {
            refuse(admin::reason_kind::tunnels);
            return;
        }
        tunnel_ticket_ = std::move(*ticket);
    }
    if (route && route->exempt) {
        forward(admin::reason_kind::exempt);
        return;
    }
    const auto& slots = route_index_ >= 0 ? rt_->route_slots[route_index_] : rt_->slots;
    if (!slots) {
        decide_rate();
        return;
    }
    if (auto granted = slots->try_acquire(key_.key)) {
        slot_ = std::move(*granted);
        decide_rate();
        return;
    }
    if (cfg.concurrency.queue_timeout.count() == 0) {
        refuse(admin::reason_kind::concurrency);
        return;
    }
    wait_for_slot(slots);
}

// Wait FIFO for a slot up to concurrency.queue_timeout. The grant arrives on
// the thread that released a slot, so it is posted back to this session.
void session::wait_for_slot(const std::shared_ptr<limit::concurrency_limiter>& slots) {
    const auto timeout = rt_->cfg->concurrency.queue_timeout;
    auto deadline =
        owner_.gw.clock.now() + std::chrono::duration_cast<std::chrono::nanoseconds>(timeout);
    std::weak_ptr<session> weak = shared_from_this();
    auto executor = stream_.get_executor();
    auto result =
        slots->enqueue(key_.key, deadline,
                       [weak, executor](std::optional<limit::concurrency_limiter::slot> granted) {
                           asio::post(executor, [weak, granted = std::move(granted)]() mutable {
                               if (auto self = weak.lock()) {
                                   self->on_slot(std::move(granted));
                               }
                               // else: the slot is destroyed here and returned at once
                           });
                       });
    if (result.granted) {
        slot_ = std::move(*result.granted);
        decide_rate();
        return;
    }
    queue_ = slots;
    waiter_ = result.id;
    header_timer_.expires_after(timeout);
    header_timer_.async_wait([self = shared_from_this()](error_code ec) {
        if (ec || self->waiter_ == 0) {
            return;
        }
        if (self->queue_->cancel(self->waiter_)) {
            self->waiter_ = 0;
            self->stop_watching();
            self->refuse(admin::reason_kind::concurrency);
        }
        // else: a slot was granted and is on its way to on_slot()
    });
    watch_client();  // a client that goes away while queued leaves the queue
}

void session::on_slot(std::optional<limit::concurrency_limiter::slot> granted) {
    waiter_ = 0;
    header_timer_.cancel();
    stop_watching();
    if (closed_) {
        return;  // the slot goes back as `granted` is destroyed
    }
    if (!granted) {
        refuse(admin::reason_kind::concurrency);
        return;
    }
    slot_ = std::move(*granted);
    decide_rate();
}

void session::decide_rate() {
    const route_config* route = route_index_ >= 0 ? &rt_->cfg->routes[route_index_] : nullptr;
    auto selection = rt_->rates.select(key_.key, route);
    if (!selection) {
        forward(admin::reason_kind::exempt);
        return;
    }
    // The completion holds the session: nothing else keeps it alive while
    // a remote store decides. It is made only if the store goes remote.
    const auto make_completion = [this] {
        return [self = shared_from_this()](store::store_result r) { self->on_rate_decision(r); };
    };
    auto result = owner_.store->check(selection->scope, key_.key, selection->policy,
                                      store::rate_store::completion_source{make_completion});
    if (result) {
        on_rate_decision(*result);
    }
}

void session::on_rate_decision(const store::store_result& result) {
    if (closed_) {
        return;
    }
    if (result.unavailable) {
        if (rt_->cfg->rate_limit.dry_run) {
            // dry_run never refuses, not for want of a store either.
            forward(admin::reason_kind::store_unavailable);
            return;
        }
        slot_.release();
        record(admin::decision_kind::rejected, admin::reason_kind::store_unavailable);
        auto res =
            make_error_reply(http::status::service_unavailable, "rate limit store unavailable",
                             client_version_, client_keep_alive_);
        res.set(http::field::retry_after,
                std::to_string(limit::retry_after_seconds(result.decision.retry_after)));
        send_local(std::move(res));
        return;
    }
    decision_ = result.decision;
    if (decision_->allowed) {
        forward(admin::reason_kind::ok);
        return;
    }
    if (rt_->cfg->rate_limit.dry_run) {
        // Counted and reported as it would be, but forwarded.
        decision_->allowed = true;
        decision_->retry_after = {};
        forward(admin::reason_kind::dry_run);
        return;
    }
    slot_.release();  // a refused token returns the slot at once
    refuse(admin::reason_kind::rate);
}

// 429: rate (with the bucket's headers) or concurrency (Retry-After: 1).
void session::refuse(admin::reason_kind reason) {
    slot_.release();
    tunnel_ticket_.release();
    record(admin::decision_kind::limited, reason);
    owner_.gw.refused_keys.refused(key_.key);
    if (closed_) {
        return;  // decided and counted, but nobody to tell
    }
    std::optional<limit::rate_limit_headers> limits;
    std::array<limit::header_field, limit::rate_limit_headers::max_fields> fields{};
    std::size_t count = 0;
    refusal_reply reply;
    if (reason == admin::reason_kind::rate && decision_) {
        reply.retry_after = limit::retry_after_seconds(decision_->retry_after);
        limits.emplace(*decision_, rt_->cfg->rate_limit.headers);
        limits->for_each([&](const limit::header_field& f) { fields[count++] = f; });
    }
    const limit::refusal_body body(reason == admin::reason_kind::rate ? limit::refusal_reason::rate
                                   : reason == admin::reason_kind::tunnels
                                       ? limit::refusal_reason::tunnels
                                       : limit::refusal_reason::concurrency,
                                   reply.retry_after);
    reply.version = client_version_ >= 11 ? 11 : 10;
    reply.keep_alive = client_keep_alive_ && may_keep_alive();
    reply.limits = std::span<const limit::header_field>(fields.data(), count);
    reply.body = body.view();
    reply.date = http_date_now();
    render_refusal(reply, write_scratch_.flat);
    write_local(429, reply.keep_alive);
}

// The request passed: regenerate its framing and send it upstream.
void session::forward(admin::reason_kind reason) {
    record(admin::decision_kind::allowed, reason);
    auto& req = parser_->get();
    // Framing is regenerated from what the parser saw, never copied.
    const bool chunked = parser_->chunked();
    const auto length = parser_->content_length();
    request_has_body_ = chunked || length.value_or(0) > 0;
    // A request that is all here (the common case) is rendered as it is by
    // do_write_request_header; the others are edited for Beast's serializer.
    whole_request_ = !send_continue_ && !request_has_body_ && parser_->is_done();
    req_sr_.reset();  // a failed exchange before this one may have left its own
    if (!whole_request_) {
        // Read before the hop-by-hop fields go, as the whole-request path
        // reads it: a Connection field naming it changes neither.
        const std::string_view proto = forwarded_proto();
        proxy::strip_hop_by_hop(req);
        proxy::add_forwarding_headers(req, peer_ip_, proto);
        if (!upgrade_.empty()) {
            req.set(http::field::connection, "upgrade");
            req.set(http::field::upgrade, upgrade_);
        }
        req.version(11);
        if (chunked) {
            req.chunked(true);
        } else if (length) {
            req.content_length(*length);
        }
    }

    upstream_group_ =
        route_index_ >= 0 ? rt_->route_upstreams[route_index_] : rt_->default_upstream;
    retried_ = false;
    response_started_ = false;
    response_complete_ = false;
    t_upstream_ = std::chrono::steady_clock::now();
    do_acquire_upstream();
}

void session::reject(http::status status, std::string_view message, admin::reason_kind reason) {
    record(admin::decision_kind::rejected, reason);
    send_local(make_error_reply(status, message, client_version_, false));
}

void session::record(admin::decision_kind decision, admin::reason_kind reason) {
    decided_ = true;
    decision_kind_ = decision;
    reason_ = reason;
    owner_.gw.metrics.shard(owner_.index).request(decision, reason, key_kind_);
    if (route_index_ >= 0) {
        rt_->route_counters[static_cast<std::size_t>(route_index_)]
            ->decisions[static_cast<std::size_t>(decision)]
            .fetch_add(1, std::memory_order_relaxed);
    }
}

void session::do_acquire_upstream() {
    if (parser_->is_done()) {
        // A full pool or a slow connect can keep the request here up to
        // upstream.connect_timeout: a client that leaves meanwhile frees its
        // slot at once, and its request is never sent.
        watch_wanted_ = true;
        owner_.watch_later(*this);
    }
    owner_.pool->acquire(upstream_group_,
                         beast::bind_front_handler(&session::on_upstream, shared_from_this()));
}

void session::on_upstream(error_code ec, proxy::upstream_pool::lease conn) {
    if (closed_) {
        conn.recycle();  // unused: back to the pool, for the next request
        return;
    }
    stop_watching();
    if (ec) {
        upstream_failed(ec, upstream_phase::connect);
        return;
    }
    upstream_ = std::move(conn);
    do_write_request_header();
}

std::string_view session::forwarded_proto() const {
    const auto& req = parser_->get();
    const auto fields = req.equal_range("X-Forwarded-Proto");
    std::optional<std::string_view> sent;
    if (fields.first != fields.second && std::next(fields.first) == fields.second) {
        sent = fields.first->value();
    }
    return rt_->keys.forwarded_proto(peer_addr_, sent, stream_.is_tls());
}

void session::do_write_request_header() {
    upstream_watch_done_ = false;
    auto& req = parser_->get();
    // HTTP/1.0 may omit Host; the HTTP/1.1 request we send may not.
    std::string host;
    if (req.find(http::field::host) == req.end()) {
        // The host the client asked for, as routing saw it; else the upstream's.
        host = proxy::request_authority(req.target());
        if (host.empty()) {
            host = proxy::authority_of(upstream_->target->server);
        }
    }
    if (whole_request_) {
        // The common case, a request without a body: its head is all of it,
        // rendered with its edits into one buffer and written at once.
        proxy::forward_edit edit;
        edit.client_ip = peer_ip_;
        edit.proto = forwarded_proto();
        edit.upgrade = upgrade_;
        if (const auto length = parser_->content_length()) {
            edit.content_length = *length;
        }
        edit.host = host;
        write_scratch_.flat.clear();
        proxy::render_forwarded_request(req.base(), edit, write_scratch_.flat);
        write_flat(upstream_->stream, rt_->cfg->upstream.response_timeout,
                   beast::bind_front_handler(&session::on_write_request_body, shared_from_this()));
        return;
    }
    if (!host.empty()) {
        req.set(http::field::host, host);
    }
    req_sr_.emplace(req);
    if (!send_continue_ && (parser_->is_done() || buffer_.size() > 0)) {
        // The body (or its start) is already here: the first write carries
        // header and body together, one syscall instead of two.
        do_read_request_body();
        return;
    }
    upstream_->stream.expires_after(rt_->cfg->upstream.response_timeout);
    proxy::async_write_flat(
        upstream_->stream, *req_sr_, write_scratch_, true,
        beast::bind_front_handler(&session::on_write_request_header, shared_from_this()));
}

void session::on_write_request_header(error_code ec, std::size_t) {
    if (closed_) {
        return;  // close() already ended the exchange
    }
    if (ec) {
        upstream_failed(ec, upstream_phase::exchange);
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
    if (closed_) {
        return;  // close() already ended the exchange
    }
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
    watch_upstream();  // the body is still coming: see watch_upstream()
    if (!body_buf_) {
        body_buf_ = std::make_unique<std::array<char, 32 * 1024>>();
    }
    body.data = body_buf_->data();
    body.size = body_buf_->size();
    stream_.expires_after(rt_->cfg->client.body_timeout);
    body_io_pending_ = true;
    if (parser_->chunked()) {
        http::async_read_some(
            body_reader_, buffer_, *parser_,
            beast::bind_front_handler(&session::on_read_request_body, shared_from_this()));
        return;
    }
    http::async_read_some(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&session::on_read_request_body, shared_from_this()));
}

void session::on_read_request_body(error_code ec, std::size_t) {
    body_io_pending_ = false;
    if (closed_) {
        return;  // close() already ended the exchange
    }
    if (request_cut_) {
        do_read_response_header();  // the upstream answered early (take_early_answer)
        return;
    }
    if (ec == http::error::need_buffer) {
        ec = {};
    }
    if (ec) {
        stop_watching_upstream();
        upstream_.close();
        client_keep_alive_ = false;
        if (ec == http::error::body_limit) {
            respond_error(http::status::payload_too_large, "request body too large");
        } else if (ec == beast::error::timeout || is_disconnect(ec) ||
                   ec == asio::error::operation_aborted) {
            // A body that stalls past client.body_timeout: the stream has
            // closed the socket already, so there is nobody left to answer.
            close();
        } else {
            respond_error(http::status::bad_request, "malformed request body");
        }
        return;
    }
    auto& body = parser_->get().body();
    body.size = body_buf_->size() - body.size;
    bytes_in_ += body.size;
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
    body_io_pending_ = true;
    proxy::async_write_flat(
        upstream_->stream, *req_sr_, write_scratch_, false,
        beast::bind_front_handler(&session::on_write_request_body, shared_from_this()));
}

void session::on_write_request_body(error_code ec, std::size_t) {
    body_io_pending_ = false;
    if (closed_) {
        return;  // close() already ended the exchange
    }
    if (request_cut_) {
        do_read_response_header();  // the upstream answered early (take_early_answer)
        return;
    }
    if (ec == http::error::need_buffer) {
        ec = {};
    }
    if (ec) {
        // A body write that failed or gave up (upstream.response_timeout)
        // after the upstream answered: the answer is relayed, not a 502 or
        // 504. Also a 2xx, which the watch left for after the body.
        if ((is_disconnect(ec) || ec == beast::error::timeout) && answered_early()) {
            return;
        }
        upstream_failed(ec, upstream_phase::exchange);
        return;
    }
    if (req_sr_ && !parser_->is_done() && !req_sr_->is_done()) {
        do_read_request_body();
        return;
    }
    do_read_response_header();
}

// A server may answer before it has read the whole body (a 413 or a 401
// for an upload) and then close, so that the rest of the body meets a reset
// (RFC 9112 9.5 has clients watch for that). What it sent before the reset
// can still be read: a complete final head there is relayed as the answer,
// with `Connection: close`, instead of a 502; the client's unread body is
// drained by the lingering close, and the upstream connection is closed
// (finish_exchange never pools one whose request was not all sent).
bool session::answered_early() {
    if (!req_sr_ || !req_sr_->is_header_done() || req_sr_->is_done()) {
        return false;  // the head never went out, or all of it did
    }
    if (upstream_->stream.is_tls()) {
        return false;  // records may sit in the TLS layer: not looked into
    }
    if (early_final_status() == 0) {
        return false;
    }
    take_early_answer();
    return true;
}

// The status of the first final response head the upstream has sent so far
// (what is there is read, without blocking, into its buffer, where the
// response read looks first), or 0 while there is no complete one. Interim
// heads (1xx) before it are passed over, not consumed: they are relayed as
// usual when the response is read. Plain connections only.
unsigned session::early_final_status() {
    auto& buffer = upstream_->buffer;
    const int fd = upstream_->stream.socket().native_handle();
    while (buffer.size() < max_response_header_bytes) {
        const auto room =
            buffer.prepare(std::min<std::size_t>(8192, max_response_header_bytes - buffer.size()));
        const ssize_t n = ::recv(fd, room.data(), room.size(), MSG_DONTWAIT);
        if (n <= 0) {
            break;
        }
        buffer.commit(static_cast<std::size_t>(n));
    }
    std::string_view rest = bytes_of(buffer);
    // "HTTP/1.1 413 ...": three digits at 9; anything else is for the
    // response parser to refuse, once the response is read.
    while (rest.size() > 12 && rest.starts_with("HTTP/1.")) {
        const std::size_t end = proxy::find_head_end(rest);
        const auto digit = [&](std::size_t i) { return rest[i] >= '0' && rest[i] <= '9'; };
        if (end == std::string_view::npos || !digit(9) || !digit(10) || !digit(11)) {
            return 0;
        }
        const unsigned status =
            static_cast<unsigned>((rest[9] - '0') * 100 + (rest[10] - '0') * 10 + (rest[11] - '0'));
        if (status >= 200 && status <= 599) {
            return status;
        }
        if (status < 100 || status == 101) {
            return 0;  // no interim head to pass over: not an early answer
        }
        rest.remove_prefix(end);
    }
    return 0;
}

// The answer the upstream gave before the whole request went out becomes
// this exchange's response: the body relay stops, the client is answered
// with `Connection: close`, and the lingering close drains what it still
// sends. A body read from the client or write to the upstream still pending
// is cancelled, and its handler goes on to the answer: it uses the request
// parser or serializer until it has run, so the exchange may not end before.
void session::take_early_answer() {
    client_keep_alive_ = false;
    request_cut_ = true;
    // The connection ends with the answer: with a reset, which tells the
    // upstream the request was abandoned, where a FIN would wait behind
    // body bytes it may never read.
    error_code ignored;
    upstream_->stream.socket().set_option(asio::socket_base::linger(true, 0), ignored);
    if (body_io_pending_) {
        stream_.socket().cancel(ignored);
        upstream_->stream.socket().cancel(ignored);
        return;
    }
    do_read_response_header();
}

// While the request body is on its way, an upstream that refuses it (a 413
// or 401 for an upload, RFC 9112 9.5) and then neither reads on nor closes
// would be noticed only when the body write gives up. A peeking receive
// (as in watch_client) notices its answer instead; a final status of 300 or
// more is taken at once. A 2xx may come from a server that answers while it
// reads on: it waits in the buffer until the body has gone out. Not over
// TLS (records may sit in the TLS layer).
void session::watch_upstream() {
    if (upstream_watching_ || upstream_watch_done_ || upstream_->stream.is_tls()) {
        return;
    }
    upstream_watching_ = true;
    const auto generation = ++upstream_watch_generation_;
    upstream_->stream.socket().async_receive(
        asio::buffer(&upstream_peek_, 1), tcp::socket::message_peek,
        [self = shared_from_this(), generation](error_code ec, std::size_t) {
            self->on_upstream_readable(generation, ec);
        });
}

void session::on_upstream_readable(std::uint32_t generation, error_code ec) {
    if (closed_ || request_cut_ || generation != upstream_watch_generation_ ||
        !upstream_watching_ || !upstream_) {
        return;  // stopped, or the exchange has moved on
    }
    upstream_watching_ = false;
    if (ec) {
        // EOF or reset: the body's next write meets it (answered_early).
        upstream_watch_done_ = true;
        return;
    }
    const unsigned status = early_final_status();
    if (status >= 300) {
        take_early_answer();
    } else if (status == 0 && upstream_->buffer.size() < max_response_header_bytes) {
        watch_upstream();  // part of a head, or an interim one: watch for more
    } else {
        upstream_watch_done_ = true;  // a 2xx, or a full buffer: read after the body
    }
}

void session::stop_watching_upstream() {
    if (upstream_watching_) {
        upstream_watching_ = false;
        ++upstream_watch_generation_;
        if (upstream_) {
            error_code ignored;
            upstream_->stream.socket().cancel(ignored);
        }
    }
}

// Wait up to upstream.response_timeout for the response header.
void session::do_read_response_header() {
    stop_watching_upstream();
    res_parser_.reset();  // made only for heads the raw path does not take
    upstream_->stream.expires_never();
    response_timed_out_ = false;
    response_check_.reset();
    begin_wait(wait_kind::response_head, rt_->cfg->upstream.response_timeout);
    if (parser_->is_done()) {
        // A client that leaves while the upstream works frees its slot and
        // the upstream: watched once the wait passes a worker tick.
        watch_wanted_ = true;
        owner_.watch_later(*this);
    }
    if (upstream_->buffer.size() > 0 || upstream_->stream.is_tls()) {
        read_response_head();
        return;
    }
    // The request has just gone out, so a receive now would fail; after the
    // worker's other events it often finds the head. A timeout in between
    // closes the socket, and the read then fails into the 504 as usual.
    asio::post(upstream_->stream.get_executor(), [self = shared_from_this()] {
        if (!self->closed_ && self->upstream_) {
            self->read_response_head();
        }
    });
}

// Notices a client that disconnects while nothing is being read from it
// (queued for a slot, or waiting for the upstream). Only used while no
// other operation is pending on the client socket, so stop_watching() may
// cancel them all.
void session::watch_client() {
    if (watching_) {
        return;
    }
    if (stream_.is_tls() && SSL_pending(stream_.tls().native_handle()) > 0) {
        return;  // pipelined bytes already decrypted: the client is there
    }
    watching_ = true;
    // A peeking receive rather than a wait: Asio tries it at once (EAGAIN)
    // and then leaves the descriptor's epoll registration alone, where a
    // wait re-arms it with an epoll_ctl on every request.
    stream_.socket().async_receive(
        asio::buffer(&peek_, 1), tcp::socket::message_peek,
        [self = shared_from_this()](error_code ec, std::size_t) {
            if (ec == asio::error::operation_aborted || !self->watching_) {
                return;
            }
            self->watching_ = false;
            if (ec) {
                self->close();  // gone (EOF or reset)
                return;
            }
            // Bytes: a pipelined request, or body bytes while queued.
            self->read_watched();
        });
}

// The bytes the watch found are moved into buffer_, where the next read of
// the request looks first, and the watch goes on: a client that pipelines a
// request and then leaves is noticed like one that sends nothing more. Once
// buffer_ is full the client is plainly there and the watch stops. The read
// is non-blocking and synchronous, so no read is left pending that
// stop_watching() would have to cancel while the next read of buffer_ starts.
//
// Over TLS the bytes may be a close_notify, sent just before the FIN: only
// the TLS layer can tell that from a pipelined request. A record that makes
// OpenSSL answer during the read (a TLS 1.3 KeyUpdate asking for one) is
// written on the non-blocking socket too; before any response byte the send
// buffer is empty, and a short write there would break the stream, which
// then fails its next read and closes.
void session::read_watched() {
    const std::size_t room = buffer_.max_size() - buffer_.size();
    if (room == 0) {
        return;  // pipelined bytes fill the buffer: the client is there
    }
    const auto space = buffer_.prepare(std::min<std::size_t>(16 * 1024, room));
    auto& socket = stream_.socket();
    error_code ec;
    std::size_t n = 0;
    if (stream_.is_tls()) {
        socket.non_blocking(true, ec);
        n = ec ? 0 : stream_.tls().read_some(space, ec);
        error_code ignored;
        socket.non_blocking(false, ignored);
    } else {
        const ssize_t got =
            ::recv(socket.native_handle(), space.data(), space.size(), MSG_DONTWAIT);
        if (got > 0) {
            n = static_cast<std::size_t>(got);
        } else if (got == 0) {
            ec = asio::error::eof;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            ec = asio::error::would_block;
        } else {
            ec = error_code(errno, asio::error::get_system_category());
        }
    }
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
        // Part of a TLS record, or a record without data (a TLS 1.3 key
        // update): the engine keeps what it read; watch for what follows.
        watch_client();
        return;
    }
    if (ec) {
        close();  // EOF, close_notify, a FIN without one (stream_truncated), or worse
        return;
    }
    buffer_.commit(n);
    if (parser_ && parser_->chunked() && !parser_->is_done()) {
        // Chunked body bytes that body_reader_ will not see: checked here;
        // a misplaced line ending then fails its next read (the check stays failed).
        const std::string_view bytes = bytes_of(buffer_);
        chunk_lines_.feed(bytes.substr(bytes.size() - n));
    }
    watch_client();
}

void session::on_watch_due() {
    if (watch_wanted_ && !closed_) {
        watch_client();
    }
}

void session::stop_watching() {
    watch_wanted_ = false;
    if (watching_) {
        watching_ = false;
        error_code ignored;
        stream_.socket().cancel(ignored);
    }
}

void session::read_response_head() {
    auto& buffer = upstream_->buffer;
    const std::string_view view = bytes_of(buffer);
    const std::size_t end = view.empty()
                                ? std::string_view::npos
                                : proxy::find_head_end(view.substr(
                                      0, std::min(view.size(), max_response_header_bytes)));
    if (end != std::string_view::npos) {
        end_wait();
        parse_response_head(view.substr(0, end));
        return;
    }
    if (view.size() >= max_response_header_bytes) {
        end_wait();
        upstream_failed(http::error::header_limit, upstream_phase::exchange);
        return;
    }
    if (response_check_.feed(view)) {
        end_wait();
        upstream_failed(http::error::bad_version, upstream_phase::exchange);
        return;
    }
    upstream_->stream.async_read_some(
        buffer.prepare(std::min<std::size_t>(8192, max_response_header_bytes - view.size())),
        beast::bind_front_handler(&session::on_response_head_bytes, shared_from_this()));
}

void session::on_response_head_bytes(error_code ec, std::size_t n) {
    if (closed_) {
        return;  // close() already ended the exchange
    }
    if (response_timed_out_) {
        ec = beast::error::timeout;  // on_wait_timer() closed the connection
    }
    if (!ec) {
        upstream_->buffer.commit(n);
        read_response_head();
        return;
    }
    end_wait();
    // A pooled connection the server closed while idle fails here with
    // nothing received; an idempotent request without a body can safely go
    // again (the server may also have died while acting on it).
    const bool retryable = upstream_.reused() && !retried_ && !request_has_body_ &&
                           idempotent(parser_->get().method()) && upstream_->buffer.size() == 0 &&
                           is_disconnect(ec);
    if (retryable) {
        retried_ = true;
        upstream_.close();
        do_acquire_upstream();
        return;
    }
    upstream_failed(ec, upstream_phase::exchange);
}

void session::parse_response_head(std::string_view head) {
    proxy::head_info info;
    if (proxy::validate_response_head(head, info)) {
        upstream_failed(http::error::bad_version, upstream_phase::exchange);
        return;
    }
    if (relay_whole_response(head, info)) {
        return;
    }
    upstream_keep_alive_ = proxy::keeps_alive(info);
    res_parser_.emplace();
    res_parser_->header_limit(max_response_header_bytes);
    res_parser_->body_limit(boost::none);
    if (head_request_) {
        res_parser_->skip(true);
    }
    error_code ec;
    std::string scratch;
    const std::string_view parsed = proxy::beast_response_head(head, scratch);
    const std::size_t used = res_parser_->put(asio::buffer(parsed.data(), parsed.size()), ec);
    if (!ec && (!res_parser_->is_header_done() || used != parsed.size())) {
        ec = http::error::partial_message;
    }
    if (ec) {
        upstream_failed(ec == http::error::partial_message ? http::error::bad_version : ec,
                        upstream_phase::exchange);
        return;
    }
    upstream_->buffer.consume(head.size());
    on_response_head();
}

// The common response: a final one with nothing to stream (no body, or a
// Content-Length body already read with the head). Its head is rewritten
// from the raw bytes (proxy::render_response_head) without Beast's parser
// and field list, and it goes out with its body in one write. False: the
// head needs the parsed path (interim, 101, chunked, until close, a body
// still to come).
bool session::relay_whole_response(std::string_view head, const proxy::head_info& info) {
    const unsigned status = info.status;
    if (status < 200 || info.fields > proxy::head_info::max_listed) {
        return false;
    }
    const bool header_only = head_request_ || status == 204 || status == 304;
    const std::size_t after_head = upstream_->buffer.size() - head.size();
    if (!header_only &&
        (info.chunked || !info.content_length || after_head < *info.content_length)) {
        return false;
    }
    stop_watching();
    response_status_ = status;
    header_only_response_ = header_only;
    upstream_keep_alive_ = proxy::keeps_alive(info);
    if (draining_ || owner_.gw.draining()) {
        client_keep_alive_ = false;
    }
    std::optional<limit::rate_limit_headers> limits;
    std::array<limit::header_field, limit::rate_limit_headers::max_fields> extra{};
    std::size_t extras = 0;
    if (decision_) {
        limits.emplace(*decision_, rt_->cfg->rate_limit.headers);
        limits->for_each([&](const limit::header_field& f) { extra[extras++] = f; });
    }
    proxy::response_rewrite edit;
    edit.version = client_version_ >= 11 ? 11 : 10;
    edit.keep_alive = client_keep_alive_;
    if (status == 204) {
        edit.no_content_length = true;
    } else {
        // A HEAD's or 304's length, as validated ("7, 7" is 7), is what
        // a GET would get.
        edit.content_length = info.content_length;
    }
    edit.extra = std::span<const limit::header_field>(extra.data(), extras);
    edit.date = http_date_now();
    write_scratch_.flat.clear();
    proxy::render_response_head(head, info, edit, write_scratch_.flat);
    upstream_->buffer.consume(head.size());
    write_whole_response(header_only ? 0 : static_cast<std::size_t>(*info.content_length));
    return true;
}

void session::on_response_head() {
    stop_watching();
    auto& res = res_parser_->get();
    const unsigned status = res.result_int();
    response_status_ = status;
    if (status >= 100 && status < 200 && status != 101) {
        relay_interim(res);
        return;
    }
    if (status == 101) {
        // Only a switch the client asked for, to a protocol it asked for:
        // by name, since `foo/2` asked may be answered `foo/2` or `foo`.
        const auto switched = res.find(http::field::upgrade);
        const auto name_of = [](std::string_view protocol) {
            return protocol.substr(0, protocol.find('/'));
        };
        std::string_view chosen;
        if (switched != res.end()) {
            proxy::for_each_token(switched->value(), [&](std::string_view protocol) {
                if (chosen.empty()) {
                    chosen = name_of(protocol);
                }
            });
        }
        bool asked = false;
        proxy::for_each_token(upgrade_, [&](std::string_view protocol) {
            asked = asked || (!chosen.empty() && beast::iequals(name_of(protocol), chosen));
        });
        if (!asked) {
            upstream_failed(http::error::bad_status, upstream_phase::exchange);
            return;
        }
        start_tunnel();
        return;
    }

    const bool chunked = res_parser_->chunked();
    const auto length = res_parser_->content_length();
    header_only_response_ = head_request_ || status == 204 || status == 304;
    if (chunked && !header_only_response_) {
        // As for a request body (handle_request): what came with the head
        // now, the rest as it is read, so a broken chunk line fails at once
        // instead of at upstream.response_timeout.
        response_chunk_lines_ = {};
        if (!response_chunk_lines_.feed(bytes_of(upstream_->buffer))) {
            upstream_failed(http::error::bad_chunk, upstream_phase::exchange);
            return;
        }
        response_body_reader_.emplace(upstream_->stream, response_chunk_lines_);
    }
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
    } else if (status == 204) {
        res.erase(http::field::content_length);  // a 204 has none (RFC 9110 8.6)
    } else if (length) {
        res.content_length(*length);  // a HEAD's or 304's, as validated
    }
    if (draining_ || owner_.gw.draining()) {
        client_keep_alive_ = false;
    }
    res.keep_alive(client_keep_alive_);
    set_rate_limit_fields(res);
    if (res.find(http::field::date) == res.end()) {
        res.set(http::field::date, http_date_now());  // RFC 9110 6.6.1
    }
    const bool whole_body_here =
        !header_only_response_ && !chunked && !until_close && upstream_->buffer.size() >= *length;
    if (header_only_response_ || whole_body_here) {
        write_scratch_.flat.clear();
        proxy::render_head(res.base(), write_scratch_.flat);
        write_whole_response(whole_body_here ? *length : 0);
        return;
    }
    if (!header_only_response_ && (res_parser_->is_done() || upstream_->buffer.size() > 0)) {
        // Body bytes already arrived with the head: send header and body in
        // one write. Otherwise the header goes out first, so a slow or
        // streaming body does not hold it back.
        res_sr_.emplace(res_parser_->get());
        do_read_response_body();
        return;
    }
    do_write_response_header();
}

// A proxy forwards the interim responses it did not ask for, such as 103
// Early Hints, and never to an HTTP/1.0 client (RFC 9110 15.2); 100
// Continue is tollgate's own to send. While the request is still being
// read, the client side may be writing 100 Continue: the interim response
// is dropped then rather than written alongside it.
void session::relay_interim(response_parser::value_type& res) {
    if (res.result_int() == 100 || client_version_ < 11 || !parser_->is_done()) {
        do_read_response_header();
        return;
    }
    proxy::strip_hop_by_hop(res);
    res.version(11);
    auto head = std::make_shared<std::string>();
    proxy::render_head(res.base(), *head);
    bytes_out_ += head->size();
    stream_.expires_after(rt_->cfg->client.body_timeout);
    asio::async_write(stream_, asio::buffer(*head),
                      [self = shared_from_this(), head](error_code ec, std::size_t) {
                          if (self->closed_) {
                              return;
                          }
                          self->stream_.expires_never();
                          if (ec) {
                              self->close();
                              return;
                          }
                          self->do_read_response_header();
                      });
}

// A response that is all here (no body, or a Content-Length body that came
// with the head): its head, already rendered into write_scratch_.flat, and
// its body go out in one write, and the exchange is complete without
// Beast's serializer.
void session::write_whole_response(std::size_t body_bytes) {
    response_started_ = true;
    response_complete_ = true;
    auto& flat = write_scratch_.flat;
    if (body_bytes > 0) {
        flat.append(bytes_of(upstream_->buffer).substr(0, body_bytes));
        upstream_->buffer.consume(body_bytes);
        bytes_out_ += body_bytes;
    }
    write_flat(stream_, rt_->cfg->client.body_timeout,
               [self = shared_from_this()](error_code ec, std::size_t) {
                   if (self->closed_) {
                       return;  // close() already ended the exchange
                   }
                   if (ec) {
                       self->close();
                       return;
                   }
                   self->finish_exchange();
               });
}

void session::do_write_response_header() {
    response_started_ = true;
    res_sr_.emplace(res_parser_->get());
    stream_.expires_after(rt_->cfg->client.body_timeout);
    proxy::async_write_flat(
        stream_, *res_sr_, write_scratch_, true,
        beast::bind_front_handler(&session::on_write_response_header, shared_from_this()));
}

void session::on_write_response_header(error_code ec, std::size_t) {
    if (closed_) {
        return;  // close() already ended the exchange
    }
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
    auto next = beast::bind_front_handler(&session::on_read_response_body, shared_from_this());
    if (res_parser_->chunked()) {
        http::async_read_some(*response_body_reader_, upstream_->buffer, *res_parser_,
                              std::move(next));
        return;
    }
    http::async_read_some(upstream_->stream, upstream_->buffer, *res_parser_, std::move(next));
}

void session::on_read_response_body(error_code ec, std::size_t) {
    if (closed_) {
        return;  // close() already ended the exchange
    }
    if (ec == http::error::need_buffer) {
        ec = {};
    }
    if (ec) {
        // Before the head went out this is still a 502 (or 504); once the
        // response has started, the only honest signal left is to cut the
        // client connection so it sees the truncation.
        upstream_failed(ec, upstream_phase::exchange);
        return;
    }
    auto& body = res_parser_->get().body();
    body.size = body_buf_->size() - body.size;
    bytes_out_ += body.size;
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
    response_started_ = true;
    stream_.expires_after(rt_->cfg->client.body_timeout);
    proxy::async_write_flat(
        stream_, *res_sr_, write_scratch_, false,
        beast::bind_front_handler(&session::on_write_response_body, shared_from_this()));
}

void session::on_write_response_body(error_code ec, std::size_t) {
    if (closed_) {
        return;  // close() already ended the exchange
    }
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
    // The last byte reached the client: the slot goes back now, not on a timer.
    slot_.release();
    tunnel_ticket_.release();  // an upgrade the upstream declined
    const auto now = std::chrono::steady_clock::now();
    auto& shard = owner_.gw.metrics.shard(owner_.index);
    shard.upstream_duration.observe(std::chrono::duration<double>(now - t_upstream_).count());
    shard.request_duration.observe(std::chrono::duration<double>(now - t_start_).count());
    shard.response_status(response_status_);
    log_access(response_status_);

    if (upstream_keep_alive_ && (response_complete_ || (res_parser_ && res_parser_->is_done())) &&
        parser_->is_done() && !request_cut_) {
        upstream_.recycle();
    } else {
        upstream_.close();
    }
    req_sr_.reset();
    res_sr_.reset();
    res_parser_.reset();
    response_body_reader_.reset();  // it refers to the connection just let go
    const bool keep = client_keep_alive_ && parser_->is_done();
    parser_.reset();
    rt_.reset();
    if (!keep) {
        lingering_close();
        return;
    }
    wait_for_next_request();
}

// The protocols of the request's `Upgrade` that the route allows
// (`routes[].upgrade`, websocket by default), into upgrade_. Only a GET
// without a body that names `upgrade` in Connection can switch (RFC 9110
// 7.8, RFC 6455 4.1); anything else has its Upgrade stripped, as h2c is.
bool session::select_upgrade(const route_config* route) {
    upgrade_.clear();
    const auto& req = parser_->get();
    const auto requested = req.find(http::field::upgrade);
    const auto connection = req.find(http::field::connection);
    if (requested == req.end() || connection == req.end() ||
        !proxy::list_contains(connection->value(), "upgrade") || req.method() != http::verb::get ||
        req.version() < 11 || parser_->chunked() || parser_->content_length().value_or(0) > 0) {
        return false;
    }
    static const std::vector<std::string> default_upgrade{"websocket"};
    const auto& allowed = route ? route->upgrade : default_upgrade;
    proxy::for_each_token(requested->value(), [&](std::string_view item) {
        const std::string_view name = item.substr(0, item.find('/'));
        const bool ok = std::any_of(allowed.begin(), allowed.end(),
                                    [&](const std::string& a) { return beast::iequals(a, name); });
        if (ok && !name.empty()) {
            if (!upgrade_.empty()) {
                upgrade_ += ", ";
            }
            upgrade_ += item;
        }
    });
    return !upgrade_.empty();
}

// The upstream switched protocols: relay its 101, then the bytes.
void session::start_tunnel() {
    response_started_ = true;
    // A tunnel holds its upstream connection for as long as it lasts: it is
    // bounded by websocket.max_tunnels, not upstream.max_connections, so
    // open tunnels never leave ordinary requests waiting for a connection.
    upstream_.leave_pool();
    auto& res = res_parser_->get();
    const std::string protocol(res[http::field::upgrade]);
    proxy::strip_hop_by_hop(res);
    res.set(http::field::connection, "upgrade");
    res.set(http::field::upgrade, protocol);
    set_rate_limit_fields(res);
    auto& shard = owner_.gw.metrics.shard(owner_.index);
    const auto now = std::chrono::steady_clock::now();
    shard.upstream_duration.observe(std::chrono::duration<double>(now - t_upstream_).count());
    shard.request_duration.observe(std::chrono::duration<double>(now - t_start_).count());
    shard.response_status(101);
    log_access(101);
    res_sr_.emplace(res);
    stream_.expires_after(rt_->cfg->client.body_timeout);
    proxy::async_write_flat(
        stream_, *res_sr_, write_scratch_, true,
        beast::bind_front_handler(&session::on_tunnel_head_sent, shared_from_this()));
}

void session::on_tunnel_head_sent(error_code ec, std::size_t) {
    if (closed_) {
        return;
    }
    if (ec) {
        close();
        return;
    }
    res_sr_.reset();
    // The 101 reached the client: the exchange is over, and the tunnel that
    // follows may last hours. The tunnel caps bound it from here on.
    slot_.release();
    stream_.expires_never();
    upstream_->stream.expires_never();
    pipes_ = std::make_unique<std::array<tunnel_pipe, 2>>();
    tunnel_active_ = std::chrono::steady_clock::now();
    arm_tunnel_idle();
    // Bytes that came along with the handshake go first (tunnel_read), then
    // whatever either side sends.
    tunnel_read(0);
    tunnel_read(1);
}

proxy::stream& session::tunnel_end(std::size_t side) {
    return side == 0 ? stream_ : upstream_->stream;
}

void session::tunnel_read(std::size_t from) {
    auto& early = from == 0 ? buffer_ : upstream_->buffer;
    auto& pipe = (*pipes_)[from];
    if (early.size() > 0) {
        const std::size_t n = asio::buffer_copy(asio::buffer(pipe.buf), early.data());
        early.consume(n);
        on_tunnel_read(from, {}, n);
        return;
    }
    tunnel_end(from).async_read_some(
        asio::buffer(pipe.buf), [self = shared_from_this(), from](error_code ec, std::size_t n) {
            self->on_tunnel_read(from, ec, n);
        });
}

void session::on_tunnel_read(std::size_t from, error_code ec, std::size_t n) {
    if (closed_ || tunnel_ending_) {
        return;
    }
    if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
        tunnel_side_ended(from);
        return;
    }
    if (ec) {
        close();
        return;
    }
    tunnel_active_ = std::chrono::steady_clock::now();
    (from == 0 ? bytes_in_ : bytes_out_) += n;
    (*pipes_)[from].writing = true;
    asio::async_write(tunnel_end(1 - from), asio::buffer((*pipes_)[from].buf.data(), n),
                      [self = shared_from_this(), from](error_code wec, std::size_t wn) {
                          self->on_tunnel_written(from, wec, wn);
                      });
}

void session::on_tunnel_written(std::size_t from, error_code ec, std::size_t) {
    (*pipes_)[from].writing = false;
    if (closed_ || tunnel_ending_) {
        return;
    }
    if (ec) {
        close();
        return;
    }
    tunnel_read(from);
}

// One side finished sending. Over plain TCP the other side gets the same
// end (a half close) while bytes keep flowing back; TLS has no half close
// worth trusting, so the tunnel ends.
void session::tunnel_side_ended(std::size_t from) {
    (*pipes_)[from].ended = true;
    auto& to = tunnel_end(1 - from);
    if (from == 1 && stream_.is_tls()) {
        end_tunnel();  // the TLS client gets a close_notify
        return;
    }
    if ((*pipes_)[1 - from].ended || stream_.is_tls() || upstream_->stream.is_tls()) {
        close();
        return;
    }
    error_code ignored;
    to.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

// Ends a tunnel from tollgate's side (its upstream finished, or it idled
// out). A TLS client gets a close_notify first, through the lingering
// close, so that it sees the end as clean, not as a cut; over plain TCP the
// half close above already said it. The client read still pending is
// cancelled (the TLS shutdown needs the stream) and the upstream aborted;
// their handlers see tunnel_ending_ and leave the rest to the lingering
// close.
void session::end_tunnel() {
    if (tunnel_ending_ || closed_) {
        return;  // the idle timer and the upstream's end may both come
    }
    // A write to the client stalled mid-record cannot be followed by a
    // clean close_notify: that client gets the reset.
    if (!stream_.is_tls() || (*pipes_)[0].ended || (*pipes_)[1].writing) {
        close();
        return;
    }
    tunnel_ending_ = true;
    header_timer_.cancel();  // the tunnel's idle timer
    error_code ignored;
    stream_.socket().cancel(ignored);
    // Aborted, not closed: a pending upstream operation (a TLS one holds
    // its stream's buffers) finishes before the connection goes away.
    upstream_.abort();
    lingering_close();
}

// Starts a wait of `kind` that ends at now + timeout, unless end_wait()
// comes first. The timer is left alone when it fires no later than that
// (on_wait_timer then re-arms it for the current deadline).
void session::begin_wait(wait_kind kind, std::chrono::steady_clock::duration timeout) {
    waiting_ = kind;
    wait_deadline_ = std::chrono::steady_clock::now() + timeout;
    if (!wait_timer_armed_ || wait_timer_.expiry() > wait_deadline_) {
        arm_wait_timer();
    }
}

void session::arm_wait_timer() {
    wait_timer_armed_ = true;
    wait_timer_.expires_at(wait_deadline_);  // a pending wait ends, aborted
    wait_timer_.async_wait(beast::bind_front_handler(&session::on_wait_timer, shared_from_this()));
}

void session::on_wait_timer(error_code ec) {
    if (ec || closed_) {
        return;  // re-armed or cancelled: a newer wait, if any, is pending
    }
    wait_timer_armed_ = false;
    if (waiting_ == wait_kind::none) {
        return;  // the next begin_wait() arms it again
    }
    if (std::chrono::steady_clock::now() < wait_deadline_) {
        arm_wait_timer();
        return;
    }
    const wait_kind expired = std::exchange(waiting_, wait_kind::none);
    if (expired == wait_kind::request) {
        // Nothing was asked, nothing to answer; the pending read ends aborted.
        close();
        return;
    }
    // No response head in time: the read fails, and is answered 504.
    response_timed_out_ = true;
    error_code ignored;
    upstream_->stream.socket().close(ignored);
}

// Closes a tunnel in which nothing moved for client.tunnel_idle_timeout.
void session::arm_tunnel_idle() {
    const auto idle = rt_->cfg->client.tunnel_idle_timeout;
    header_timer_.expires_at(tunnel_active_ + idle);
    header_timer_.async_wait([self = shared_from_this(), idle](error_code ec) {
        if (ec || self->closed_) {
            return;
        }
        if (std::chrono::steady_clock::now() - self->tunnel_active_ >= idle) {
            self->end_tunnel();
            return;
        }
        self->arm_tunnel_idle();
    });
}

// Closing a socket with unread request bytes makes the kernel send a reset,
// which can destroy the reply we just wrote before the client reads it. So:
// stop sending, drain what the client still sends for a short while, close.
// Over TLS, "stop sending" starts with a close_notify: without one a TLS
// client cannot tell a close-delimited body from a cut one (OpenSSL 3 reports
// an unexpected EOF). The shutdown then waits, within the same two seconds,
// for the client's close_notify or its FIN; whatever it still sends after
// that, or instead, is drained from the TCP layer.
void session::lingering_close() {
    // After end_tunnel() the upstream is aborted, with operations that may
    // still be pending on it: it must outlive them, so it is not closed here.
    if (!tunnel_ending_) {
        upstream_.close();
    }
    linger_budget_ = 1024 * 1024;
    stream_.expires_after(std::chrono::seconds(2));
    if (!stream_.is_tls() || tcp_only_) {
        linger_tcp();
        return;
    }
    stream_.tls().async_shutdown([self = shared_from_this()](error_code ec) {
        if (self->closed_ || ec == beast::error::timeout) {
            self->close();
            return;
        }
        self->tcp_only_ = true;
        self->linger_tcp();
    });
}

void session::linger_tcp() {
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    do_linger();
}

void session::do_linger() {
    if (!body_buf_) {
        body_buf_ = std::make_unique<std::array<char, 32 * 1024>>();
    }
    auto next = [self = shared_from_this()](error_code ec, std::size_t n) {
        if (ec || n >= self->linger_budget_) {
            self->close();
            return;
        }
        self->linger_budget_ -= n;
        self->do_linger();
    };
    if (tcp_only_) {
        // The rest of a plain request under the TLS layer that refused it, or
        // what follows the TLS shutdown.
        stream_.tcp_layer().async_read_some(asio::buffer(*body_buf_), std::move(next));
        return;
    }
    stream_.async_read_some(asio::buffer(*body_buf_), std::move(next));
}

void session::upstream_failed(error_code ec, upstream_phase phase) {
    stop_watching();
    stop_watching_upstream();
    upstream_.close();
    // A failed exchange took its time too: a timeout must show in the
    // upstream latency, not vanish from it. A wait for a pooled connection
    // that never came is not the upstream's time.
    if (t_upstream_ != std::chrono::steady_clock::time_point{} &&
        ec != proxy::pool_exhausted_error()) {
        owner_.gw.metrics.shard(owner_.index)
            .upstream_duration.observe(
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t_upstream_)
                    .count());
    }
    const bool timeout = ec == beast::error::timeout;
    admin::upstream_error_kind kind = admin::upstream_error_kind::reset;
    if (phase == upstream_phase::connect) {
        // A certificate that does not verify is not a dead server: a kind of
        // its own, so an expired or misnamed certificate is told apart.
        const bool tls = ec.category() == asio::error::get_ssl_category() ||
                         ec.category() == asio::ssl::error::get_stream_category();
        kind = ec == proxy::pool_exhausted_error() ? admin::upstream_error_kind::pool_exhausted
               : timeout                           ? admin::upstream_error_kind::connect_timeout
               : tls                               ? admin::upstream_error_kind::tls
                                                   : admin::upstream_error_kind::connect_refused;
    } else if (timeout) {
        kind = admin::upstream_error_kind::response_timeout;
    } else if (ec.category() == error_code(http::error::bad_version).category() &&
               !is_disconnect(ec)) {
        kind = admin::upstream_error_kind::invalid_response;
    }
    owner_.gw.metrics.shard(owner_.index).upstream_error(kind);
    if (response_started_) {
        // A FIN would end a close-delimited body (HTTP/1.0, or no length)
        // as if it were complete: a reset makes the cut an error for every
        // client. Over TLS it also skips any close_notify.
        error_code ignored;
        stream_.socket().set_option(asio::socket_base::linger(true, 0), ignored);
        reset_client_ = true;
        close();
        return;
    }
    if (kind == admin::upstream_error_kind::pool_exhausted) {
        respond_error(http::status::gateway_timeout, "no upstream connection free");
    } else if (timeout) {
        respond_error(http::status::gateway_timeout, "upstream timeout");
    } else {
        respond_error(http::status::bad_gateway, "upstream unavailable");
    }
}

// The rate-limit fields of this exchange's decision, when one was made, on
// a head that goes out through Beast's field list.
void session::set_rate_limit_fields(http::fields& head) const {
    if (decision_) {
        limit::rate_limit_headers(*decision_, rt_->cfg->rate_limit.headers)
            .for_each([&](const limit::header_field& f) { head.set(f.name, f.value); });
    }
}

void session::respond_error(http::status status, std::string_view message) {
    // The request body may be half read; the connection cannot carry another request.
    const bool keep = client_keep_alive_ && parser_ && parser_->is_done();
    auto res = make_error_reply(status, message, client_version_, keep);
    // A token was taken for this request: its reply says so, whoever wrote
    // it (DESIGN 5: every limited response).
    set_rate_limit_fields(res);
    send_local(std::move(res));
}

void session::send_local(local_response res) {
    if (closed_) {
        return;
    }
    slot_.release();
    tunnel_ticket_.release();
    if (!may_keep_alive()) {
        res.keep_alive(false);
    }
    render_local(res, write_scratch_.flat);
    write_local(res.result_int(), res.keep_alive());
}

// A request whose body was not read cannot be followed by another one.
bool session::may_keep_alive() const {
    return parser_ && parser_->is_done() && !draining_ && !owner_.gw.draining();
}

// Sends the reply rendered into write_scratch_.flat.
void session::write_local(unsigned status, bool keep_alive) {
    if (head_request_) {
        // A reply to HEAD has no body (RFC 9110 9.3.2), or a keep-alive
        // client would read it as the start of the next response. Its
        // Content-Length still says what a GET would have got.
        const std::size_t end = proxy::find_head_end(write_scratch_.flat);
        if (end != std::string::npos) {
            write_scratch_.flat.resize(end);
        }
    }
    auto& shard = owner_.gw.metrics.shard(owner_.index);
    // Every exchange counts in the request histogram, refusals and errors
    // included (from the head's first byte to the reply handed to the socket).
    shard.request_duration.observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start_).count());
    shard.response_status(status);
    const std::size_t head_end = proxy::find_head_end(write_scratch_.flat);
    bytes_out_ += head_end == std::string::npos ? 0 : write_scratch_.flat.size() - head_end;
    log_access(status);
    local_keep_alive_ = keep_alive;
    write_flat(stream_, rt_ ? rt_->cfg->client.body_timeout : std::chrono::seconds(10),
               beast::bind_front_handler(&session::on_local_sent, shared_from_this()));
}

// A request refused before Beast parsed its head (a framing error, a head
// or body too large) is still logged with its method and target when its
// request line is whole: `METHOD SP target SP HTTP/...`. Only with the
// access log on, so refusals cost nothing more without it.
void session::keep_request_line(std::string_view head) {
    if (!rt_ || !rt_->cfg->log.access_log) {
        return;
    }
    const std::string_view line = head.substr(0, head.find_first_of("\r\n"));
    const std::size_t first = line.find(' ');
    const std::size_t last = line.rfind(' ');
    if (first == std::string_view::npos || last <= first + 1 ||
        !line.substr(last + 1).starts_with("HTTP/")) {
        return;
    }
    refused_method_ = line.substr(0, first);
    refused_target_ = line.substr(first + 1, last - first - 1);
}

// One JSON line per request on stdout. Never the raw token: keys are
// already hashed, and a tok: key is shortened to 12 hex characters.
void session::log_access(unsigned status) {
    logged_ = true;
    if (!rt_ || !rt_->cfg->log.access_log) {
        return;
    }
    std::string line;
    line.reserve(320);
    line += "{\"time\":\"";
    line += format_utc_now();
    line += "\",\"method\":\"";
    std::string_view target;
    if (parser_ && parser_->is_header_done()) {
        append_json_escaped(line, parser_->get().method_string());
        target = parser_->get().target();
    } else {
        append_json_escaped(line, refused_method_);
        target = refused_target_;
    }
    line += "\",\"path\":\"";
    append_json_escaped(line, proxy::request_path(target));
    line += "\",\"status\":";
    line += std::to_string(status);
    // Cut short before a decision (a partial head, a wait for a slot), there
    // is none to report.
    line += ",\"decision\":\"";
    line += decided_ ? admin::to_string(decision_kind_) : "none";
    line += "\",\"reason\":\"";
    line += decided_ ? admin::to_string(reason_) : "client_closed";
    line += "\",\"key_type\":\"";
    line += admin::to_string(key_kind_);
    line += "\",\"key\":\"";
    if (key_kind_ != admin::key_kind::none) {
        std::string_view key = key_.key;
        append_json_escaped(line, key_kind_ == admin::key_kind::tok ? key.substr(0, 4 + 12) : key);
    }
    line += "\",\"upstream_ms\":";
    const bool forwarded = t_upstream_ != std::chrono::steady_clock::time_point{};
    const auto now = std::chrono::steady_clock::now();
    line += std::to_string(
        forwarded ? std::chrono::duration_cast<std::chrono::milliseconds>(now - t_upstream_).count()
                  : 0);
    line += ",\"duration_ms\":";
    line += std::to_string(
        std::chrono::duration_cast<std::chrono::milliseconds>(now - t_start_).count());
    line += ",\"bytes_in\":";
    line += std::to_string(bytes_in_);
    line += ",\"bytes_out\":";
    line += std::to_string(bytes_out_);
    line += "}\n";
    std::fwrite(line.data(), 1, line.size(), stdout);
}

void session::on_local_sent(error_code ec, std::size_t) {
    const bool keep = !ec && local_keep_alive_;
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
    wait_for_next_request();
}

}  // namespace tollgate::server
