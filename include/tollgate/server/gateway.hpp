#pragma once
/// @file gateway.hpp
/// State shared by every worker thread: the current config generation
/// (swapped atomically on reload), the rate limiter, metrics and
/// process-wide counters.

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tollgate/admin/key_stats.hpp"
#include "tollgate/admin/metrics.hpp"
#include "tollgate/config/config.hpp"
#include "tollgate/keying/key_resolver.hpp"
#include "tollgate/limit/clock.hpp"
#include "tollgate/limit/concurrency.hpp"
#include "tollgate/limit/rate_limiter.hpp"
#include "tollgate/limit/rate_policy.hpp"
#include "tollgate/limit/tunnels.hpp"
#include "tollgate/proxy/upstream_pool.hpp"
#include "tollgate/store/redis_shared.hpp"

namespace tollgate::server {

/// Everything derived from one config generation. Immutable once built, so
/// a request keeps the generation it started with for its whole exchange.
struct runtime {
    runtime(std::shared_ptr<const config> c);

    std::shared_ptr<const config> cfg;
    key_resolver keys;
    limit::rate_policy rates;
    std::shared_ptr<const proxy::upstream_group> default_upstream;
    /// One per `routes[i]`; the default group when the route names none.
    std::vector<std::shared_ptr<const proxy::upstream_group>> route_upstreams;
    /// `concurrency.capacity` slots (null when 0 = off).
    std::shared_ptr<limit::concurrency_limiter> slots;
    /// One per `routes[i]`: the route's own when it sets `concurrency`, else `slots`.
    std::vector<std::shared_ptr<limit::concurrency_limiter>> route_slots;
    /// Limiters of an earlier generation that this one does not use
    /// (`concurrency.capacity: 0`, a route's `concurrency` removed), since
    /// slots taken from them may still be held or taken (by a session that
    /// read its head under the older runtime), by name ("" = the global one,
    /// "route:" + the route's name): a later reload that turns them on again takes them
    /// over, so those slots still count against the new capacity. The reload
    /// after that drops one that holds no slot and that no runtime still in
    /// use hands out.
    std::vector<std::pair<std::string, std::shared_ptr<limit::concurrency_limiter>>> parked_slots;
    /// One per `routes[i]`, for `tollgate_route_requests_total`.
    std::vector<std::shared_ptr<admin::route_counters>> route_counters;
    /// The TLS listener's context (null without `tls.listen`); rebuilt on
    /// reload, so new connections get the new certificate.
    std::shared_ptr<asio::ssl::context> tls_server;

    /// Slots held over every limiter above (the global one, the routes' own
    /// and the parked ones), each limiter counted once: what the in-flight
    /// gauge and /debug/keys report (DESIGN.md section 4).
    struct slot_totals {
        /// Slots held in all limiters, parked ones included.
        std::size_t in_flight = 0;
        /// Capacity of the limiters in use: `concurrency.capacity` plus each
        /// `routes[].concurrency` (a parked limiter is off, so adds none).
        std::size_t capacity = 0;
        /// Keys holding at least one slot in any limiter, each key once.
        std::size_t active_keys = 0;
        /// Requests waiting for a slot (concurrency.queue_timeout), all limiters.
        std::size_t queued = 0;
        /// The fullest limiter in use: its in_flight / capacity (0 when all
        /// are off). A full route or global limiter refuses while the
        /// summed ratio may look low.
        double saturation = 0;
    };
    slot_totals slots_held() const;
    /// The `n` keys holding the most slots over every limiter (a key's
    /// slots in several limiters added up), most first.
    std::vector<std::pair<std::string, std::size_t>> top_in_flight(std::size_t n) const;

    /// The route for a request: among routes whose `host` is empty or equals
    /// the request's host (port ignored), the one with the longest matching
    /// `path_prefix`; a host-specific route wins a tie. A prefix matches the
    /// path itself and anything below it (`/api` matches `/api`, `/api/x`,
    /// not `/apix`). Returns -1 when none matches.
    int match_route(std::string_view host, std::string_view path) const;
};

/// What build_runtime would fail on for `cfg`, every problem rather than
/// the first: the TLS listener's certificate and key (loaded and matched),
/// the CA file of `https://` upstreams, and every upstream host name
/// (resolved now, as at startup). For `--check-config`, so that a config it
/// passes also starts. Blocking; one resolution per distinct server.
std::vector<std::string> startup_problems(const config& cfg);

/// Builds a runtime: resolves upstream hosts, sets up keying and policies.
/// Slot limiters are taken over from `previous` by name, also ones it had
/// parked, with the new capacity (so slots held across a reload stay
/// counted, even across a reload that turned them off). Throws
/// std::runtime_error.
std::shared_ptr<const runtime> build_runtime(std::shared_ptr<const config> cfg,
                                             const runtime* previous = nullptr);

/// Thread-safe: every member may be used from any worker thread.
class gateway {
public:
    /// `time` drives rate buckets and queue deadlines (a manual clock in
    /// tests); null = the steady clock.
    gateway(std::shared_ptr<const runtime> initial, std::size_t workers,
            const limit::clock* time = nullptr);

    std::shared_ptr<const runtime> current() const { return runtime_.load(); }
    void swap(std::shared_ptr<const runtime> next) {
        runtime_.store(std::move(next));
        generation_.fetch_add(1, std::memory_order_release);
    }
    /// Changes with every swap(): a worker keeps its own copy of the
    /// runtime and reloads it only when this moved (worker::runtime_now).
    std::uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

    bool draining() const { return draining_.load(std::memory_order_acquire); }
    void start_draining() { draining_.store(true, std::memory_order_release); }

    /// Open client connections, all threads.
    std::atomic<std::size_t> client_connections{0};
    /// Open upstream connections, all threads.
    std::atomic<std::size_t> upstream_connections{0};

private:
    limit::steady_clock steady_clock_;

public:
    const limit::clock& clock;
    /// Buckets persist across reloads while their policy stays the same; the
    /// policy is part of a bucket's key, so a changed limit, window, burst
    /// or algorithm starts every key's bucket fresh (README says so).
    limit::rate_limiter limiter;
    admin::metrics metrics;
    /// Metrics and fallback state shared by the workers' Redis stores
    /// (inert in memory mode).
    store::redis_shared redis;
    /// Open tunnels per key (`websocket.max_per_key`, `max_tunnels`).
    limit::tunnel_limiter tunnels;
    /// Recently refused keys, for /debug/keys.
    admin::key_stats refused_keys{clock};

    /// Current values of every gauge, for a scrape.
    admin::gauge_values gauges() const;

private:
    std::atomic<std::shared_ptr<const runtime>> runtime_;
    std::atomic<bool> draining_{false};
    std::atomic<std::uint64_t> generation_{0};
};

}  // namespace tollgate::server
