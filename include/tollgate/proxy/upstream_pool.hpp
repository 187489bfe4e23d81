#pragma once
/// @file upstream_pool.hpp
/// Per-thread pool of keep-alive connections to upstream servers.
///
/// Each worker thread owns one pool, so a pooled connection never crosses
/// threads and the pool needs no lock: every member function must be called
/// from the worker's io_context. A connection is handed out as a move-only
/// `lease`; it returns to the idle list only through `lease::recycle()`
/// (after a complete keep-alive exchange) and is closed otherwise, so a
/// half-read response can never be reused.

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tollgate/config/config.hpp"
#include "tollgate/log.hpp"
#include "tollgate/net.hpp"
#include "tollgate/proxy/stream.hpp"

namespace tollgate::proxy {

/// One upstream server with its addresses resolved once, at config load.
/// Shared by all threads; only the warnings' and the rest's state change.
struct upstream_target {
    /// How long a server of a group whose connect failed (refused,
    /// unreachable, timed out, TLS handshake failed) is passed over by its
    /// group's turns.
    static constexpr std::chrono::seconds rest_after_failure{10};

    upstream_server server;
    std::vector<tcp::endpoint> endpoints;
    /// Until when (steady_clock ticks) the group's turns pass this server
    /// by, while another server of the group is not resting; 0: not resting.
    mutable std::atomic<std::chrono::steady_clock::rep> resting_until{0};
    /// "Refused, moved on" about this server: under load a dead server
    /// would otherwise log once per request.
    mutable throttled_warning refusal_warning{std::chrono::seconds(10)};
    /// "TLS handshake failed" with this server, for the same reason.
    mutable throttled_warning handshake_warning{std::chrono::seconds(10)};
};

/// Servers tried round robin (`upstream.servers` or a route's `upstream`).
/// Shared by all threads; the cursor is the only mutable part.
struct upstream_group {
    std::vector<std::shared_ptr<const upstream_target>> targets;
    /// TLS for the `https://` servers among them (null when there are none).
    std::shared_ptr<asio::ssl::context> tls;
    bool verify_tls = true;  ///< false only with upstream.insecure_skip_verify
    mutable std::atomic<std::size_t> next{0};
};

/// `host[:port]` of `server` as a Host header names it: an IPv6 literal in
/// brackets, the port left out when it is the scheme's default.
std::string authority_of(const upstream_server& server);

/// The addresses `server` has now (blocking; startup, reload and
/// `--check-config` only). Throws std::runtime_error `upstream URL: cannot
/// resolve host: reason`.
std::vector<tcp::endpoint> resolve_server(const upstream_server& server);

/// Resolves every server of `servers` (blocking; startup and reload only)
/// and, when any is `https://`, builds their TLS context from `settings`.
/// Throws std::runtime_error naming the server that does not resolve, as
/// `<key>[i]: ...` (`key` is where the list is configured, e.g.
/// "upstream.servers"), or the CA file that cannot be loaded.
std::shared_ptr<upstream_group> resolve_group(const std::vector<upstream_server>& servers,
                                              const upstream_config& settings,
                                              std::string_view key);

struct pool_settings {
    std::chrono::milliseconds connect_timeout{3000};
    std::chrono::milliseconds idle_timeout{60000};
    std::size_t max_connections = 1024;  ///< for this pool (this thread)
    /// Shared count of open connections across pools (metrics), or null.
    std::atomic<std::size_t>* open_counter = nullptr;
    /// Counts each failed connect (refused, timed out, TLS handshake failed)
    /// that moves on to another server of the group (this thread's metrics
    /// shard), or null.
    std::atomic<std::uint64_t>* failover_counter = nullptr;
};

/// What acquire() fails with when no connection of the pool became free
/// within connect_timeout: every one of upstream.max_connections is busy.
inline error_code pool_exhausted_error() {
    return make_error_code(boost::system::errc::device_or_resource_busy);
}

class upstream_pool : public std::enable_shared_from_this<upstream_pool> {
public:
    struct connection {
        explicit connection(asio::io_context& ioc) : stream(ioc) {}
        proxy::stream stream;
        beast::flat_buffer buffer;
        std::shared_ptr<const upstream_target> target;
        std::chrono::steady_clock::time_point idle_since{};
        std::uint64_t exchanges = 0;  ///< completed exchanges on this connection
    };

    /// Exclusive use of one upstream connection. Destroying a lease that was
    /// not recycled closes the connection.
    class lease {
    public:
        lease() = default;
        lease(lease&& other) noexcept;
        lease& operator=(lease&& other) noexcept;
        lease(const lease&) = delete;
        lease& operator=(const lease&) = delete;
        ~lease();

