#pragma once
/// @file worker.hpp
/// One thread's share of the proxy: its io_context, its SO_REUSEPORT
/// acceptor and its upstream pool. Nothing here is shared with another
/// worker, so none of it needs a lock; all members are used on `ioc` only.

#include <chrono>
#include <memory>
#include <thread>
#include <unordered_set>
#include <vector>

#include "tollgate/log.hpp"
#include "tollgate/net.hpp"
#include "tollgate/proxy/stream.hpp"
#include "tollgate/proxy/upstream_pool.hpp"
#include "tollgate/server/gateway.hpp"
#include "tollgate/store/rate_store.hpp"

namespace tollgate::server {

class session;

class worker {
    // Declared before `ioc` so sessions destroyed with the io_context's
    // pending handlers can still unregister themselves.
    std::unordered_set<session*> sessions_;
    std::atomic<std::size_t> session_count_{0};
    std::size_t session_peak_ = 0;  ///< most sessions since memory was last returned
    /// Sessions at the last trim while a wave is leaving (0: none is).
    std::size_t trim_level_ = 0;

public:
    worker(gateway& gw, std::size_t index, const config& cfg, std::size_t workers);
    ~worker();
    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;

    /// Throws (address in use) when something already listens on
    /// `endpoint`, which SO_REUSEPORT would otherwise let every worker join.
    /// Two processes starting at the same instant can both pass it.
    static void claim_address(const tcp::endpoint& endpoint);
    /// Opens the acceptor on `endpoint` (SO_REUSEPORT, so every worker can
    /// bind the same address). Throws boost::system::system_error.
    void listen(const tcp::endpoint& endpoint);
    /// Same for the TLS listener (`tls.listen`).
    void listen_tls(const tcp::endpoint& endpoint);
    /// The bound address (useful with port 0).
    tcp::endpoint local_endpoint() const;
    tcp::endpoint local_tls_endpoint() const;

    void start_thread();
    void join();

    /// Stops accepting and asks every session to finish (posted to `ioc`).
    void begin_drain();
    /// Closes everything still open (posted to `ioc`); the thread then ends.
    void force_stop();
    std::size_t session_count() const { return session_count_.load(); }

    /// How long a session waits for its upstream's response head before it
    /// starts watching for a client that leaves (session::watch_client):
    /// between one and two ticks. Most answers come sooner, and watching
    /// from the start costs a system call per request for nothing.
    static constexpr std::chrono::milliseconds watch_tick{50};
    /// Has `s` call session::on_watch_due() after a tick or two, if it
    /// still exists then. Worker thread only.
    void watch_later(session& s);
    /// The current runtime, from this worker's copy: no atomic shared_ptr
    /// load per request, only a generation check. Worker thread only.
    const std::shared_ptr<const runtime>& runtime_now() {
        if (const auto g = gw.generation(); g != runtime_generation_ || !runtime_) {
            runtime_ = gw.current();
            runtime_generation_ = g;
        }
        return runtime_;
    }

    gateway& gw;
    const std::size_t index;
    /// Only this worker's thread does I/O on its sockets (everything else
    /// posts to it), so the reactor needs no per-descriptor locking; the
    /// scheduler keeps its lock for those posts.
    asio::io_context ioc{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
    std::shared_ptr<proxy::upstream_pool> pool;
    /// This worker's rate store (memory, or its own Redis connection).
    std::unique_ptr<store::rate_store> store;

private:
    friend class session;
    std::unique_ptr<store::rate_store> make_store(const config& cfg);
    void session_started();
    void session_ended();
    static void open_shared(proxy::acceptor_type& acceptor, const tcp::endpoint& endpoint);
    void do_accept(proxy::acceptor_type& acceptor);
    void on_accept(proxy::acceptor_type& acceptor, error_code ec, proxy::socket_type socket);
    void close_acceptors();
    void reserve_descriptor_states(std::size_t count);
    void arm_watch_tick();
    void on_watch_tick();

    proxy::acceptor_type acceptor_{ioc};
    proxy::acceptor_type tls_acceptor_{ioc};
    asio::steady_timer accept_backoff_{ioc};
    asio::steady_timer tls_accept_backoff_{ioc};
    throttled_warning accept_warning_{std::chrono::seconds(10)};
    throttled_warning full_warning_{std::chrono::seconds(10)};
    /// Sessions given to watch_later(): `watch_due_` before the last tick,
    /// `watch_next_` since. Raw pointers, checked against `sessions_`.
    std::vector<session*> watch_due_;
    std::vector<session*> watch_next_;
    asio::steady_timer watch_timer_{ioc};
    bool watch_armed_ = false;
    asio::executor_work_guard<asio::io_context::executor_type> work_{ioc.get_executor()};
    std::thread thread_;
    std::shared_ptr<const runtime> runtime_;
    std::uint64_t runtime_generation_ = 0;
};

}  // namespace tollgate::server
