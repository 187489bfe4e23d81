#include "tollgate/server/worker.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "tollgate/server/session.hpp"
#include "tollgate/store/redis_store.hpp"

namespace tollgate::server {

namespace {

/// Whether epoll refuses /dev/null with EPERM. Asio's reactor then keeps the
/// registration without polling it (as for a regular file), which is what
/// reserve_descriptor_states() relies on; any other answer would leave the
/// registration half made, so the reservation stays off.
bool devnull_is_unpollable() {
    const int ep = ::epoll_create1(EPOLL_CLOEXEC);
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    bool refused = false;
    if (ep >= 0 && fd >= 0) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        refused = ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0 && errno == EPERM;
    }
    if (fd >= 0) {
        ::close(fd);
    }
    if (ep >= 0) {
        ::close(ep);
    }
    return refused;
}

}  // namespace

worker::worker(gateway& g, std::size_t idx, const config& cfg, std::size_t workers)
    : gw(g), index(idx) {
    proxy::pool_settings settings;
    settings.connect_timeout = cfg.upstream.connect_timeout;
    settings.idle_timeout = cfg.upstream.idle_timeout;
    settings.max_connections = std::max<std::size_t>(1, cfg.upstream.max_connections / workers);
    settings.open_counter = &g.upstream_connections;
    settings.failover_counter = &g.metrics.shard(idx).upstream_connect_failovers;
    pool = std::make_shared<proxy::upstream_pool>(ioc, settings);
    store = make_store(cfg);
    // Every client connection and upstream connection this worker may hold
    // at once (the kernel spreads clients about evenly over the workers),
    // but no more sockets than the process may open.
    std::size_t sockets = cfg.client.max_connections / workers + settings.max_connections;
    if (rlimit nofile{};
        ::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
        sockets = std::min<std::size_t>(sockets, nofile.rlim_cur / workers);
    }
    // Past this, the reserve would cost more from startup than it saves.
    constexpr std::size_t max_reserved = 16384;  // 2.7 MiB per worker
    reserve_descriptor_states(std::min(sockets, max_reserved));
}

std::unique_ptr<store::rate_store> worker::make_store(const config& cfg) {
    if (cfg.store.type == store_kind::redis) {
        // This worker's own connection; fallback buckets live in the shared limiter.
        return std::make_unique<store::redis_store>(ioc,
                                                    store::redis_settings::from(cfg.store.redis),
                                                    gw.limiter, gw.redis, gw.metrics.registry());
    }
    return std::make_unique<store::memory_store>(gw.limiter);
}

worker::~worker() {
    join();
    pool->shutdown();
}

// SO_REUSEPORT lets any socket of the same user join a listening address,
// so a second tollgate started on the same port would silently take half of
// the connections, each half counted against its own buckets. A socket
// bound without it, then closed, proves that no one listens there yet.
void worker::claim_address(const tcp::endpoint& endpoint) {
    if (endpoint.port() == 0) {
        return;  // the kernel picks a free port
    }
    asio::io_context ioc;
    tcp::acceptor probe(ioc);
    probe.open(endpoint.protocol());
    probe.set_option(asio::socket_base::reuse_address(true));
    if (endpoint.address().is_v6()) {
        probe.set_option(asio::ip::v6_only(false));
    }
    probe.bind(endpoint);
}

void worker::open_shared(proxy::acceptor_type& acceptor, const tcp::endpoint& endpoint) {
    acceptor.open(endpoint.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    // Every worker binds the same address; the kernel spreads connections.
    int one = 1;
    if (::setsockopt(acceptor.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        throw boost::system::system_error(error_code(errno, boost::system::system_category()),
                                          "SO_REUSEPORT");
    }
    if (endpoint.address().is_v6()) {
        acceptor.set_option(asio::ip::v6_only(false));
    }
    acceptor.bind(endpoint);
    acceptor.listen(asio::socket_base::max_listen_connections);
}

void worker::listen(const tcp::endpoint& endpoint) {
    open_shared(acceptor_, endpoint);
    do_accept(acceptor_);
}

void worker::listen_tls(const tcp::endpoint& endpoint) {
    open_shared(tls_acceptor_, endpoint);
    do_accept(tls_acceptor_);
}

tcp::endpoint worker::local_endpoint() const {
    return acceptor_.local_endpoint();
}

tcp::endpoint worker::local_tls_endpoint() const {
    return tls_acceptor_.local_endpoint();
}

void worker::close_acceptors() {
    error_code ignored;
    acceptor_.close(ignored);
    tls_acceptor_.close(ignored);
}

void worker::start_thread() {
    thread_ = std::thread([this] { ioc.run(); });
}

void worker::join() {
    if (thread_.joinable()) {
        thread_.join();
    }
}

void worker::do_accept(proxy::acceptor_type& acceptor) {
    acceptor.async_accept([this, &acceptor](error_code ec, proxy::socket_type socket) {
        on_accept(acceptor, ec, std::move(socket));
    });
}

void worker::on_accept(proxy::acceptor_type& acceptor, error_code ec, proxy::socket_type socket) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) {
        return;
    }
    if (ec) {
        // Out of descriptors (or another transient failure): back off instead
        // of spinning on an accept that keeps failing.
        accept_warning_.warn("cannot accept a connection (" + ec.message() +
                             "); retrying every 50 ms");
        auto& backoff = &acceptor == &acceptor_ ? accept_backoff_ : tls_accept_backoff_;
        backoff.expires_after(std::chrono::milliseconds(50));
        backoff.async_wait([this, &acceptor](error_code wait_ec) {
            if (!wait_ec && acceptor.is_open()) {
                do_accept(acceptor);
            }
        });
        return;
    }
    const auto& rt = runtime_now();
    if (gw.client_connections.fetch_add(1) >= rt->cfg->client.max_connections) {
        gw.client_connections--;
        gw.metrics.shard(index).connection_refused();  // counted before the client sees it
        error_code ignored;
        socket.close(ignored);
        full_warning_.warn("client.max_connections (" +
                           std::to_string(rt->cfg->client.max_connections) +
                           ") reached: new connections are closed at once");
    } else if (&acceptor == &tls_acceptor_) {
        // The certificate of the moment: a reload changes it for new connections only.
        std::make_shared<session>(std::move(socket), *this, rt->tls_server)->start();
    } else {
        std::make_shared<session>(std::move(socket), *this)->start();
    }
    do_accept(acceptor);
}

