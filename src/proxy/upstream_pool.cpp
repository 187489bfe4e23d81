#include "tollgate/proxy/upstream_pool.hpp"

#include "tollgate/proxy/tls.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <optional>
#include <stdexcept>

namespace tollgate::proxy {

std::string authority_of(const upstream_server& server) {
    std::string out =
        server.host.find(':') != std::string::npos ? "[" + server.host + "]" : server.host;
    const std::uint16_t default_port = server.scheme == "https" ? 443 : 80;
    if (server.port != default_port) {
        out += ':';
        out += std::to_string(server.port);
    }
    return out;
}

std::vector<tcp::endpoint> resolve_server(const upstream_server& server) {
    asio::io_context ioc;
    tcp::resolver resolver(ioc);
    error_code ec;
    auto results = resolver.resolve(server.host, std::to_string(server.port), ec);
    if (ec || results.empty()) {
        throw std::runtime_error("upstream " + server.url +
                                 ": cannot resolve host: " + ec.message());
    }
    std::vector<tcp::endpoint> endpoints;
    for (const auto& entry : results) {
        endpoints.push_back(entry.endpoint());
    }
    return endpoints;
}

std::shared_ptr<upstream_group> resolve_group(const std::vector<upstream_server>& servers,
                                              const upstream_config& settings,
                                              std::string_view key) {
    auto group = std::make_shared<upstream_group>();
    const bool any_tls = std::any_of(servers.begin(), servers.end(),
                                     [](const upstream_server& s) { return s.scheme == "https"; });
    if (any_tls) {
        group->tls = make_upstream_context(settings);
        group->verify_tls = !settings.insecure_skip_verify;
    }
    for (std::size_t i = 0; i < servers.size(); ++i) {
        auto target = std::make_shared<upstream_target>();
        target->server = servers[i];
        try {
            target->endpoints = resolve_server(servers[i]);
        } catch (const std::exception& e) {
            throw std::runtime_error(std::string(key) + "[" + std::to_string(i) + "]: " + e.what());
        }
        group->targets.push_back(std::move(target));
    }
    if (group->targets.empty()) {
        throw std::runtime_error("upstream: no servers configured");
    }
    return group;
}

upstream_pool::lease::lease(lease&& other) noexcept
    : pool_(std::move(other.pool_)),
      conn_(std::move(other.conn_)),
      left_counter_(std::exchange(other.left_counter_, nullptr)) {}

upstream_pool::lease& upstream_pool::lease::operator=(lease&& other) noexcept {
    if (this != &other) {
        close();
        pool_ = std::move(other.pool_);
        conn_ = std::move(other.conn_);
        left_counter_ = std::exchange(other.left_counter_, nullptr);
    }
    return *this;
}

void upstream_pool::lease::give_up_place() {
    if (pool_) {
        pool_->released();
        pool_.reset();
    } else if (left_counter_ != nullptr) {
        left_counter_->fetch_sub(1);
        left_counter_ = nullptr;
    }
}

void upstream_pool::lease::leave_pool() {
    if (!conn_ || !pool_) {
        return;
    }
    auto pool = std::move(pool_);
    pool->open_--;  // not count_open(): the shared gauge still counts it
    left_counter_ = pool->settings_.open_counter;
    pool->serve_waiters();
}

upstream_pool::lease::~lease() {
    close();
}

void upstream_pool::lease::close() {
    if (!conn_) {
        return;
    }
    error_code ignored;
    conn_->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    conn_->stream.socket().close(ignored);
    conn_.reset();
    give_up_place();
}

void upstream_pool::lease::abort() {
    if (!conn_) {
        return;
    }
    error_code ignored;
    conn_->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    conn_->stream.socket().close(ignored);
    give_up_place();
}

void upstream_pool::lease::recycle() {
    if (!conn_ || !pool_) {
        return;
    }
    // Bytes past the end of the response were not asked for: the server is
    // out of step with us, and the next request would get them as its answer.
    if (pool_->draining_ || !conn_->stream.socket().is_open() || conn_->buffer.size() > 0) {
        close();
        return;
    }
    conn_->exchanges++;
    conn_->stream.expires_never();
    auto pool = std::move(pool_);
    pool->put_idle(std::move(conn_));
    pool->serve_waiters();
}

namespace {

bool resting(const upstream_target& target, std::chrono::steady_clock::rep now) {
    return target.resting_until.load(std::memory_order_relaxed) > now;
}

// From `turn` on, the first server of the group that this attempt has not
// tried (`tried` may be null) and that is awake (`awake` true); when every
// one not tried rests, the first of those (`awake` false).
struct pick {
    std::size_t index;
    bool awake;
};
pick first_untried(const upstream_group& group, const std::vector<bool>* tried, std::size_t turn,
                   std::chrono::steady_clock::rep now) {
    const std::size_t n = group.targets.size();
    std::optional<std::size_t> asleep;
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t candidate = (turn + i) % n;
        if (tried != nullptr && (*tried)[candidate]) {
            continue;
        }
        if (!resting(*group.targets[candidate], now)) {
            return {candidate, true};
        }
        if (!asleep) {
            asleep = candidate;
        }
    }
    return {asleep.value_or(turn), false};
}

// The group's next turn. A server that rests, or that this attempt tried
// (`tried`, may be null), gives its turn to the group's next one, as if a
// new request had come: a dead server's turns spread over the live ones
// instead of all going to the one after it. Other threads take turns
// meanwhile, so failing that, first_untried's pick from the last turn.
std::size_t take_turn(const upstream_group& group, const std::vector<bool>* tried) {
    const std::size_t n = group.targets.size();
    std::size_t turn = group.next.fetch_add(1, std::memory_order_relaxed) % n;
    if (n == 1) {
        return turn;
    }
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    const auto usable = [&](std::size_t i) { return tried == nullptr || !(*tried)[i]; };
    for (std::size_t i = 0; i < n && (!usable(turn) || resting(*group.targets[turn], now)); ++i) {
        turn = group.next.fetch_add(1, std::memory_order_relaxed) % n;
    }
    if (usable(turn) && !resting(*group.targets[turn], now)) {
        return turn;
    }
    return first_untried(group, tried, turn, now).index;
}

// Whether a server of the group that this attempt has not tried is awake.
bool any_awake(const upstream_group& group, const std::vector<bool>& tried) {
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    return first_untried(group, &tried, 0, now).awake;
}

}  // namespace

