#include "tollgate/server/worker.hpp"

#include <malloc.h>
#include <sys/socket.h>

#include "tollgate/server/session.hpp"
#include "tollgate/store/redis_store.hpp"

namespace tollgate::server {

worker::worker(gateway& g, std::size_t idx, const config& cfg, std::size_t workers)
    : gw(g), index(idx) {
    proxy::pool_settings settings;
    settings.connect_timeout = cfg.upstream.connect_timeout;
    settings.idle_timeout = cfg.upstream.idle_timeout;
    settings.max_connections = std::max<std::size_t>(1, cfg.upstream.max_connections / workers);
    settings.open_counter = &g.upstream_connections;
    pool = std::make_shared<proxy::upstream_pool>(ioc, settings);
    store = make_store(cfg);
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
        error_code ignored;
        socket.close(ignored);
    } else if (&acceptor == &tls_acceptor_) {
        // The certificate of the moment: a reload changes it for new connections only.
        std::make_shared<session>(std::move(socket), *this, rt->tls_server)->start();
    } else {
        std::make_shared<session>(std::move(socket), *this)->start();
    }
    do_accept(acceptor);
}

void worker::session_started() {
    session_peak_ = std::max(session_peak_, ++session_count_);
}

// After a wave of connections (a slowloris, a load test) glibc keeps the
// freed memory in its arenas; give it back once most of them are gone, so
// RSS follows the load down instead of staying at its peak.
void worker::session_ended() {
    const std::size_t now = --session_count_;
    constexpr std::size_t wave = 1024;
    if (session_peak_ >= now + wave && now <= session_peak_ / 4) {
        session_peak_ = now;
        ::malloc_trim(0);
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
        // Idle upstream connections and their sweep timer would keep run() going.
        pool->shutdown();
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
        pool->shutdown();
        work_.reset();
    });
}

}  // namespace tollgate::server