// Asio's epoll reactor gives each open socket a descriptor_state (168 bytes)
// from a per-io_context pool that never shrinks: a closed socket's state goes
// back to the pool's free list, not to malloc. Allocated one at a time as a
// wave of connections is accepted, these states land between the sessions'
// own allocations (~11 KiB each) in the worker thread's malloc arena, and
// once the wave is over each of them splits the freed memory: every gap
// keeps its partial first and last pages, which malloc_trim cannot return.
// After 10,000 slowloris connections that was ~27 MiB of RSS pinned by
// 1.7 MiB of states.
//
// So the pool is filled up front, here on the thread that builds the
// server: `count` placeholder descriptors registered at once (all on one
// /dev/null descriptor, which epoll refuses and Asio then keeps unpolled)
// and released together leave their states side by side on the free list,
// out of the worker's arena, for the sockets accepted later. The memory
// (168 bytes per client.max_connections and upstream.max_connections, from
// startup) is what the reactor would keep anyway after its first wave that
// large; sockets beyond it get their states as before.
void worker::reserve_descriptor_states(std::size_t count) {
    if (!devnull_is_unpollable()) {
        return;
    }
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return;
    }
    std::vector<asio::posix::stream_descriptor> held;
    held.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
        error_code ec;
        held.emplace_back(ioc).assign(fd, ec);
        if (ec) {
            held.pop_back();
            break;
        }
    }
    for (auto& d : held) {
        d.release();  // back to the pool; the descriptor itself is closed once, below
    }
    ::close(fd);
}

void worker::session_started() {
    const std::size_t now = ++session_count_;
    session_peak_ = std::max(session_peak_, now);
    if (now > trim_level_) {
        trim_level_ = 0;  // load is back: the last wave is over
    }
}

// After a wave of connections (a slowloris, a load test) glibc keeps the
// freed memory in its arenas; give it back once most of them are gone, so
// RSS follows the load down instead of staying at its peak. The first trim
// comes when three quarters of the wave have left; the sessions still open
// then hold pages all over the arena, so trim again each time the rest falls
// to a quarter, down to none (a handful of trims of ~3 ms per wave).
void worker::session_ended() {
    const std::size_t now = --session_count_;
    constexpr std::size_t wave = 1024;
    const bool wave_left = session_peak_ >= now + wave && now <= session_peak_ / 4;
    const bool still_leaving = trim_level_ > 0 && now < trim_level_ && now <= trim_level_ / 4;
    if (wave_left || still_leaving) {
        session_peak_ = now;
        trim_level_ = now;
        ::malloc_trim(0);
    }
}

void worker::watch_later(session& s) {
    watch_next_.push_back(&s);
    if (!watch_armed_) {
        arm_watch_tick();
    }
}

void worker::arm_watch_tick() {
    watch_armed_ = true;
    watch_timer_.expires_after(watch_tick);
    watch_timer_.async_wait([this](error_code ec) {
        if (!ec) {
            on_watch_tick();
        }
    });
}

// Sessions listed before the last tick have waited at least a tick: those
// still waiting for a response head start watching their client. A listed
// session that is gone is no longer in `sessions_`; one whose address was
// reused by a new session is asked too and ignores it unless it waits.
void worker::on_watch_tick() {
    watch_armed_ = false;
    std::vector<session*> due;
    due.swap(watch_due_);
    watch_due_.swap(watch_next_);
    for (session* s : due) {
        if (sessions_.count(s) != 0) {
            s->on_watch_due();
        }
    }
    due.clear();
    watch_next_.swap(due);  // keep the capacity
    if (!watch_due_.empty()) {
        arm_watch_tick();
    }
}

void worker::begin_drain() {
    asio::post(ioc, [this] {
        close_acceptors();
        accept_backoff_.cancel();
        tls_accept_backoff_.cancel();
        // drain() may close a session, which erases it from the set.
        std::vector<session*> all(sessions_.begin(), sessions_.end());
        for (session* s : all) {
            if (sessions_.count(s)) {
                s->drain();
            }
        }
        // Idle upstream connections and their sweep timer would keep run()
        // going; the exchanges still to come (queued for a slot, or with a
        // head still arriving) get connections as before.
        pool->drain();
        work_.reset();
    });
}

void worker::force_stop() {
    asio::post(ioc, [this] {
        close_acceptors();
        accept_backoff_.cancel();
        tls_accept_backoff_.cancel();
        std::vector<session*> all(sessions_.begin(), sessions_.end());
        for (session* s : all) {
            if (sessions_.count(s)) {
                s->abort();
            }
        }
        watch_timer_.cancel();
        pool->shutdown();
        // A Redis store that waits out a hung server would keep run() going
        // for its dead-connection timeout, past shutdown.drain_timeout.
        if (store) {
            store->stop();
        }
        work_.reset();
    });
}

}  // namespace tollgate::server