// One connect, moving to another server of the group when a server refuses
// the connection, does not answer it within the connect timeout, or fails
// the TLS handshake.
struct upstream_pool::attempt {
    std::shared_ptr<const upstream_group> group;
    std::size_t current = 0;   ///< index of the server being tried
    std::vector<bool> failed;  ///< per server: failed this attempt
    std::size_t tried = 0;
    acquire_handler handler;

    // The server to try after a failed connect or handshake (marked in `failed`):
    // another turn of the group.
    void next() { current = take_turn(*group, &failed); }
};

upstream_pool::upstream_pool(asio::io_context& ioc, pool_settings settings)
    : ioc_(ioc), settings_(settings), sweep_timer_(ioc) {
    settings_.max_connections = std::max<std::size_t>(1, settings_.max_connections);
}

std::size_t upstream_pool::idle_connections() const {
    return idle_.size();
}

void upstream_pool::count_open(std::ptrdiff_t delta) {
    open_ = static_cast<std::size_t>(static_cast<std::ptrdiff_t>(open_) + delta);
    if (settings_.open_counter) {
        settings_.open_counter->fetch_add(static_cast<std::size_t>(delta));
    }
}

void upstream_pool::acquire(std::shared_ptr<const upstream_group> group, acquire_handler handler) {
    if (shut_down_) {
        asio::post(ioc_, [h = std::move(handler)]() mutable {
            h(asio::error::operation_aborted, lease{});
        });
        return;
    }
    // FIFO: nobody overtakes a request already waiting for a connection.
    if (waiters_.empty() && try_start(group, handler)) {
        return;
    }
    auto w = std::make_shared<waiter>();
    w->group = std::move(group);
    w->handler = std::move(handler);
    w->timer = std::make_shared<asio::steady_timer>(ioc_, settings_.connect_timeout);
    waiters_.push_back(w);
    w->timer->async_wait(
        [self = shared_from_this(), weak = std::weak_ptr<waiter>(w)](error_code ec) {
            auto expired = weak.lock();
            if (ec || !expired) {
                return;
            }
            auto it = std::find(self->waiters_.begin(), self->waiters_.end(), expired);
            if (it == self->waiters_.end()) {
                return;
            }
            self->waiters_.erase(it);
            auto h = std::move(expired->handler);
            h(pool_exhausted_error(), lease{});
        });
}