        explicit operator bool() const { return conn_ != nullptr; }
        connection* operator->() const { return conn_.get(); }
        connection& operator*() const { return *conn_; }
        /// True when the connection came from the idle list (it may have been
        /// closed by the server meanwhile; such a failure is worth one retry).
        bool reused() const { return conn_ && conn_->exchanges > 0; }

        /// Returns the connection to the idle list. Call only after a complete
        /// exchange that both sides agreed to keep alive.
        void recycle();
        /// Closes the connection now. Only when no operation is pending on it.
        void close();
        /// Closes the socket (pending operations complete with
        /// operation_aborted) and gives the connection up for the pool, but
        /// keeps the connection object alive until the lease is destroyed,
        /// since a pending operation still refers to its stream and buffer.
        void abort();
        /// The connection stops counting against `max_connections` (a
        /// tunnel: it never comes back, and `websocket.max_tunnels` bounds
        /// those), and a request waiting for a connection may take its place.
        /// It still counts in the shared open counter until it is closed.
        void leave_pool();

    private:
        friend class upstream_pool;
        lease(std::shared_ptr<upstream_pool> pool, std::unique_ptr<connection> conn)
            : pool_(std::move(pool)), conn_(std::move(conn)) {}
        /// Gives the connection's place up: in the pool, or only in the
        /// shared counter once it has left the pool.
        void give_up_place();
        std::shared_ptr<upstream_pool> pool_;
        std::unique_ptr<connection> conn_;
        /// Set by leave_pool(): the shared open counter, to decrement on close.
        std::atomic<std::size_t>* left_counter_ = nullptr;
    };

    using acquire_handler = std::function<void(error_code, lease)>;

    upstream_pool(asio::io_context& ioc, pool_settings settings);

    /// Hands out an idle connection to the next server of `group` or
    /// connects a new one. A refused connect or a failed TLS handshake moves
    /// on to the next server (counted in `failover_counter`; a warning
    /// naming the server, and for a handshake the reason, at most one per
    /// server every 10 s across all pools); errors, once no server is left
    /// to try: `beast::error::timeout` (connect timeout),
    /// pool_exhausted_error() (no connection became free within the connect
    /// timeout), or the last connect or TLS handshake error.
    void acquire(std::shared_ptr<const upstream_group> group, acquire_handler handler);

    /// Shutdown begins: closes idle connections and makes later recycles
    /// close instead, but still connects for the exchanges that drain
    /// (a request queued for a slot, or whose head was still arriving).
    void drain();
    /// Drain, and fails every waiter and later acquire (operation_aborted).
    void shutdown();

    std::size_t open_connections() const { return open_; }
    std::size_t idle_connections() const;
    /// Total upstream connections opened by this pool (for tests and metrics).
    std::uint64_t connects() const { return connects_.load(std::memory_order_relaxed); }

private:
    struct attempt;
    struct waiter {
        std::shared_ptr<const upstream_group> group;
        acquire_handler handler;
        std::shared_ptr<asio::steady_timer> timer;
    };

    bool try_start(const std::shared_ptr<const upstream_group>& group, acquire_handler& handler);
    void connect(std::shared_ptr<attempt> a);
    /// The attempt's server failed with `ec` before anything was sent: on to
    /// another server of the group when `fail_over` and one is worth it,
    /// else the attempt fails with `ec`. `handshake`: TCP connected, TLS failed.
    void connect_failed(std::shared_ptr<attempt> a, const error_code& ec, bool fail_over,
                        bool handshake);
    void connected(std::shared_ptr<attempt> a, std::unique_ptr<connection> conn);
    void failed_over(const upstream_target& target, const error_code& ec, bool handshake);
    void handshake_failed(connection& conn, const error_code& ec, bool verify);
    bool take_idle(const upstream_target* target, lease& out);
    void put_idle(std::unique_ptr<connection> conn);
    void released();
    void count_open(std::ptrdiff_t delta);
    void serve_waiters();
    void sweep_idle();
    void arm_sweep();

    asio::io_context& ioc_;
    pool_settings settings_;
    std::vector<std::unique_ptr<connection>> idle_;  ///< oldest first
    std::deque<std::shared_ptr<waiter>> waiters_;
    asio::steady_timer sweep_timer_;
    bool sweep_armed_ = false;
    bool draining_ = false;  ///< no pooling: drain() or shutdown()
    bool shut_down_ = false;
    std::size_t open_ = 0;  ///< leased + idle + connecting
    std::atomic<std::uint64_t> connects_{0};
};

}  // namespace tollgate::proxy
