#pragma once
/// @file server.hpp
/// The whole proxy process minus `main`: worker threads with their
/// listeners, the admin listener, reload and graceful drain.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tollgate/admin/admin_server.hpp"
#include "tollgate/config/config.hpp"
#include "tollgate/server/gateway.hpp"
#include "tollgate/server/worker.hpp"

namespace tollgate::server {

class server {
public:
    /// Resolves upstreams and binds every listener; throws on failure
    /// (std::runtime_error or boost::system::system_error) with a message
    /// naming what failed.
    /// `time`: see gateway (tests pass a manual clock).
    explicit server(std::shared_ptr<const config> cfg, const limit::clock* time = nullptr);
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    /// Starts the worker threads and the admin thread.
    void start();

    /// Validated config in, swapped atomically: requests in flight keep the
    /// generation they started with. Throws (old config stays) on failure.
    /// Returns the keys that changed but apply only on restart (listeners,
    /// threads, upstream pool sizes and timeouts, rate_limit.max_keys,
    /// store): the running values stay in force for those.
    std::vector<std::string> reload(std::shared_ptr<const config> next);

    /// The warning about the open-file limit that `next` would meet with
    /// this server's threads and upstream pools, or nothing (see
    /// descriptor_limit.hpp; the constructor raises the limit and warns).
    std::optional<std::string> descriptor_limit_warning(const config& next) const;

    /// Stops accepting, lets exchanges finish with `Connection: close` for
    /// up to `shutdown.drain_timeout`, then closes what is left and joins.
    /// Blocks the calling thread meanwhile, flushing stdout (the access log)
    /// once a second.
    void drain_and_stop();

    /// drain_and_stop() without blocking: starts the drain, then looks every
    /// 20 ms on `ex` whether a connection is still open; once none is, or
    /// `shutdown.drain_timeout` has passed, closes what is left, joins the
    /// workers and calls `done` on `ex`. Does nothing if a drain has started
    /// already or the server has stopped. Call it, stop_now() and the
    /// destructor from the one thread that runs `ex`, which must outlive
    /// the server.
    void async_drain_and_stop(asio::any_io_executor ex, std::function<void()> done);

    /// Closes every connection still open (a drain's too, as at its deadline)
    /// and joins the workers, at once. A pending drain's `done` is not called.
    void stop_now();

    /// Client connections open on all workers (during a drain: those with an
    /// exchange still in flight, or a tunnel).
    std::size_t open_connections() const;

    /// Counts a reload whose config failed to load (the old one keeps serving).
    void record_reload_failure() { gateway_->metrics.reload_failed(); }

    tcp::endpoint proxy_endpoint() const;
    tcp::endpoint admin_endpoint() const;
    /// The TLS listener's address (port 0 when there is none).
    tcp::endpoint tls_endpoint() const;
    gateway& gw() { return *gateway_; }
    /// Upstream connections opened so far, all workers (tests, metrics).
    std::uint64_t upstream_connects() const;

    /// The `/debug/keys` document: most-refused keys (display form) and the
    /// keys holding the most slots, plus totals.
    std::string debug_keys_json(std::size_t top) const;

private:
    admin::response handle_admin(const admin::request& req);
    /// Looks again after `delay` whether the drain is over.
    void drain_tick(std::chrono::steady_clock::duration delay);
    /// Closes what is left, joins the workers; once.
    void stop_workers();

    /// The config the listeners, workers and key table were built from.
    std::shared_ptr<const config> started_with_;
    std::unique_ptr<gateway> gateway_;
    std::vector<std::unique_ptr<worker>> workers_;
    std::unique_ptr<admin::admin_server> admin_;
    tcp::endpoint proxy_endpoint_;
    tcp::endpoint admin_endpoint_;
    tcp::endpoint tls_endpoint_;
    std::size_t threads_ = 1;
    bool started_ = false;
    bool stopped_ = false;
    /// Set while a drain runs (and after), on the executor it was given.
    std::optional<asio::steady_timer> drain_timer_;
    std::chrono::steady_clock::time_point drain_deadline_;
    std::function<void()> drain_done_;
};

/// Parses `host` + `port` of a listen address into an endpoint.
tcp::endpoint to_endpoint(const listen_address& address);

}  // namespace tollgate::server