bool upstream_pool::try_start(const std::shared_ptr<const upstream_group>& group,
                              acquire_handler& handler) {
    const std::size_t n = group->targets.size();
    const std::size_t first = take_turn(*group, nullptr);
    lease idle;
    if (take_idle(group->targets[first].get(), idle)) {
        asio::post(
            ioc_, [h = std::move(handler), l = std::move(idle)]() mutable { h({}, std::move(l)); });
        return true;
    }
    if (open_ >= settings_.max_connections) {
        if (idle_.empty()) {
            return false;
        }
        // Full, but with idle connections to other servers: close the oldest.
        idle_.erase(idle_.begin());
        count_open(-1);
    }
    count_open(1);
    auto a = std::make_shared<attempt>();
    a->group = group;
    a->current = first;
    a->failed.assign(n, false);
    a->handler = std::move(handler);
    connect(std::move(a));
    return true;
}

void upstream_pool::connect(std::shared_ptr<attempt> a) {
    const auto& target = a->group->targets[a->current];
    auto conn = std::make_unique<connection>(ioc_);
    conn->target = target;
    conn->stream.expires_after(settings_.connect_timeout);
    auto& stream = conn->stream.tcp_layer();
    stream.async_connect(target->endpoints, [self = shared_from_this(), a, conn = std::move(conn)](
                                                error_code ec, const tcp::endpoint&) mutable {
        if (ec) {
            // Nothing was sent: another server of the group can take the request.
            const bool dead =
                ec == asio::error::connection_refused || ec == asio::error::connection_reset ||
                ec == asio::error::host_unreachable || ec == asio::error::network_unreachable ||
                ec == beast::error::timeout;  // a host that is down drops the SYN
            self->connect_failed(std::move(a), ec, dead, false);
            return;
        }
        error_code ignored;
        conn->stream.socket().set_option(tcp::no_delay(true), ignored);
        if (conn->target->server.scheme != "https") {
            self->connected(std::move(a), std::move(conn));
            return;
        }
        // TLS within the same connect timeout.
        conn->stream.start_tls(*a->group->tls);
        prepare_upstream_tls(conn->stream.tls(), conn->target->server, a->group->verify_tls);
        auto& tls = conn->stream.tls();
        tls.async_handshake(asio::ssl::stream_base::client,
                            [self, a, conn = std::move(conn)](error_code hs_ec) mutable {
                                if (hs_ec) {
                                    self->handshake_failed(*conn, hs_ec, a->group->verify_tls);
                                    // Still nothing sent: a certificate that
                                    // does not verify, a server that speaks
                                    // plain HTTP, moves on like a refusal.
                                    self->connect_failed(std::move(a), hs_ec, true, true);
                                    return;
                                }
                                self->connected(std::move(a), std::move(conn));
                            });
    });
}

void upstream_pool::connect_failed(std::shared_ptr<attempt> a, const error_code& ec, bool fail_over,
                                   bool handshake) {
    const upstream_target& server = *a->group->targets[a->current];
    if (fail_over && a->group->targets.size() > 1) {
        // Its turns go to the others for a while, so that requests do
        // not each wait for it first.
        const auto until = std::chrono::steady_clock::now() + upstream_target::rest_after_failure;
        server.resting_until.store(until.time_since_epoch().count(), std::memory_order_relaxed);
    }
    // Each server gets a connect timeout of its own: after a timeout,
    // only a server not known to be down is worth another one (when all
    // rest, a request waits one connect timeout, not one per server).
    a->failed[a->current] = fail_over;
    const bool worth_another = ec != beast::error::timeout || any_awake(*a->group, a->failed);
    if (fail_over && worth_another && ++a->tried < a->group->targets.size() && !shut_down_) {
        failed_over(server, ec, handshake);
        a->next();
        lease idle;
        if (take_idle(a->group->targets[a->current].get(), idle)) {
            released();  // the connection this attempt counted
            auto h = std::move(a->handler);
            h({}, std::move(idle));
            return;
        }
        connect(std::move(a));
        return;
    }
    released();
    auto h = std::move(a->handler);
    h(ec, lease{});
}

void upstream_pool::connected(std::shared_ptr<attempt> a, std::unique_ptr<connection> conn) {
    connects_++;
    conn->stream.expires_never();
    // Back from a rest only now: a server whose TCP connect succeeds but
    // whose handshake fails is no more use than one that refuses.
    if (conn->target->resting_until.load(std::memory_order_relaxed) != 0) {
        conn->target->resting_until.store(0, std::memory_order_relaxed);
    }
    auto h = std::move(a->handler);
    h({}, lease(shared_from_this(), std::move(conn)));
}

