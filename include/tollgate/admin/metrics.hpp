#pragma once
/// @file metrics.hpp
/// tollgate's Prometheus metrics. Hot-path counters and histograms live in
/// one shard per worker thread (relaxed atomics on their own cache lines),
/// so recording a request never contends with another thread; a scrape
/// merges the shards into prometheus-cpp MetricFamily values and serializes
/// them, together with the registry's cold metrics, with prometheus-cpp's
/// TextSerializer. Labels are bounded enums: never a key, token, IP or path.
///
/// Thread-safety: `shard(i)` is written by worker i only (any thread may
/// read); everything else may be called from any thread.

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/registry.h>

namespace tollgate::admin {

enum class decision_kind : std::uint8_t { allowed, limited, rejected, count_ };
enum class reason_kind : std::uint8_t {
    ok,                 ///< allowed and forwarded
    exempt,             ///< allowed, route exempt from limits
    dry_run,            ///< would have been limited; dry_run forwarded it
    rate,               ///< limited: rate bucket empty
    concurrency,        ///< limited: no completion slot
    bad_request,        ///< rejected: malformed request
    header_too_large,   ///< rejected: 431
    body_too_large,     ///< rejected: 413
    timeout,            ///< rejected: 408
    store_unavailable,  ///< rejected: Redis down with failure_mode closed
    tunnels,            ///< limited: the key (or everyone) holds the most tunnels allowed
    count_
};
enum class key_kind : std::uint8_t { org, tok, ip, none, count_ };
enum class upstream_error_kind : std::uint8_t {
    connect_refused,
    connect_timeout,
    response_timeout,
    reset,
    invalid_response,
    tls,  ///< the TLS handshake with an https:// upstream failed (verification, protocol)
    /// No connection of this worker's pool became free within connect_timeout
    /// (upstream.max_connections all busy): the upstream itself may be fine.
    pool_exhausted,
    count_
};

std::string_view to_string(decision_kind);
std::string_view to_string(reason_kind);
std::string_view to_string(key_kind);
std::string_view to_string(upstream_error_kind);

/// Fixed-bucket histogram with atomic buckets (seconds).
class atomic_histogram {
public:
    static constexpr std::array<double, 14> bounds{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                   0.25,  0.5,    1,     2.5,  5,     10,   30};
    void observe(double seconds) noexcept;
    /// Adds this histogram's counts into `buckets` (non-cumulative) and `sum`.
    void add_to(std::array<std::uint64_t, bounds.size() + 1>& buckets, double& sum) const noexcept;

private:
    std::array<std::atomic<std::uint64_t>, bounds.size() + 1> buckets_{};
    std::atomic<std::uint64_t> sum_micros_{0};
};

/// One worker's counters.
struct alignas(64) metrics_shard {
    std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(decision_kind::count_) *
                                               static_cast<std::size_t>(reason_kind::count_) *
                                               static_cast<std::size_t>(key_kind::count_)>
        requests{};
    std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(upstream_error_kind::count_)>
        upstream_errors{};
    std::array<std::atomic<std::uint64_t>, 6> responses_by_class{};  ///< 1xx..5xx, [0] unused
    std::atomic<std::uint64_t> tls_handshake_failures{};  ///< client handshakes on the TLS listener
    /// Connects to a server of a group that failed (refused, timed out, TLS
    /// handshake failed) and moved on to another server (the upstream pool
    /// counts them, given this through pool_settings).
    std::atomic<std::uint64_t> upstream_connect_failovers{};
    /// Client connections closed at accept: client.max_connections reached.
    std::atomic<std::uint64_t> connections_refused{};
    atomic_histogram upstream_duration;
    atomic_histogram request_duration;

    void request(decision_kind d, reason_kind r, key_kind k) noexcept {
        requests[index(d, r, k)].fetch_add(1, std::memory_order_relaxed);
    }
    void upstream_error(upstream_error_kind e) noexcept {
        upstream_errors[static_cast<std::size_t>(e)].fetch_add(1, std::memory_order_relaxed);
    }
    void connection_refused() noexcept {
        connections_refused.fetch_add(1, std::memory_order_relaxed);
    }
    void tls_handshake_failed() noexcept {
        tls_handshake_failures.fetch_add(1, std::memory_order_relaxed);
    }
    void response_status(unsigned status) noexcept {
        std::size_t c = status / 100;
        if (c >= 1 && c <= 5) {
            responses_by_class[c].fetch_add(1, std::memory_order_relaxed);
        }
    }
    static std::size_t index(decision_kind d, reason_kind r, key_kind k) noexcept {
        return (static_cast<std::size_t>(d) * static_cast<std::size_t>(reason_kind::count_) +
                static_cast<std::size_t>(r)) *
                   static_cast<std::size_t>(key_kind::count_) +
               static_cast<std::size_t>(k);
    }
};

/// Requests of one configured route by decision. Shared by all threads;
/// kept across reloads while a route of the same name exists.
struct route_counters {
    explicit route_counters(std::string route_name) : name(std::move(route_name)) {}
    const std::string name;
    std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(decision_kind::count_)>
        decisions{};
};

/// Slots of a route that has a `concurrency` of its own.
struct route_slot_values {
    std::string route;
    double in_flight = 0;
    double capacity = 0;
};

/// Values read at scrape time from the components that own them.
struct gauge_values {
    double inflight_slots = 0;
    double slots_queued = 0;
    double concurrency_capacity = 0;
    double slots_saturation = 0;
    double active_keys = 0;
    double ratelimit_keys = 0;
    double client_connections = 0;
    double upstream_connections = 0;
    double draining = 0;
    double tunnels_open = 0;
    double store_fallback = 0;
    std::uint64_t ratelimit_evictions = 0;  ///< monotonic total
    /// The current config's routes (`tollgate_route_requests_total`).
    std::vector<std::shared_ptr<const route_counters>> routes;
    /// The current config's routes with slots of their own, in config order.
    std::vector<route_slot_values> route_slots;
};

class metrics {
public:
    explicit metrics(std::size_t shards);

    metrics_shard& shard(std::size_t i) { return *shards_[i]; }
    prometheus::Registry& registry() { return *registry_; }

    /// `tollgate_config_reload_failures_total`.
    void reload_failed() { reload_failures_->Increment(); }
    double reload_failures() const { return reload_failures_->Value(); }

    /// Total of `tollgate_requests_total` for one decision (all shards); for tests.
    std::uint64_t requests(decision_kind d) const;
    std::uint64_t requests(decision_kind d, reason_kind r) const;

    /// Prometheus text format 0.0.4 of every tollgate metric.
    std::string serialize(const gauge_values& gauges) const;

private:
    std::vector<std::unique_ptr<metrics_shard>> shards_;
    std::shared_ptr<prometheus::Registry> registry_;
    prometheus::Counter* reload_failures_;
};

}  // namespace tollgate::admin
