#include "tollgate/server/worker.hpp"

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

void worker::listen(const tcp::endpoint& endpoint) {
    acceptor_.open(endpoint.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    // Every worker binds the same address; the kernel spreads connections.
    int one = 1;
    if (::setsockopt(acceptor_.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        throw boost::system::system_error(error_code(errno, boost::system::system_category()),
                                          "SO_REUSEPORT");
    }
    if (endpoint.address().is_v6()) {
        acceptor_.set_option(asio::ip::v6_only(false));
    }
    acceptor_.bind(endpoint);
    acceptor_.listen(asio::socket_base::max_listen_connections);
    do_accept();
}

tcp::endpoint worker::local_endpoint() const {
    return acceptor_.local_endpoint();
}

void worker::start_thread() {
    thread_ = std::thread([this] { ioc.run(); });
}

void worker::join() {
    if (thread_.joinable()) {
        thread_.join();
    }
}

void worker::do_accept() {
    acceptor_.async_accept(
        [this](error_code ec, tcp::socket socket) { on_accept(ec, std::move(socket)); });
}

void worker::on_accept(error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) {
        return;
    }
    if (ec) {
        // Out of descriptors (or another transient failure): back off instead
        // of spinning on an accept that keeps failing.
        accept_backoff_.expires_after(std::chrono::milliseconds(50));
        accept_backoff_.async_wait([this](error_code wait_ec) {
            if (!wait_ec && acceptor_.is_open()) {
                do_accept();
            }
        });
        return;
    }
    const auto limit = gw.current()->cfg->client.max_connections;
    if (gw.client_connections.fetch_add(1) >= limit) {
        gw.client_connections--;
        error_code ignored;
        socket.close(ignored);
    } else {
        std::make_shared<session>(std::move(socket), *this)->start();
    }
    do_accept();
}

void worker::begin_drain() {
    asio::post(ioc, [this] {
        error_code ignored;
        acceptor_.close(ignored);
        accept_backoff_.cancel();
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
        error_code ignored;
        acceptor_.close(ignored);
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