void upstream_pool::failed_over(const upstream_target& target, const error_code& ec,
                                bool handshake) {
    // The request still succeeds on another server, so without these an
    // operator would not see that half of a group is down.
    if (settings_.failover_counter) {
        settings_.failover_counter->fetch_add(1, std::memory_order_relaxed);
    }
    if (handshake && ec != beast::error::timeout) {
        return;  // handshake_failed() named the server and the reason
    }
    const std::string what =
        ec != beast::error::timeout ? " refused a connection (" + ec.message() + ")"
        : handshake ? std::string(" did not finish a TLS handshake within upstream.connect_timeout")
                    : std::string(" did not answer a connect within upstream.connect_timeout");
    target.refusal_warning.warn(
        "upstream " + target.server.url + what +
        "; trying another server of its group (it rests from its turns for " +
        std::to_string(upstream_target::rest_after_failure.count()) + " s)");
}

void upstream_pool::handshake_failed(connection& conn, const error_code& ec, bool verify) {
    // A timeout is the connect timeout's, as for a plain connect.
    if (ec == beast::error::timeout) {
        return;
    }
    // Whether the request then moves on to another server of the group or
    // gets a 502 (metrics: kind="tls"), only this line says which server
    // failed and why (an expired certificate, another host name, an unknown
    // CA). Every request to that server fails alike, so it comes at most
    // once per server every 10 s.
    const auto& target = *conn.target;
    target.handshake_warning.warn("upstream " + target.server.url + ": TLS handshake failed: " +
                                  upstream_handshake_failure(conn.stream.tls(), ec, verify));
}

bool upstream_pool::take_idle(const upstream_target* target, lease& out) {
    const auto now = std::chrono::steady_clock::now();
    // Newest first: recently used connections are the least likely to have
    // been closed by the server.
    for (auto it = idle_.end(); it != idle_.begin();) {
        --it;
        if ((*it)->target.get() != target) {
            continue;
        }
        std::unique_ptr<connection> conn = std::move(*it);
        idle_.erase(it);
        // A server that closed the idle connection, or sent bytes nobody
        // asked for, shows it as readable: such a connection must not carry
        // a request (stray bytes would be read as its answer). One receive
        // that finds nothing per reuse is the price; reading them as the
        // next client's response is not an option.
        char probe;
        const ssize_t n =
            ::recv(conn->stream.socket().native_handle(), &probe, 1, MSG_PEEK | MSG_DONTWAIT);
        const bool alive = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
        if (!alive || now - conn->idle_since > settings_.idle_timeout) {
            // Closed here without serve_waiters(): we may be serving one already.
            conn.reset();
            count_open(-1);
            return take_idle(target, out);
        }
        out = lease(shared_from_this(), std::move(conn));
        return true;
    }
    return false;
}

void upstream_pool::put_idle(std::unique_ptr<connection> conn) {
    conn->idle_since = std::chrono::steady_clock::now();
    idle_.push_back(std::move(conn));
    arm_sweep();
}

void upstream_pool::released() {
    count_open(-1);
    serve_waiters();
}

void upstream_pool::serve_waiters() {
    while (!waiters_.empty()) {
        auto w = waiters_.front();
        if (!try_start(w->group, w->handler)) {
            return;
        }
        waiters_.pop_front();
        w->timer->cancel();
    }
}

void upstream_pool::arm_sweep() {
    if (sweep_armed_ || draining_) {
        return;
    }
    sweep_armed_ = true;
    sweep_timer_.expires_after(
        std::max(settings_.idle_timeout / 2, std::chrono::milliseconds(100)));
    sweep_timer_.async_wait([self = shared_from_this()](error_code ec) {
        self->sweep_armed_ = false;
        if (!ec) {
            self->sweep_idle();
        }
    });
}

void upstream_pool::sweep_idle() {
    const auto now = std::chrono::steady_clock::now();
    std::size_t before = idle_.size();
    std::erase_if(idle_, [&](const std::unique_ptr<connection>& c) {
        return now - c->idle_since > settings_.idle_timeout;
    });
    count_open(-static_cast<std::ptrdiff_t>(before - idle_.size()));
    if (!idle_.empty()) {
        arm_sweep();
    }
    serve_waiters();
}

void upstream_pool::drain() {
    draining_ = true;
    count_open(-static_cast<std::ptrdiff_t>(idle_.size()));
    idle_.clear();
    sweep_timer_.cancel();
}

void upstream_pool::shutdown() {
    drain();
    shut_down_ = true;
    auto waiters = std::move(waiters_);
    for (auto& w : waiters) {
        w->timer->cancel();
        auto h = std::move(w->handler);
        h(asio::error::operation_aborted, lease{});
    }
}

}  // namespace tollgate::proxy
